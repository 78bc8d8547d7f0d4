"""Typed CRF settings: the training CRF of the DSRG loss (``segmenter.crf``) and the test-time
CRF (``eval.crf``, ``submit.crf``, ``retrain.pseudo.crf``), each a preset of
:data:`pipeline.crf.CRF_PRESETS` with optional parameter overrides."""
from __future__ import annotations

import dataclasses

from pipeline.crf import CRF_PRESETS, CRFParams
from pipeline.dsrg import CRF_BACKENDS

from .checks import Bool, Float, Int, OneOf
from .section import Section, key

__all__ = ["CRFOverrides", "TrainingCRF", "InferenceCRF", "START_METHODS"]

START_METHODS = OneOf("spawn", "fork", "forkserver")


@dataclasses.dataclass(frozen=True)
class CRFOverrides(Section):
    """A CRF ``preset`` (pipeline.crf.CRF_PRESETS) and optional overrides of its parameters
    (each None = the preset's value)."""
    preset: str = key(OneOf(*CRF_PRESETS))
    bi_w: float | None = key(Float(0), optional=True)
    bi_xy: float | None = key(Float(0, lo_open=True), optional=True)
    bi_rgb: float | None = key(Float(0, lo_open=True), optional=True)
    pos_w: float | None = key(Float(0), optional=True)
    pos_xy: float | None = key(Float(0, lo_open=True), optional=True)
    iterations: int | None = key(Int(0), optional=True)
    unary: str | None = key(OneOf("log", "prob"), optional=True)
    # spatial σ scaled by each image's longer side / reference_side (pipeline.crf; None = off)
    reference_side: float | None = key(Float(0, lo_open=True), optional=True)

    def overrides(self) -> dict:
        """The parameters set to override the preset."""
        names = ("bi_w", "bi_xy", "bi_rgb", "pos_w", "pos_xy", "iterations", "unary", "reference_side")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def params(self) -> CRFParams:
        """The preset with the overrides applied."""
        return CRFParams.preset(self.preset, **self.overrides())


@dataclasses.dataclass(frozen=True)
class TrainingCRF(CRFOverrides):
    """``segmenter.crf``: the CRF of the DSRG loss; ``workers`` processes (0 = in-process)."""
    workers: int = key(Int(0))
    start_method: str = key(START_METHODS)
    backend: str = key(OneOf(*CRF_BACKENDS))    # pydensecrf (CPU, pool) | torch (on the device)


@dataclasses.dataclass(frozen=True)
class InferenceCRF(CRFOverrides):
    """Test-time dense CRF (``eval.crf``, ``retrain.pseudo.crf``); ``workers >= 2`` runs a
    process pool over the images."""
    enabled: bool = key(Bool())
    workers: int = key(Int(0))

    def params_if_enabled(self) -> CRFParams | None:
        """:meth:`params` when ``enabled``, else None (no CRF)."""
        return self.params() if self.enabled else None
