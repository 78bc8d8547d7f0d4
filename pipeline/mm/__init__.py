"""OpenMMLab edge (optional): mmsegmentation registrations and models for the ``retrain`` stage.

Only :mod:`pipeline.mm.segmentation` imports mmseg / mmcv, and nothing in the core pipeline
imports it at module level: the core runs without mmcv and mmsegmentation installed. Callers
reach it through :func:`segmentation_edge`, which turns a missing install into one line naming
the command that builds the environment that has them. :func:`load_any_model` opens a model
file of either format: the project's own (:mod:`pipeline.runtime.checkpoint`) or an mmseg
segmentor written by the ``retrain`` stage.
"""
from __future__ import annotations

import importlib

from pipeline.runtime.checkpoint import MMSEG_FORMAT, model_from_payload, read_model_file

INSTALL_HINT = ("needs mmsegmentation and a compiled mmcv, which this environment lacks: "
                "`make env-mm` builds them in .venv-mm (`make retrain` then uses it; other targets "
                "with VENV=.venv-mm)")


class MMSegUnavailable(ImportError):
    """mmsegmentation / mmcv (or mmcv's compiled ops) cannot be imported."""


def segmentation_edge(what: str = "this step"):
    """The module :mod:`pipeline.mm.segmentation`, or :class:`MMSegUnavailable` saying that
    ``what`` needs the OpenMMLab environment and how to build it."""
    try:
        return importlib.import_module("pipeline.mm.segmentation")
    except ImportError as exc:
        raise MMSegUnavailable(f"{what} {INSTALL_HINT} [{type(exc).__name__}: {exc}]") from None


def load_any_model(path, kind: str | None = None, map_location="cpu", **overrides):
    """``(net, meta)`` of a model file: a ``wsss-model/1`` file as
    :func:`pipeline.runtime.checkpoint.load_model` loads it, or the retrain stage's
    ``wsss-mmseg-model/1`` (any mmseg segmentor, as a segmenter returning logits; needs the
    OpenMMLab environment, :class:`MMSegUnavailable` otherwise)."""
    payload = read_model_file(path, map_location)
    if isinstance(payload, dict) and payload.get("format") == MMSEG_FORMAT:
        if kind not in (None, "segmenter"):
            raise ValueError(f"{path}: holds an mmseg segmentor, expected a {kind}")
        return segmentation_edge(f"{path} (an mmseg segmentor)").mmseg_from_payload(payload)
    return model_from_payload(payload, path, kind, **overrides)
