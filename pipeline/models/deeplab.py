"""DeepLab v2 (DeepLab-ASPP) with a VGG-16 backbone, as used by DSRG (docs/ALGORITHMS.md §4).

Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
Convolution, and Fully Connected CRFs", TPAMI 2017 (ASPP-L); layer list of DSRG's
``train-s.prototxt``:

* conv1_x..conv3_x (3×3, pad 1, ReLU) each followed by a 3×3 stride-2 pad-1 max pool (Caffe
  rounds pooled sizes up: ``ceil_mode=True``, so 321 → 161 → 81 → 41); conv4_x then a 3×3
  stride-1 pad-1 max pool; conv5_x with dilation 2 (pad 2); pool5 3×3/1/1 max, then a 3×3/1/1
  average pool (padding counted, as Caffe's AVE pooling).
* ASPP: for each rate r ∈ (6, 12, 18, 24): fc6 3×3 dilation r (pad r) → ReLU → dropout 0.5 →
  fc7 1×1 → ReLU → dropout 0.5 → fc8 1×1 (num_classes); logits = Σ_branches fc8.
  Output stride 8: a 321×321 input gives 41×41 logits.

Initialisation (:meth:`load_imagenet`), as DSRG's start from DeepLab's "VGG16 20M" model: the
13 convolutions from ImageNet VGG-16 and, in every ASPP branch, fc6 / fc7 decimated from
ImageNet's fc6 / fc7 (:func:`pipeline.models.imagenet.decimated_fc`); without ImageNet weights
(or when the file has no fc layers) fc6/fc7 are Kaiming-normal (fan-in), zero bias; fc8 weights
N(0, 0.01²), zero bias as in the prototxt.

Learning-rate / weight-decay multipliers of the prototxt (:meth:`param_groups`): every weight
lr×1 decay×1, every bias lr×2 decay×0 (backbone, fc6, fc7), fc8 weights lr×10 decay×1, fc8
biases lr×20 decay×0; BatchNorm affine parameters (``batch_norm=True`` only) lr×1 decay×0.

For small from-scratch CPU runs: ``width`` scales every channel count (max(8, round(c·width)),
fc6/fc7 included) and ``batch_norm`` inserts BatchNorm after every backbone convolution.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .aspp import ASPPBranch
from .imagenet import InitReport, load_vgg16_into, resolve_vgg16_weights

__all__ = ["DeepLabV2VGG16", "build_segmenter", "SEGMENTER_KEYS"]

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _ch(c: int, width: float) -> int:
    return max(8, int(round(c * width)))


class DeepLabV2VGG16(nn.Module):
    """DeepLab v2 VGG-16 ASPP (module docstring). ``forward(x) -> (B, num_classes, h, w)``."""

    def __init__(self, num_classes: int, fc_channels: int = 1024,
                 rates: tuple[int, ...] = (6, 12, 18, 24), width: float = 1.0,
                 batch_norm: bool = False, dropout: float = 0.5):
        super().__init__()
        self.num_classes, self.width, self.batch_norm = num_classes, float(width), batch_norm
        layers: list[nn.Module] = []
        self.convs: list[nn.Conv2d] = []
        cin = 3
        for s, stage in enumerate(VGG16_STAGES):
            dil = 2 if s == 4 else 1
            for c in stage:
                conv = nn.Conv2d(cin, _ch(c, width), 3, padding=dil, dilation=dil)
                self.convs.append(conv)
                layers.append(conv)
                if batch_norm:
                    layers.append(nn.BatchNorm2d(conv.out_channels))
                layers.append(nn.ReLU(inplace=True))
                cin = conv.out_channels
            if s < 3:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True))
            else:                                        # pool4, pool5
                layers.append(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True))
        layers.append(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True))
        self.features = nn.Sequential(*layers)
        fc = _ch(fc_channels, width)
        self.rates = tuple(int(r) for r in rates)
        self.init_report: InitReport | None = None
        self.aspp = nn.ModuleList(ASPPBranch(cin, fc, num_classes, r, dropout)
                                  for r in self.rates)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for br in self.aspp:
            nn.init.normal_(br.fc8.weight, std=0.01)
            nn.init.zeros_(br.fc8.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        out = self.aspp[0](f)
        for br in self.aspp[1:]:
            out = out + br(f)
        return out

    @staticmethod
    def output_size(size: int) -> int:
        """Logit size for an input side ``size`` (three ceil-mode stride-2 pools)."""
        for _ in range(3):
            size = math.ceil((size + 2 - 3) / 2) + 1
        return size

    def load_imagenet(self, spec) -> InitReport | None:
        """Copy ImageNet VGG-16 (``spec`` as for ``resolve_vgg16_weights``: None → nothing,
        "torchvision" → torchvision's cache, else a file): the 13 convolutions, and into every
        ASPP branch fc6 / fc7 decimated from ``classifier.0`` / ``classifier.3``
        (:func:`pipeline.models.imagenet.decimated_fc`, DeepLab's "VGG16 20M" init) where the file
        has them and ``fc_channels`` allows it. Returns the report (kept as ``self.init_report``)."""
        if resolve_vgg16_weights(spec) is None:
            return None
        if self.width != 1.0 or self.batch_norm:
            raise ValueError(
                f"ImageNet VGG-16 weights need width=1 and batch_norm=False (got width="
                f"{self.width}, batch_norm={self.batch_norm}); set pretrained=None to train "
                "the reduced / batch-norm network from scratch")
        fc = [(f"aspp.{i}.", br.fc6, br.fc7) for i, br in enumerate(self.aspp)]
        new = {f"aspp.{i}.fc8": "classes of this dataset" for i in range(len(self.aspp))}
        self.init_report = load_vgg16_into(spec, self.convs, fc, new)
        return self.init_report

    def param_groups(self, base_lr: float, weight_decay: float | None = None) -> list[dict]:
        """Optimizer groups with DeepLab's prototxt multipliers (module docstring).

        Each group: ``{"name", "params", "lr" = base_lr·lr_mult, "lr_mult", "decay_mult"}`` plus
        ``"weight_decay" = weight_decay·decay_mult`` when ``weight_decay`` is given. Every
        trainable parameter appears in exactly one group; empty groups are left out.
        """
        fc8 = {id(p) for br in self.aspp for p in br.fc8.parameters()}
        norm = {id(p) for m in self.modules() if isinstance(m, nn.BatchNorm2d)
                for p in m.parameters()}
        spec = {"weight": (1.0, 1.0), "bias": (2.0, 0.0), "norm": (1.0, 0.0),
                "fc8_weight": (10.0, 1.0), "fc8_bias": (20.0, 0.0)}
        buckets: dict[str, list] = {k: [] for k in spec}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            kind = "bias" if name.endswith("bias") else "weight"
            if id(p) in norm:
                key = "norm"
            elif id(p) in fc8:
                key = f"fc8_{kind}"
            else:
                key = kind
            buckets[key].append(p)
        groups = []
        for key, params in buckets.items():
            if not params:
                continue
            lr_mult, decay_mult = spec[key]
            g = {"name": key, "params": params, "lr": base_lr * lr_mult, "lr_mult": lr_mult,
                 "decay_mult": decay_mult}
            if weight_decay is not None:
                g["weight_decay"] = weight_decay * decay_mult
            groups.append(g)
        return groups


# model_cfg keys of build_segmenter (besides "type" and "pretrained"): DeepLabV2VGG16 arguments
SEGMENTER_KEYS = ("fc_channels", "rates", "width", "batch_norm", "dropout", "backbone", "reduce")


def build_segmenter(model_cfg: dict | None, num_classes: int) -> DeepLabV2VGG16:
    """Build a :class:`DeepLabV2VGG16` (``num_classes`` = C, background included) from a plain
    dict ``{type="DeepLabV2VGG16", fc_channels, rates, width, batch_norm, dropout, pretrained}``
    (with ``backbone=dict(type="efficientnet_lite0", frozen_blocks, head)``, or ``_lite1`` /
    ``_lite2``: the same head on EfficientNet-Lite, :class:`pipeline.models.deeplab_lite.DeepLabV2Lite`);
    loads the ImageNet VGG-16 convolutions when ``pretrained`` is set (None / "torchvision" /
    a file, as :func:`pipeline.models.imagenet.resolve_vgg16_weights`)."""
    cfg = dict(model_cfg or {})
    kind = cfg.pop("type", "DeepLabV2VGG16")
    if kind != "DeepLabV2VGG16":
        raise ValueError(f"segmenter model type must be 'DeepLabV2VGG16', got {kind!r}")
    pretrained = cfg.pop("pretrained", None)
    unknown = sorted(set(cfg) - set(SEGMENTER_KEYS))
    if unknown:
        raise ValueError(f"unknown segmenter model keys {unknown}; known {list(SEGMENTER_KEYS)} "
                         "+ type, pretrained")
    if "rates" in cfg:
        cfg["rates"] = tuple(int(r) for r in cfg["rates"])
    trunk = dict(cfg.pop("backbone", None) or {})
    if trunk.get("type", "vgg16") != "vgg16":
        from .deeplab_lite import DeepLabV2Lite
        from .lite_weights import variant_of
        net = DeepLabV2Lite(int(num_classes), fc_channels=cfg.get("fc_channels", 1024),
                            rates=cfg.get("rates", (6, 12, 18, 24)), dropout=cfg.get("dropout", 0.5),
                            frozen_blocks=trunk.get("frozen_blocks", 0), head=trunk.get("head", False),
                            taps=tuple(trunk.get("taps", ())), reduce=int(cfg.get("reduce", 0)),
                            variant=variant_of(trunk["type"]))
        net.load_imagenet(pretrained)
        return net
    if cfg.pop("reduce", 0):
        raise ValueError("segmenter model key reduce is an EfficientNet setting: VGG-16 takes 0")
    net = DeepLabV2VGG16(int(num_classes), **cfg)
    net.load_imagenet(pretrained)
    return net
