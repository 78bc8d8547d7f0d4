"""mmsegmentation registrations: DeepLab v2 VGG-16 (docs/ALGORITHMS.md §4) and a DSRG segmentor
(docs/ALGORITHMS.md §5).

Importing this module only registers classes into ``mmseg.registry.MODELS`` (no default scope,
no ``register_all_modules``). After ``import pipeline.mm.segmentation`` an mmseg config can use

* ``dict(type="DeepLabV2VGG16", num_classes=21, width=1.0, batch_norm=False, fc_channels=1024,
  rates=(6, 12, 18, 24), dropout=0.5, pretrained="torchvision")`` — the whole network (backbone +
  ASPP, logits at output stride 8), the same class and weights as
  :func:`pipeline.models.deeplab.build_segmenter` (so a segmenter ``model.pth`` loads into it);
* ``dict(type="EncoderDecoder", backbone=dict(type="DeepLabV2VGG16Backbone", ...),
  decode_head=dict(type="ASPPV2Head", in_channels=512, channels=1024, num_classes=21, ...))`` —
  the same network split the mmseg way (VGG-16 trunk + summed ASPP-L branches), trained by
  mmseg's decode-head cross-entropy;
* ``dict(type="DSRGSegmentor", net=dict(type="DeepLabV2VGG16", ...), loss="dsrg", dsrg=...,
  crf=...)`` — an mmseg segmentor trained with :func:`pipeline.dsrg.dsrg_losses` (seeds in
  ``gt_sem_seg``, 255 = unlabelled) or ``loss="ce"``; ``predict`` gives ``pred_sem_seg``.

The pipeline's own ``segmenter`` stage trains the plain network through
:mod:`pipeline.training` with the same loss functions. In an mmseg config,
``custom_imports = dict(imports=["pipeline.mm.segmentation"])`` registers them.

:func:`build_mmseg_model`, :func:`for_training`, :func:`mmseg_losses`, :class:`MMSegLogits` and
the ``wsss-mmseg-model/1`` files (:func:`save_mmseg_model` / :func:`load_mmseg_model`) let the
``retrain`` stage train any mmseg segmentor config through :mod:`pipeline.training`. This
module needs mmsegmentation and mmcv (``make env-mm``); reach it through
:func:`pipeline.mm.segmentation_edge`.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from mmengine.model import BaseModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import nn

from pipeline.io_utils import atomic_file
from pipeline.models.checkpoint import MMSEG_FORMAT
from pipeline.dsrg import DSRGConfig, ce_loss, dsrg_losses
from pipeline.settings.crf import TrainingCRF
from pipeline.settings.segmenter import DSRGSettings
from pipeline.models.deeplab import DeepLabV2VGG16 as _DeepLabV2VGG16
from pipeline.models.deeplab import _ASPPBranch

__all__ = ["DeepLabV2VGG16", "DeepLabV2VGG16Backbone", "ASPPV2Head", "DSRGSegmentor",
           "build_mmseg_model", "for_training", "mmseg_losses", "MMSegLogits", "save_mmseg_model", "load_mmseg_model",
           "mmseg_from_payload"]


@MODELS.register_module(name="DeepLabV2VGG16")
class DeepLabV2VGG16(_DeepLabV2VGG16):
    """:class:`pipeline.models.deeplab.DeepLabV2VGG16` + ``pretrained`` (ImageNet VGG-16 convs:
    None, "torchvision" or a file). ``forward(x) -> (B, num_classes, h, w)`` logits."""

    def __init__(self, num_classes: int, pretrained=None, **kwargs):
        if "rates" in kwargs:
            kwargs["rates"] = tuple(int(r) for r in kwargs["rates"])
        super().__init__(int(num_classes), **kwargs)
        self.load_imagenet(pretrained)


@MODELS.register_module()
class DeepLabV2VGG16Backbone(BaseModule):
    """DeepLab v2 VGG-16 trunk (conv1-conv5, pool4/pool5 stride 1, dilated conv5, 3×3 average
    pool; output stride 8). ``forward(x) -> (features,)`` with ``out_channels`` channels."""

    def __init__(self, width: float = 1.0, batch_norm: bool = False, pretrained=None, init_cfg=None):
        super().__init__(init_cfg)
        full = _DeepLabV2VGG16(1, fc_channels=8, width=width, batch_norm=batch_norm)
        full.load_imagenet(pretrained)
        self.features = full.features
        self.out_channels = full.aspp[0].fc6.in_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.features(x),)


@MODELS.register_module()
class ASPPV2Head(BaseDecodeHead):
    """DeepLab v2 ASPP-L head: Σ over rates of fc6 (3×3, dilation r) → ReLU → dropout → fc7 (1×1)
    → ReLU → dropout → fc8 (1×1, num_classes). ``channels`` = fc6/fc7 width (1024)."""

    def __init__(self, rates=(6, 12, 18, 24), branch_dropout: float = 0.5, **kwargs):
        kwargs.setdefault("init_cfg", None)
        kwargs["dropout_ratio"] = 0.0                  # dropout lives inside the branches
        super().__init__(**kwargs)
        del self.conv_seg                              # every branch has its own fc8
        self.rates = tuple(int(r) for r in rates)
        self.aspp = nn.ModuleList(_ASPPBranch(self.in_channels, self.channels, self.out_channels, r,
                                              branch_dropout) for r in self.rates)
        for br in self.aspp:
            for conv in (br.fc6, br.fc7):
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
            nn.init.normal_(br.fc8.weight, std=0.01)
            nn.init.zeros_(br.fc8.bias)

    def forward(self, inputs):
        x = self._transform_inputs(inputs)
        out = self.aspp[0](x)
        for br in self.aspp[1:]:
            out = out + br(x)
        return out


@MODELS.register_module()
class DSRGSegmentor(BaseSegmentor):
    """mmseg segmentor around a logits network (``net``, any registered model returning
    (B,C,h,w) logits), trained with DSRG (:func:`pipeline.dsrg.dsrg_losses`) or cross-entropy.

    Training data: ``gt_sem_seg`` holds the seed map (255 = unlabelled); the image classes are
    ``metainfo["img_classes"]`` (dataset indices ≥ 1) when present, else the classes occurring
    in the seed map. The uint8 image for the CRF is recovered from the normalised input with
    the data preprocessor's mean/std. ``dsrg`` / ``crf``: the ``segmenter.dsrg`` /
    ``segmenter.crf`` config sections, every key set (pipeline.settings checks them);
    ``crf.workers > 0`` opens a CRF process pool on first use.
    """

    def __init__(self, net: dict, loss: str = "dsrg", dsrg: dict | None = None,
                 crf: dict | None = None, ce_resolution: str = "input",
                 data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if loss not in ("dsrg", "ce"):
            raise ValueError(f"loss must be 'dsrg' or 'ce', got {loss!r}")
        self.net = MODELS.build(net)
        self.loss_type, self.ce_resolution = loss, ce_resolution
        crf = TrainingCRF.from_dict(dict(crf or {}), "crf")
        self.dsrg_cfg = DSRGConfig(**DSRGSettings.from_dict(dict(dsrg or {}), "dsrg").fields_dict(),
                                   crf=crf.params(), crf_backend=crf.backend)
        self.crf_workers = crf.workers
        self._crf_pool = None
        self.align_corners = False

    def extract_feat(self, inputs):
        return self.net(inputs)

    def encode_decode(self, inputs, batch_data_samples=None):
        return resize(self.net(inputs), size=inputs.shape[2:], mode="bilinear", align_corners=False)

    def _forward(self, inputs, data_samples=None):
        return self.net(inputs)

    def _raw_images(self, inputs: torch.Tensor) -> torch.Tensor:
        dp = self.data_preprocessor
        x = inputs.detach().float()
        if getattr(dp, "_enable_normalize", False):
            x = x * dp.std.to(x) + dp.mean.to(x)
        return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)

    def loss(self, inputs, data_samples) -> dict:
        logits = self.net(inputs)
        labels = torch.stack([s.gt_sem_seg.data for s in data_samples]).squeeze(1).long()
        if self.loss_type == "ce":
            return {"loss_ce": ce_loss(logits, labels, self.ce_resolution)}
        C = logits.shape[1]
        classes = torch.zeros(len(data_samples), C, dtype=torch.bool, device=logits.device)
        classes[:, 0] = True
        for i, s in enumerate(data_samples):
            present = s.metainfo.get("img_classes")
            if present is None:
                present = [int(v) for v in labels[i].unique().tolist() if 0 < v < C]
            classes[i, [int(c) for c in present]] = True
        pooled = self.crf_workers > 0 and self.dsrg_cfg.crf_backend == "pydensecrf"
        if pooled and self._crf_pool is None:
            from pipeline.crf_pool import make_crf_pool
            self._crf_pool = make_crf_pool(self.crf_workers)
        return dsrg_losses(logits, labels, classes, self._raw_images(inputs), self.dsrg_cfg,
                           self._crf_pool)

    def predict(self, inputs, data_samples=None):
        return self.postprocess_result(self.encode_decode(inputs, data_samples), data_samples)

    def __getstate__(self):                           # a process pool cannot be pickled
        state = self.__dict__.copy()
        state["_crf_pool"] = None
        return state


def build_mmseg_model(model_cfg: dict, num_classes: int | None = None, init_weights: bool = True):
    """Build an mmseg segmentor from a config dict (mmseg scope). ``num_classes`` overrides the
    ``num_classes`` of ``decode_head`` / ``auxiliary_head`` (dicts or lists of dicts)."""
    from mmengine.registry import DefaultScope

    import mmseg.models  # noqa: F401  (registers mmseg's models)

    cfg = copy.deepcopy(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg))
    if num_classes is not None:
        for key in ("decode_head", "auxiliary_head"):
            heads = cfg.get(key)
            for h in (heads if isinstance(heads, list) else [heads] if heads else []):
                h["num_classes"] = int(num_classes)
    with DefaultScope.overwrite_default_scope("mmseg"):
        model = MODELS.build(cfg)
        if init_weights:
            model.init_weights()
    return model


def for_training(model, distributed: bool):
    """The model as the training loop should see it: SyncBN (mmseg's default) reverted to
    BatchNorm unless training is distributed on CUDA (SyncBN needs both)."""
    from mmengine.model import revert_sync_batchnorm

    if distributed and torch.cuda.is_available():
        return model
    return revert_sync_batchnorm(model)


def mmseg_losses(model, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """The segmentor's own training losses (decode / auxiliary heads, e.g. cross-entropy with 255
    ignored) on normalised ``images`` (B,3,H,W) and label maps ``labels`` (B,H,W)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    H, W = images.shape[-2:]
    samples = []
    for lab in labels:
        s = SegDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        s.gt_sem_seg = PixelData(data=lab[None].long())
        samples.append(s)
    return model.loss(images, samples)


class MMSegLogits(nn.Module):
    """``forward(x) -> logits`` of an mmseg segmentor (its decode head, ``mode="tensor"``) on
    normalised images, as :mod:`pipeline.inference` expects, resized to the input size the way
    mmseg trains them (bilinear, the decode head's ``align_corners``): ``output_stride = 1``
    tells :mod:`pipeline.inference` the map is already on the input's pixels."""
    output_stride = 1

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x, mode="tensor")
        head = getattr(self.model, "decode_head", None)
        return resize(logits, size=x.shape[2:], mode="bilinear",
                      align_corners=bool(getattr(head, "align_corners", False)))


def save_mmseg_model(path, model, model_cfg: dict, num_classes: int, classes) -> None:
    """``{"format": "wsss-mmseg-model/1", "model_cfg", "num_classes", "classes", "state_dict"}``."""
    from pipeline.guards import check_model_finite
    from pipeline.models.checkpoint import diverged_fix
    from pipeline.stage import _plain

    path = Path(path)
    payload = {"format": MMSEG_FORMAT, "kind": "mmseg", "model_cfg": _plain(model_cfg),
               "num_classes": int(num_classes), "classes": list(classes),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    check_model_finite(payload["state_dict"], f"the trained model ({path})", diverged_fix("retrain"))
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def load_mmseg_model(path, map_location="cpu"):
    """Rebuild a :func:`save_mmseg_model` file for inference (SyncBN → BN); returns
    ``(MMSegLogits(model), meta)``."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != MMSEG_FORMAT:
        raise ValueError(f"{path}: not a {MMSEG_FORMAT} model file")
    return mmseg_from_payload(payload)


def mmseg_from_payload(payload: dict):
    """:func:`load_mmseg_model` of an already loaded file's dict."""
    from mmengine.model import revert_sync_batchnorm

    model = build_mmseg_model(payload["model_cfg"], payload["num_classes"], init_weights=False)
    model.load_state_dict(payload["state_dict"])
    model = revert_sync_batchnorm(model)          # inference without a process group
    return MMSegLogits(model), {k: v for k, v in payload.items() if k != "state_dict"}
