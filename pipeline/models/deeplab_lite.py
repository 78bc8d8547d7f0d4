"""DeepLab v2 (DeepLab-ASPP) on an EfficientNet-Lite trunk (``segmenter.model.backbone.type=
'efficientnet_lite0'``, ``'efficientnet_lite1'`` or ``'efficientnet_lite2'``).

The ASPP-L head of :mod:`pipeline.models.deeplab` (Chen et al., TPAMI 2017; per rate r: fc6 3×3
dilation r → ReLU → dropout → fc7 1×1 → ReLU → dropout → fc8 1×1, logits summed over the
branches) on the output-stride-8 map of :class:`~pipeline.models.efficientnet_lite.EfficientNetLite`
(the last block: 320 channels in Lite0 / Lite1, 352 in Lite2; or the 1280-channel head conv with
``head=True``), so the output grid, the DSRG loss and every upsampling are those of DeepLab-ASPP
VGG-16 (cell i on input pixel 8i).
The trunk starts from ImageNet (``pretrained``: 'package' or a file); fc6 / fc7 are
Kaiming-normal (fan-in), fc8 N(0, 0.01²), zero biases, as the VGG-16 network without fc weights.

``reduce = r > 0``: a 1×1 convolution (+ReLU) from the trunk's channels to ``r`` before the ASPP
branches, so that wide frozen features (``backbone.taps``, e.g. 1,712 channels) feed four 3×3
branches at a fraction of their cost (DeepLab v3's 1×1 projections, Chen et al. 2017, play the
same role); 0 = the branches read the trunk directly, as DeepLab v2.
"""
from __future__ import annotations

import torch
from torch import nn

from .aspp import ASPPBranch
from .efficientnet_lite import EfficientNetLite
from .imagenet import InitReport

__all__ = ["DeepLabV2Lite"]


class DeepLabV2Lite(nn.Module):
    """``forward(x, from_trunk=False) -> (B, num_classes, h, w)``; ``from_trunk=True``: ``x`` is the
    frozen trunk's output (:meth:`trunk`, cached training). ``variant``: EfficientNet-Lite 0, 1 or 2."""

    output_stride = 8

    def __init__(self, num_classes: int, fc_channels: int = 1024,
                 rates: tuple[int, ...] = (6, 12, 18, 24), dropout: float = 0.5,
                 frozen_blocks: int = 0, head: bool = False, taps: tuple = (),
                 reduce: int = 0, variant: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = EfficientNetLite(variant, frozen_blocks=frozen_blocks, head=head, taps=taps)
        self.rates = tuple(int(r) for r in rates)
        width = self.backbone.out_channels
        self.reduce = None
        if reduce:
            self.reduce = nn.Sequential(nn.Conv2d(width, int(reduce), 1), nn.ReLU(inplace=True))
            width = int(reduce)
        self.aspp = nn.ModuleList(ASPPBranch(width, fc_channels, num_classes, r, dropout)
                                  for r in self.rates)
        for m in [*self.aspp.modules(), *(self.reduce.modules() if self.reduce else ())]:
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
        if self.reduce is not None:
            f = self.reduce(f)
        out = self.aspp[0](f)
        for br in self.aspp[1:]:
            out = out + br(f)
        return out

    output_size = staticmethod(EfficientNetLite.output_size)

    def load_imagenet(self, spec) -> InitReport | None:
        """The trunk's ImageNet EfficientNet-Lite weights; the ASPP branches stay new."""
        report = self.backbone.load_imagenet(spec)
        if report is not None:
            report.new.update({f"aspp.{i}": "not in the ImageNet network" for i in range(len(self.aspp))})
            if self.reduce is not None:
                report.new["reduce"] = "not in the ImageNet network"
        return report
