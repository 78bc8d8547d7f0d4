"""Typed ``eval``, ``submit`` and ``localize`` sections (configs/_base_/eval_submit.py,
configs/_base_/localize.py), and the test-time inference settings they resolve to."""
from __future__ import annotations

import dataclasses

from pipeline.inference import InferenceSettings

from .checks import AnyOf, Bool, Float, Int, Nullable, OneOf, Size
from .classifier import POOLING
from .crf import InferenceCRF
from .cues import IMAGE_SIZE, SCALES
from .section import Partial, Section, Sub, key
from .train import SPLIT

__all__ = ["EvalSettings", "SubmitSettings", "LocalizeSettings", "Inference", "MODEL_STAGES",
           "inference_settings"]

MODEL_STAGES = ("segmenter", "retrain")
# base size of test-time inference: n (square), (h, w), or None / "original" = each image's own
INFERENCE_SIZE = AnyOf(OneOf(None, "original"), Size())


def _own_size(size):
    return None if size == "original" else size


@dataclasses.dataclass(frozen=True)
class Inference:
    """Resolved test-time inference: network settings, CRF (None = off), CRF pool size and the
    number of images per streamed chunk (None = the inference's default)."""
    settings: InferenceSettings
    crf: object
    workers: int
    chunk: int | None = None


def inference_settings(size, scales, flip, batch_size, amp) -> InferenceSettings:
    """pipeline.inference settings from checked values (size None / 'original' = own size)."""
    return InferenceSettings(size=_own_size(size), scales=tuple(scales), flip=flip,
                             batch_size=batch_size, amp=amp)


@dataclasses.dataclass(frozen=True)
class EvalSettings(Section):
    split: str = key(SPLIT)
    size: int | tuple | str | None = key(INFERENCE_SIZE)
    scales: tuple = key(SCALES)
    flip: bool = key(Bool())
    batch_size: int = key(Int(1))
    amp: bool = key(Bool())
    crf: InferenceCRF = key(Sub(InferenceCRF))
    n_overlays: int = key(Int(0))
    save_predictions: bool = key(Bool())
    save_no_crf: bool = key(Bool())
    model: str = key(OneOf(*MODEL_STAGES))          # the trained model to score
    chunk: int | None = key(Int(1), optional=True)  # images per streamed chunk; None = default

    def inference(self) -> Inference:
        return Inference(inference_settings(self.size, self.scales, self.flip, self.batch_size,
                                            self.amp),
                         self.crf.params_if_enabled(), self.crf.workers, self.chunk)


@dataclasses.dataclass(frozen=True)
class SubmitSettings(Section):
    """Test-split predictions; the inference keys left None take ``eval``'s values, ``crf``
    holds only the CRF keys that differ from ``eval.crf``."""
    split: str = key(SPLIT)
    comp: str = key(OneOf("comp5", "comp6"))
    size: int | tuple | str | None = key(Nullable(INFERENCE_SIZE))
    scales: tuple | None = key(Nullable(SCALES))
    flip: bool | None = key(Nullable(Bool()))
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
        pick = {k: ev.__dict__[k] if getattr(self, k) is None else getattr(self, k)
                for k in ("size", "scales", "flip", "batch_size", "amp")}
        crf = ev.crf.replace(**self.crf)
        return Inference(inference_settings(**pick), crf.params_if_enabled(), crf.workers,
                         self.chunk or ev.chunk)


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
