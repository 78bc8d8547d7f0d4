"""DeepLab v2 (DeepLab-ASPP) on the EfficientNet-Lite0 trunk (``segmenter.model.backbone.type=
'efficientnet_lite0'``).

The ASPP-L head of :mod:`pipeline.models.deeplab` (Chen et al., TPAMI 2017; per rate r: fc6 3×3
dilation r → ReLU → dropout → fc7 1×1 → ReLU → dropout → fc8 1×1, logits summed over the
branches) on the output-stride-8 map of :class:`~pipeline.models.efficientnet_lite.EfficientNetLite0`
(the 320-channel last block, or the 1280-channel head conv with ``head=True``), so the output grid,
the DSRG loss and every upsampling are those of DeepLab-ASPP VGG-16 (cell i on input pixel 8i).
The trunk starts from ImageNet (``pretrained``: 'package' or a file); fc6 / fc7 are
Kaiming-normal (fan-in), fc8 N(0, 0.01²), zero biases, as the VGG-16 network without fc weights.
"""
from __future__ import annotations

import torch
from torch import nn

from .aspp import ASPPBranch
from .efficientnet_lite import EfficientNetLite0
from .imagenet import InitReport

__all__ = ["DeepLabV2Lite0"]


class DeepLabV2Lite0(nn.Module):
    """``forward(x, from_trunk=False) -> (B, num_classes, h, w)``; ``from_trunk=True``: ``x`` is the
    frozen trunk's output (:meth:`trunk`, cached training)."""

    output_stride = 8

    def __init__(self, num_classes: int, fc_channels: int = 1024,
                 rates: tuple[int, ...] = (6, 12, 18, 24), dropout: float = 0.5,
                 frozen_blocks: int = 0, head: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = EfficientNetLite0(frozen_blocks=frozen_blocks, head=head)
        self.rates = tuple(int(r) for r in rates)
        self.aspp = nn.ModuleList(ASPPBranch(self.backbone.out_channels, fc_channels, num_classes,
                                              r, dropout) for r in self.rates)
        for m in self.aspp.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for br in self.aspp:
            nn.init.normal_(br.fc8.weight, std=0.01)

    @property
    def init_report(self) -> InitReport | None:
        return self.backbone.init_report

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.trunk(x)

    def forward(self, x: torch.Tensor, from_trunk: bool = False) -> torch.Tensor:
        f, _ = self.backbone(x, from_trunk=from_trunk)
        out = self.aspp[0](f)
        for br in self.aspp[1:]:
            out = out + br(f)
        return out

    output_size = staticmethod(EfficientNetLite0.output_size)

    def load_imagenet(self, spec) -> InitReport | None:
        """ImageNet EfficientNet-Lite0 into the trunk; the ASPP branches stay new."""
        report = self.backbone.load_imagenet(spec)
        if report is not None:
            report.new.update({f"aspp.{i}": "not in the ImageNet network" for i in range(len(self.aspp))})
        return report
