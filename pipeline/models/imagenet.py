"""ImageNet VGG-16 weights in torchvision's layout, from a local file or torchvision's cache.

torchvision's ``vgg16`` keeps its 13 convolutions in ``features`` at indices
0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28 (``features.<i>.weight`` / ``.bias``).
Both the classifier backbone and DeepLab copy these 13 tensors pairs in order.

Its fully connected fc6 (``classifier.0``, 4096×25088 = 4096×512×7×7) and fc7
(``classifier.3``, 4096×4096) become the convolutional fc6 (3×3, F filters) and fc7 (1×1, F
filters) of the fully convolutional networks by decimation, as DeepLab's "VGG16 20M" model
(Chen et al., ICLR 2015 §4.1 / TPAMI 2017 §4.1: "subsample (by decimation) the first FC layer
from 7×7 to 3×3 spatial size" and 4096 → 1024 channels), which DSRG starts from:

    fc6[f, c, i, j] = W6[s·f, c, 3·i, 3·j]   (W6 viewed as 4096×512×7×7; taps 0, 3, 6)
    fc7[f, g]       = W7[s·f, s·g]           biases b6[s·f], b7[s·f]

with ``s = 4096 / F`` (4 for DeepLab's F = 1024), starting at index 0 (docs/ALGORITHMS.md §4).
The released caffemodel does not document its sampling offsets; these are the plain decimation
the papers describe.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_CONV_NAMES = (
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3",
)
FC_FULL = 4096                       # ImageNet fc6 / fc7 width
FC6_KEY, FC7_KEY = "classifier.0", "classifier.3"
FC6_TAPS = (0, 3, 6)                 # of the 7×7 fc6 kernel: a 3×3 kernel
# File name of torchvision's VGG16_Weights.IMAGENET1K_V1 in the hub cache.
TORCHVISION_VGG16_FILE = "vgg16-397923af.pth"


def torchvision_cache_path() -> Path:
    """Where torchvision keeps ``VGG16_Weights.IMAGENET1K_V1`` once downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_VGG16_FILE


def resolve_vgg16_weights(spec: str | os.PathLike | None) -> Path | None:
    """Turn a config value into a weight file path.

    ``None`` -> no weights (train from scratch); ``"torchvision"`` -> torchvision's cache;
    anything else -> a local file. A missing file raises ``FileNotFoundError`` saying where
    to put it.
    """
    if spec is None or spec == "none":
        return None
    path = torchvision_cache_path() if str(spec) == "torchvision" else Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet VGG-16 weights not found at {path}. Put torchvision's "
            f"VGG16_Weights.IMAGENET1K_V1 file ({TORCHVISION_VGG16_FILE}) there, e.g. on a machine "
            "with internet: python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\" "
            f"and copy it from {torchvision_cache_path()}; or set the config's `pretrained` to a local "
            "file path, or to None to train from scratch.")
    return path


def load_vgg16_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load and check a torchvision-layout VGG-16 state dict (the 13 conv layers must be there)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error becomes a clear message
        raise ValueError(f"{path}: not a readable torch state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    missing = [f"features.{i}.{p}" for i in VGG16_CONV_INDICES for p in ("weight", "bias")
               if f"features.{i}.{p}" not in state]
    if missing:
        raise ValueError(f"{path}: not a torchvision VGG-16 state dict; missing keys {missing[:4]}"
                         f"{' ...' if len(missing) > 4 else ''}")
    return state


def copy_vgg16_convs(convs: list[nn.Conv2d], state: dict[str, torch.Tensor],
                     source: str = "state dict") -> list[str]:
    """Copy the 13 VGG-16 conv weights/biases, in order, into ``convs``; return the keys copied.

    Raises ``ValueError`` naming the layer when a shape differs (e.g. a width multiplier < 1).
    """
    if len(convs) != len(VGG16_CONV_INDICES):
        raise ValueError(f"expected 13 conv layers, got {len(convs)}")
    copied = []
    with torch.no_grad():
        for conv, idx, name in zip(convs, VGG16_CONV_INDICES, VGG16_CONV_NAMES):
            for part in ("weight", "bias"):
                key = f"features.{idx}.{part}"
                src, dst = state[key], getattr(conv, part)
                if dst is None or tuple(src.shape) != tuple(dst.shape):
                    got = None if dst is None else tuple(dst.shape)
                    raise ValueError(f"{source}: {key} ({name}) has shape {tuple(src.shape)}, "
                                     f"the network expects {got}")
                dst.copy_(src)
                copied.append(key)
    return copied


@dataclasses.dataclass
class InitReport:
    """What an ImageNet initialisation did: ``keys`` (torchvision keys read), ``loaded``
    (network layers set from the file), ``new`` (layer → why it keeps its random init)."""
    source: str
    keys: list = dataclasses.field(default_factory=list)
    loaded: list = dataclasses.field(default_factory=list)
    new: dict = dataclasses.field(default_factory=dict)
    network: str = "VGG-16"

    def describe(self) -> str:
        """One log line: the layers from the file and the new ones with their reasons."""
        new = "; ".join(f"{name} ({why})" for name, why in self.new.items()) or "none"
        return (f"ImageNet {self.network} from {self.source}: {len(self.loaded)} layers from the file "
                f"({', '.join(self.loaded)}); new (random) layers: {new}")


def decimated_fc(state: dict[str, torch.Tensor], fc6_shape, fc7_shape) -> tuple[dict, str | None]:
    """fc6 / fc7 conv tensors decimated from ``classifier.0`` / ``classifier.3`` (module doc).

    ``fc6_shape = (F, 512, 3, 3)`` and ``fc7_shape = (F, F, 1, 1)``: the target conv weights.
    Returns ``({"fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"}, None)``, or ``({}, reason)``
    when the file has no fc layers or the shapes do not allow the decimation.
    """
    names = [f"{k}.{p}" for k in (FC6_KEY, FC7_KEY) for p in ("weight", "bias")]
    if any(n not in state for n in names):
        return {}, f"the file has no {FC6_KEY}/{FC7_KEY} (torchvision fc6/fc7)"
    w6, b6, w7, b7 = (state[n] for n in names)
    F, cin, kh, kw = (int(v) for v in fc6_shape)
    if tuple(w6.shape) != (FC_FULL, 512 * 49) or tuple(w7.shape) != (FC_FULL, FC_FULL):
        return {}, f"{FC6_KEY}/{FC7_KEY} shapes {tuple(w6.shape)}/{tuple(w7.shape)} are not VGG-16's"
    if (cin, kh, kw) != (512, 3, 3) or F < 1 or FC_FULL % F or tuple(fc7_shape) != (F, F, 1, 1):
        return {}, (f"fc6 {tuple(fc6_shape)} / fc7 {tuple(fc7_shape)} cannot be decimated from "
                    f"4096x512x7x7 / 4096x4096 (needs 512 input channels, a 3x3 kernel and a "
                    f"filter count dividing 4096)")
    step = FC_FULL // F
    taps = torch.tensor(FC6_TAPS)
    fc6 = w6.reshape(FC_FULL, 512, 7, 7)[::step][:, :, taps][:, :, :, taps]
    out = {"fc6.weight": fc6.contiguous(), "fc6.bias": b6[::step].contiguous(),
           "fc7.weight": w7[::step, ::step].reshape(F, F, 1, 1).contiguous(),
           "fc7.bias": b7[::step].contiguous()}
    return out, None


def copy_decimated_fc(report: InitReport, layers: list[tuple[str, nn.Conv2d, nn.Conv2d]],
                      state: dict[str, torch.Tensor]) -> None:
    """Set every ``(name, fc6, fc7)`` pair from :func:`decimated_fc` (each ASPP branch gets the
    same tensors) and record in ``report`` what was loaded and what stays new."""
    for name, fc6, fc7 in layers:
        tensors, reason = decimated_fc(state, fc6.weight.shape, fc7.weight.shape)
        if reason is not None:
            report.new[f"{name}fc6"] = report.new[f"{name}fc7"] = reason
            continue
        with torch.no_grad():
            for conv, key in ((fc6, "fc6"), (fc7, "fc7")):
                conv.weight.copy_(tensors[f"{key}.weight"])
                conv.bias.copy_(tensors[f"{key}.bias"])
        report.loaded += [f"{name}fc6", f"{name}fc7"]
        for key in (FC6_KEY, FC7_KEY):
            for part in ("weight", "bias"):
                if f"{key}.{part}" not in report.keys:
                    report.keys.append(f"{key}.{part}")


def load_vgg16_into(spec, convs: list[nn.Conv2d], fc_layers,
                    new_layers: dict[str, str]) -> InitReport | None:
    """Load ImageNet VGG-16 (``spec`` as :func:`resolve_vgg16_weights`) into 13 ``convs`` and the
    decimated fc6/fc7 of ``fc_layers`` (``(name prefix, fc6, fc7)`` tuples); ``new_layers``
    (name → reason) are recorded as new. Returns the :class:`InitReport`, None for no ``spec``."""
    path = resolve_vgg16_weights(spec)
    if path is None:
        return None
    state = load_vgg16_state_dict(path)
    report = InitReport(source=str(path))
    report.keys = copy_vgg16_convs(convs, state, source=str(path))
    report.loaded = list(VGG16_CONV_NAMES)
    copy_decimated_fc(report, fc_layers, state)
    report.new.update(new_layers)
    return report
