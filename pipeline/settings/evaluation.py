"""Typed ``eval``, ``submit`` and ``localize`` sections (configs/_base_/eval_submit.py,
configs/_base_/localize.py), and the test-time inference settings they resolve to."""
from __future__ import annotations

import dataclasses

from pipeline.inference_settings import (FUSIONS, PROTOCOLS, InferenceSettings,
                                         merge_inference_cfg)

from .checks import AnyOf, Bool, Float, Int, Nullable, OneOf, Size, TupleOf
from .classifier import POOLING
from .crf import InferenceCRF
from .cues import IMAGE_SIZE, SCALES
from .section import Partial, Section, Sub, key
from .train import SPLIT

__all__ = ["EvalSettings", "SubmitSettings", "LocalizeSettings", "Inference", "MODEL_STAGES",
           "PASS_KEYS"]

MODEL_STAGES = ("segmenter", "retrain")
# the keys of a test protocol's passes (pipeline.inference_settings: None = the protocol's value)
PROTOCOL = Nullable(OneOf(*PROTOCOLS))
# base size of test-time inference: n (square), (h, w), or None / "original" = each image's own
INFERENCE_SIZE = AnyOf(OneOf(None, "original"), Size())
SIZES = Nullable(TupleOf(Int(1), min_len=1))      # fixed square sides, one pass each
FUSION = Nullable(OneOf(*FUSIONS))
PASS_KEYS = ("protocol", "size", "scales", "sizes", "flip", "fusion")


@dataclasses.dataclass(frozen=True)
class Inference:
    """Resolved test-time inference: network settings, CRF (None = off), CRF pool size and the
    number of images per streamed chunk (None = the inference's default)."""
    settings: InferenceSettings
    crf: object
    workers: int
    chunk: int | None = None


@dataclasses.dataclass(frozen=True)
class PassSettings(Section):
    """A test ``protocol`` (pipeline.inference_settings.PROTOCOLS, or None) and the pass keys
    (``size``, ``scales``, ``sizes``, ``flip``, ``fusion``) that override it when not None."""
    protocol: str | None = key(PROTOCOL)
    size: int | tuple | str | None = key(INFERENCE_SIZE)
    scales: tuple | None = key(Nullable(SCALES))
    sizes: tuple | None = key(SIZES)
    flip: bool | None = key(Nullable(Bool()))
    fusion: str | None = key(FUSION)


@dataclasses.dataclass(frozen=True)
class EvalSettings(PassSettings):
    """Scoring on ``split`` with the test passes (a key None = the protocol's value; without a
    protocol: own size, scale 1, flip, mean), the CRF and the outputs."""
    split: str = key(SPLIT)
    batch_size: int = key(Int(1))
    amp: bool = key(Bool())
    crf: InferenceCRF = key(Sub(InferenceCRF))
    n_overlays: int = key(Int(0))
    save_predictions: bool = key(Bool())
    save_no_crf: bool = key(Bool())
    model: str = key(OneOf(*MODEL_STAGES))          # the trained model to score
    chunk: int | None = key(Int(1), optional=True)  # images per streamed chunk; None = default

    def inference(self) -> Inference:
        return Inference(InferenceSettings.from_cfg(self), self.crf.params_if_enabled(),
                         self.crf.workers, self.chunk)


@dataclasses.dataclass(frozen=True)
class SubmitSettings(PassSettings):
    """Test-split predictions; the inference keys left None take ``eval``'s values, ``crf``
    holds only the CRF keys that differ from ``eval.crf``."""
    split: str = key(SPLIT)
    comp: str = key(OneOf("comp5", "comp6"))
    batch_size: int | None = key(Nullable(Int(1)))
    amp: bool | None = key(Nullable(Bool()))
    crf: dict = key(Partial(InferenceCRF))
    model: str | None = key(OneOf(*MODEL_STAGES), optional=True)   # None = eval.model
    chunk: int | None = key(Int(1), optional=True)                 # None = eval.chunk

    def model_stage(self, ev: EvalSettings) -> str:
        return self.model or ev.model

    def inference(self, ev: EvalSettings) -> Inference:
        """Eval's inference with this section's non-None keys on top (size 'original' = each
        image's own size even when eval uses a fixed one)."""
        crf = ev.crf.replace(**self.crf)
        return Inference(InferenceSettings.from_cfg(merge_inference_cfg(ev, self)),
                         crf.params_if_enabled(), crf.workers, self.chunk or ev.chunk)


@dataclasses.dataclass(frozen=True)
class LocalizeSettings(Section):
    split: str = key(SPLIT)
    mass: float = key(Float(0, 1, lo_open=True))
    topk: int = key(Int(1))
    use_image_classes: bool = key(Bool())
    cam_threshold: float = key(Float(0, 1))
    iou_threshold: float = key(Float(0, 1, lo_open=True))
    size: int | tuple | None = key(IMAGE_SIZE)
    scales: tuple = key(SCALES)
    flip: bool = key(Bool())
    pooling: str | None = key(Nullable(POOLING))     # None = the trained pooling
    max_images: int | None = key(Nullable(Int(1)))   # None = every image of the split
    n_overlays: int = key(Int(0))
