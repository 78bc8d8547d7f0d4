"""OpenMMLab edge (optional): mmsegmentation registrations and models for the ``retrain`` stage.

Only :mod:`pipeline.mm.segmentation` imports mmseg / mmcv, and nothing in the core pipeline
imports it at module level: the core runs without mmcv and mmsegmentation installed. Callers
reach it through :func:`segmentation_edge`, which turns a missing install into one line naming
the command that builds the environment that has them.
"""
from __future__ import annotations

import importlib

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
