"""Self-describing model files shared between stages.

``model.pth`` = ``{"format": "wsss-model/1", "kind": "classifier" | "segmenter",
"model_cfg": dict, "num_classes": int, "classes": [names], "state_dict": ...}``; the
builder is looked up by ``kind`` so a later stage rebuilds the network without the
training stage's config. ``num_classes`` is K foreground classes for a classifier and
C (background included) for a segmenter. The retrain stage's ``wsss-mmseg-model/1`` files
(any mmseg segmentor) are opened by :func:`pipeline.mm.load_any_model`, which reads the file
with :func:`read_model_file` and hands the project's own formats to :func:`model_from_payload`.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from pipeline.data.io_utils import plain_data, write_stream_atomic
from pipeline.models.classifier import build_classifier
from pipeline.models.deeplab import build_segmenter
from pipeline.runtime.guards import check_model_finite

FORMAT = "wsss-model/1"
MMSEG_FORMAT = "wsss-mmseg-model/1"     # pipeline.mm.segmentation (retrain stage)
# Files hold tensors and plain Python values only: read with torch.load(weights_only=True).


BUILDERS = {"classifier": build_classifier, "segmenter": build_segmenter}


def diverged_fix(section: str) -> str:
    """How to fix a training stage whose network became non-finite."""
    return (f"the training diverged: lower {section}.train.optimizer.lr or set {section}.train.amp=False, "
            f"then re-run `make {section}` (no model file was written)")


def save_model(path: str | os.PathLike, net: nn.Module, kind: str, model_cfg: dict,
               num_classes: int, classes: list[str], section: str | None = None) -> None:
    """Write the model file atomically (temporary file, then rename) — only when every weight
    and buffer is finite (:class:`pipeline.runtime.guards.NonFiniteError` otherwise); ``section``, the
    training stage's config section, goes into that message."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    check_model_finite(state, f"the trained {kind} ({path})", diverged_fix(section or kind))
    payload = {"format": FORMAT, "kind": kind, "model_cfg": plain_data(model_cfg),
               "num_classes": int(num_classes), "classes": list(classes), "state_dict": state}
    write_stream_atomic(path, lambda fh: torch.save(payload, fh))      # a full disk: OSError


def read_model_file(path: str | os.PathLike, map_location="cpu") -> dict:
    """The dict of a model file (tensors and plain values only: ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found (did the training stage finish?)")
    return torch.load(path, map_location=map_location, weights_only=True)


def model_from_payload(payload, path, kind: str | None = None, **overrides) -> tuple[nn.Module, dict]:
    """Rebuild the network of a read ``wsss-model/1`` file (``path`` names it in errors);
    returns ``(net, meta)`` (meta = the file minus weights)."""
    if isinstance(payload, dict) and payload.get("format") == MMSEG_FORMAT:
        raise ValueError(f"{path}: holds an mmseg segmentor: open it with pipeline.mm.load_any_model")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} model file")
    if kind is not None and payload["kind"] != kind:
        raise ValueError(f"{path}: holds a {payload['kind']}, expected a {kind}")
    cfg = {**payload["model_cfg"], "pretrained": None, **overrides}
    net = BUILDERS[payload["kind"]](cfg, payload["num_classes"])
    net.load_state_dict(payload["state_dict"])
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return net, meta


def load_model(path: str | os.PathLike, kind: str | None = None, map_location="cpu",
               **overrides) -> tuple[nn.Module, dict]:
    """Rebuild and load a ``wsss-model/1`` file; returns ``(net, meta)`` (meta = the file minus
    weights).

    ``overrides`` update the stored ``model_cfg`` before building (e.g. ``pretrained=None``,
    which is always applied: weights come from the file).
    """
    return model_from_payload(read_model_file(path, map_location), path, kind, **overrides)


def load_segmenter(path, map_location="cpu", **overrides):
    """Load a segmenter ``model.pth`` (:mod:`pipeline.runtime.checkpoint`); returns ``(net, meta)``."""
    return load_model(path, "segmenter", map_location=map_location, **overrides)
