"""VGG-16 backbone in the fully convolutional form of the SEC / DSRG cue (classification) network.

Layout (docs/ALGORITHMS.md §4 for the VGG-16 trunk; output stride 8, 321x321 -> 41x41):

    conv1 (2 convs, 64)  -> pool1 3x3 s2 p1 max (ceil)      321 -> 161
    conv2 (2 convs, 128) -> pool2 3x3 s2 p1 max (ceil)      161 -> 81
    conv3 (3 convs, 256) -> pool3 3x3 s2 p1 max (ceil)       81 -> 41
    conv4 (3 convs, 512) -> pool4 3x3 s1 p1 max
    conv5 (3 convs, 512, dilation 2) -> pool5 3x3 s1 p1 max
    fc6 3x3 conv 1024 (dilation ``fc6_dilation``) ReLU dropout -> fc7 1x1 conv 1024 ReLU dropout

All convs are 3x3 with "same" padding and ReLU. Options:

* ``width``: channel multiplier, ``channels = max(8, round(c · width))`` (same topology).
* ``batch_norm``: BatchNorm after every conv, fc6 and fc7 included (for from-scratch runs).
* ``sge_after``: conv blocks ('conv1'..'conv5') followed by Spatial Group-wise Enhance.
* ``lip_pools``: pools ('pool1'..'pool5') replaced by Local Importance-based Pooling with the
  same stride.
* ``bew_before``: subset of ('pool4', 'pool5'): a BEW layer on the conv4_3 / conv5_3 output
  (after SGE, if any) right before that pool (EP paper §4.1); needs ``num_classes``.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from .bew import BranchedEntropyWeighting
from .imagenet import InitReport, load_vgg16_into
from .lip import LocalImportancePooling
from .sge import SpatialGroupEnhance

# (block name, output channels of each conv, dilation, following pool's stride)
VGG16_BLOCKS = (
    ("conv1", (64, 64), 1, 2),
    ("conv2", (128, 128), 1, 2),
    ("conv3", (256, 256, 256), 1, 2),
    ("conv4", (512, 512, 512), 1, 1),
    ("conv5", (512, 512, 512), 2, 1),
)
BLOCK_NAMES = tuple(name for name, *_ in VGG16_BLOCKS)
POOL_NAMES = tuple(f"pool{i}" for i in range(1, 6))
BEW_POSITIONS = ("pool4", "pool5")
FC_CHANNELS = 1024


def scaled_channels(channels: int, width: float) -> int:
    """``max(8, round(channels · width))``."""
    return max(8, int(round(channels * width)))


def _check_subset(name: str, values, allowed) -> tuple[str, ...]:
    values = tuple(values or ())
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"{name}: unknown entries {unknown}; allowed {list(allowed)}")
    return values


def _conv_unit(in_ch: int, out_ch: int, kernel: int, dilation: int, batch_norm: bool) -> nn.Sequential:
    """conv (same padding) [+ BN] + ReLU; the conv is always element 0."""
    padding = dilation * (kernel // 2)
    layers = [nn.Conv2d(in_ch, out_ch, kernel, padding=padding, dilation=dilation)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class VGG16Backbone(nn.Module):
    """Fully convolutional VGG-16 (SEC/DSRG cue network trunk + fc6/fc7). See module docstring.

    ``forward(x)`` returns ``(features, bew_outputs)``: the fc7 map (B, out_channels, H/8, W/8)
    and one dict per BEW layer, in depth order, with ``logits`` (B, K), ``cam`` and ``lam``.
    """

    def __init__(self, width: float = 1.0, batch_norm: bool = False, dropout: float = 0.5,
                 fc6_dilation: int = 1, sge_after=(), sge_groups: int = 32, lip_pools=(),
                 bew_before=(), num_classes: int | None = None, bew_detach_lambda: bool = False) -> None:
        super().__init__()
        self.width = width
        self.batch_norm = batch_norm
        sge_after = _check_subset("sge_after", sge_after, BLOCK_NAMES)
        lip_pools = _check_subset("lip_pools", lip_pools, POOL_NAMES)
        bew_before = _check_subset("bew_before", bew_before, BEW_POSITIONS)
        if bew_before and num_classes is None:
            raise ValueError("bew_before needs num_classes (the BEW branch classifies)")

        self.blocks = nn.ModuleDict()
        self.sge = nn.ModuleDict()
        self.bew = nn.ModuleDict()
        self.pools = nn.ModuleDict()
        in_ch = 3
        for index, (name, channels, dilation, stride) in enumerate(VGG16_BLOCKS):
            units = []
            for c in channels:
                out_ch = scaled_channels(c, width)
                units.append(_conv_unit(in_ch, out_ch, 3, dilation, batch_norm))
                in_ch = out_ch
            self.blocks[name] = nn.Sequential(*units)
            if name in sge_after:
                self.sge[name] = SpatialGroupEnhance(in_ch, groups=sge_groups)
            pool = POOL_NAMES[index]
            if pool in bew_before:
                self.bew[pool] = BranchedEntropyWeighting(in_ch, num_classes,
                                                          detach_lambda=bew_detach_lambda)
            if pool in lip_pools:
                self.pools[pool] = LocalImportancePooling(in_ch, stride=stride)
            else:
                self.pools[pool] = nn.MaxPool2d(3, stride=stride, padding=1, ceil_mode=True)

        fc_ch = scaled_channels(FC_CHANNELS, width)
        self.fc6 = _conv_unit(in_ch, fc_ch, 3, fc6_dilation, batch_norm)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = _conv_unit(fc_ch, fc_ch, 1, 1, batch_norm)
        self.drop7 = nn.Dropout(dropout)
        self.out_channels = fc_ch
        self.init_report: InitReport | None = None
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming-normal (fan_out, ReLU) convs with zero bias; BN weight 1, bias 0.

        Only the trunk convs, fc6 and fc7: SGE, LIP and BEW keep their own initialisation.
        """
        for unit in [u for block in self.blocks.values() for u in block] + [self.fc6, self.fc7]:
            nn.init.kaiming_normal_(unit[0].weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(unit[0].bias)
            if self.batch_norm:
                nn.init.ones_(unit[1].weight)
                nn.init.zeros_(unit[1].bias)

    def conv_layers(self) -> list[nn.Conv2d]:
        """The 13 VGG-16 convs, conv1_1 .. conv5_3, in order (fc6/fc7 excluded)."""
        return [unit[0] for block in self.blocks.values() for unit in block]

    def load_imagenet(self, spec: str | os.PathLike | None) -> InitReport | None:
        """Copy ImageNet VGG-16 (see ``imagenet.resolve_vgg16_weights`` for ``spec``): the 13
        convs, and fc6 / fc7 decimated from torchvision's ``classifier.0`` / ``classifier.3``
        (:func:`pipeline.models.imagenet.decimated_fc`) where the file has them and the shapes
        allow it (else they keep their random init, said in the report).

        Returns the :class:`~pipeline.models.imagenet.InitReport` (also kept as
        ``self.init_report``), or None for ``spec=None``. Raises ``ValueError`` for width != 1 or
        batch_norm (the conv weights would not fit / were not trained with BN),
        ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it is
        not a VGG-16 state dict.
        """
        if spec is None or spec == "none":
            return None
        if self.width != 1 or self.batch_norm:
            raise ValueError(f"ImageNet VGG-16 weights need width=1 and batch_norm=False "
                             f"(got width={self.width}, batch_norm={self.batch_norm}); "
                             "set pretrained=None to train this variant from scratch")
        extra = {f"sge.{k}": "not in VGG-16" for k in self.sge}
        extra.update({f"bew.{k}": "not in VGG-16" for k in self.bew})
        extra.update({f"lip.{k}": "not in VGG-16" for k in self.pools
                      if not isinstance(self.pools[k], nn.MaxPool2d)})
        self.init_report = load_vgg16_into(spec, self.conv_layers(),
                                           [("", self.fc6[0], self.fc7[0])], extra)
        return self.init_report

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        bew_outputs = []
        for name, pool_name in zip(BLOCK_NAMES, POOL_NAMES):
            x = self.blocks[name](x)
            if name in self.sge:
                x = self.sge[name](x)
            if pool_name in self.bew:
                x, branch = self.bew[pool_name](x)
                bew_outputs.append(branch)
            x = self.pools[pool_name](x)
        x = self.drop6(self.fc6(x))
        x = self.drop7(self.fc7(x))
        return x, bew_outputs
