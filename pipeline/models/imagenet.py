"""ImageNet VGG-16 weights in torchvision's layout, from a local file or torchvision's cache.

torchvision's ``vgg16`` keeps its 13 convolutions in ``features`` at indices
0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28 (``features.<i>.weight`` / ``.bias``).
Both the classifier backbone and DeepLab copy these 13 tensors pairs in order.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_CONV_NAMES = (
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3",
)
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
