"""Multi-label image classifier for WSSS cues: a backbone (VGG-16, or EfficientNet-Lite0/1/2 with
``backbone.type='efficientnet_lite0'`` / ``_lite1`` / ``_lite2``: pipeline/models/backbones.py)
+ 1x1 classifier + pooling head.

``build_classifier(model_cfg, num_classes)`` with ``num_classes = K`` foreground classes
(output channel k = dataset class k + 1, docs/DESIGN.md) and a plain dict ``model_cfg``::

    dict(backbone=dict(width=1.0, batch_norm=False, dropout=0.5, fc6_dilation=1,
                       sge_after=(), sge_groups=32, lip_pools=(), bew_before=()),
         pooling=dict(type='ep', detach_lambda=False, tau=0.4),
         classifier_bias=True,      # bias b of the 1x1 classifier (cam = Wᵀ v + b)
         pretrained=None,           # None | 'torchvision' | path to a VGG-16 state dict
         bew_loss_weight=0.5)       # weight of each BEW branch loss

BEW layers use the pooling's ``detach_lambda`` unless ``backbone.bew_detach_lambda`` is given.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone
from .pooling import build_pooling

LOSS_TYPES = ("multilabel_soft_margin", "bce", "raw_logit")
DEFAULT_POOLING = {"type": "ep", "detach_lambda": False, "tau": 0.4}


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor,
                    loss_type: str = "multilabel_soft_margin") -> torch.Tensor:
    """Image-level loss on (B, K) logits against multi-hot targets (B, K).

    * ``multilabel_soft_margin``: mean over batch and classes of
      ``-[y log σ(F) + (1-y) log(1-σ(F))]`` (the SEC/DSRG cue network loss,
      docs/ALGORITHMS.md §10);
    * ``bce``: ``binary_cross_entropy_with_logits`` with mean reduction (same value; kept as a
      separate name for configs);
    * ``raw_logit``: RIB's fine-tuning loss "without the last activation" (Lee et al. NeurIPS
      2021; docs/ALGORITHMS.md §8.2):
      ``-(1/B) Σ_b Σ_k y_bk F_bk / max(1, Σ_k y_bk)`` — raise the raw logits of present
      classes, averaged over the image's classes so images with many labels do not dominate.
    """
    targets = targets.to(device=logits.device, dtype=logits.dtype)
    if loss_type == "multilabel_soft_margin":
        return F.multilabel_soft_margin_loss(logits, targets)
    if loss_type == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets)
    if loss_type == "raw_logit":
        per_image = (targets * logits).sum(dim=1) / targets.sum(dim=1).clamp(min=1)
        return -per_image.mean()
    raise ValueError(f"unknown loss_type {loss_type!r}; choose from {LOSS_TYPES}")


class WSSSClassifier(nn.Module):
    """Backbone + 1x1 conv classifier (fc8) + a parameter-free pooling head.

    ``forward(images, labels=None)`` returns ``dict(features=(B, C, h, w) (the trunk's output the
    classifier reads), logits=(B, K), cam=(B, K, h, w),
    lam=(B, h, w), aux_logits=[(B, K) per BEW branch, in depth order], aux_lam=[the branches'
    λ maps (B, h_l, w_l)])``; ``labels`` (B, K)
    multi-hot is only used by the ``gndrp`` head during training.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, pooling: dict | str = "ep",
                 classifier_bias: bool = True, bew_loss_weight: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, kernel_size=1,
                                    bias=classifier_bias)
        nn.init.normal_(self.classifier.weight, std=0.01)
        if classifier_bias:
            nn.init.zeros_(self.classifier.bias)
        self.pooling_cfg = {"type": pooling} if isinstance(pooling, str) else dict(pooling)
        self.pooling = build_pooling(self.pooling_cfg)
        self.bew_loss_weight = bew_loss_weight

    @property
    def pooling_name(self) -> str:
        return self.pooling.name

    def set_pooling(self, name: str, **options) -> None:
        """Swap only the pooling rule (e.g. "EP inference" on a GAP-trained model).

        The heads hold no parameters, so the ``state_dict`` is unchanged. ``options``
        (``detach_lambda``, ``tau``) override the ones the model was built with.
        """
        self.pooling_cfg = {**self.pooling_cfg, **options, "type": name}
        self.pooling = build_pooling(self.pooling_cfg)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                from_trunk: bool = False) -> dict:
        """``from_trunk=True``: ``images`` are the frozen trunk's output (cached training)."""
        features, bew_outputs = (self.backbone(images, from_trunk=True) if from_trunk
                                 else self.backbone(images))
        out = self.pooling(features, self.classifier, labels)
        out["features"] = features
        out["aux_logits"] = [branch["logits"] for branch in bew_outputs]
        out["aux_lam"] = [branch["lam"] for branch in bew_outputs]
        return out

    def classification_loss(self, out: dict, targets: torch.Tensor,
                            loss_type: str = "multilabel_soft_margin",
                            bew_loss_weight: float | None = None) -> tuple[torch.Tensor, dict]:
        """``total = L(logits) + w · Σ_branches L(branch logits)``, L = ``multilabel_loss``.

        ``w`` defaults to the model's ``bew_loss_weight``. Returns ``(total, parts)`` with
        ``parts = {"cls": ..., "bew_0": ..., ..., "total": ...}`` as detached scalar tensors.
        """
        weight = self.bew_loss_weight if bew_loss_weight is None else bew_loss_weight
        main = multilabel_loss(out["logits"], targets, loss_type)
        total = main
        parts = {"cls": main.detach()}
        for index, aux in enumerate(out.get("aux_logits", [])):
            branch = multilabel_loss(aux, targets, loss_type)
            parts[f"bew_{index}"] = branch.detach()
            total = total + weight * branch
        parts["total"] = total.detach()
        return total, parts


def build_classifier(model_cfg: dict, num_classes: int) -> WSSSClassifier:
    """Build a ``WSSSClassifier`` from a plain dict (see module docstring); loads ImageNet
    VGG-16 (13 convs + decimated fc6/fc7) when ``model_cfg['pretrained']`` is set; what came from
    the file is in ``model.backbone.init_report``. The stage passes the checked
    ``classifier.model`` section; the fall-backs for absent keys read ``model.pth`` files that
    predate those keys (and the keys pipeline.settings.KEYS_ADDED_LATER leaves out at these
    values)."""
    cfg = dict(model_cfg or {})
    known = {"backbone", "pooling", "classifier_bias", "pretrained", "bew_loss_weight"}
    unknown = sorted(set(cfg) - known - {"type"})
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; known {sorted(known)}")
    pooling = cfg.get("pooling") or dict(DEFAULT_POOLING)
    pooling = {"type": pooling} if isinstance(pooling, str) else {**DEFAULT_POOLING, **pooling}
    backbone_cfg = dict(cfg.get("backbone") or {})
    if backbone_cfg.get("type", "vgg16") == "vgg16":
        backbone_cfg.setdefault("bew_detach_lambda", bool(pooling.get("detach_lambda", False)))
    backbone = build_backbone(backbone_cfg, num_classes, cfg.get("pretrained"))
    report = backbone.init_report
    if report is not None:
        report.new["classifier"] = "classes of this dataset"
    return WSSSClassifier(backbone, num_classes, pooling=pooling,
                          classifier_bias=cfg.get("classifier_bias", True),
                          bew_loss_weight=cfg.get("bew_loss_weight", 0.5))


def classifier_loss_fn(loss_type: str, from_trunk: bool = False):
    """``loss_fn(net, batch)`` of the classifier for :mod:`pipeline.runtime.training` (batch:
    :class:`pipeline.data.datasets.ClassificationDataset` items): the multi-label loss
    ``loss_type`` of :meth:`WSSSClassifier.classification_loss` (docs/ALGORITHMS.md §1).
    ``from_trunk``: the batches hold cached trunk features (``train.cache_trunk``)."""
    extra = {"from_trunk": True} if from_trunk else {}

    def loss_fn(net, batch):
        out = net(batch["image"], labels=batch["target"], **extra)
        total, parts = net.classification_loss(out, batch["target"], loss_type=loss_type)
        # only "loss" is optimised; the parts are logged under names without "loss" in them
        # (the training loop sums every key that contains "loss")
        return {"loss": total, **{f"part_{k}": v for k, v in parts.items() if k != "total"}}
    return loss_fn
