"""Typed ``segmenter``, ``upper_bound`` and ``retrain`` sections
(configs/_base_/segmenter_dsrg_vgg16.py, configs/_base_/retrain_mmseg.py)."""
from __future__ import annotations

import dataclasses

from pipeline.dsrg import DSRGConfig
from pipeline.inference_settings import InferenceSettings

from .checks import Bool, Float, FreeDict, Int, Nullable, OneOf, Size, TupleOf
from .classifier import PRETRAINED, TrunkSettings, check_pretrained, check_trunk_cache, reject_vgg_keys
from .crf import InferenceCRF, TrainingCRF
from .cues import SCALES
from .evaluation import FUSION, INFERENCE_SIZE, PROTOCOL, SIZES, Inference
from .section import Partial, Section, Sub, key
from .train import SPLIT, SegmenterTrain, TrainSettings

OWN_MODEL = "DeepLabV2VGG16"                     # the project's segmenter (retrain.model.type)
RETRAIN_INITS = ("segmenter", "pretrained")      # its start in the second round

__all__ = ["OWN_MODEL", "RETRAIN_INITS", "SegmenterModel", "DSRGSettings", "CESettings", "ClassBalance", "QuickVal", "SegmenterSettings",
           "UpperBoundSettings", "PseudoLabelSettings", "RetrainSettings"]

@dataclasses.dataclass(frozen=True)
class SegmenterModel(Section):
    """DeepLab v2 (ASPP-L) (pipeline.models.deeplab): ``type`` names the project's network,
    ``backbone`` its trunk (VGG-16, or EfficientNet-Lite0 / -Lite1 / -Lite2: ``width`` 1,
    ``batch_norm`` False)."""
    type: str = key(OneOf(OWN_MODEL))
    backbone: TrunkSettings = key(Sub(TrunkSettings))
    fc_channels: int = key(Int(1))
    reduce: int = key(Int(0))
    rates: tuple = key(TupleOf(Int(1), min_len=1))
    dropout: float = key(Float(0, 1, hi_open=True))
    width: float = key(Float(0, lo_open=True))
    batch_norm: bool = key(Bool())
    pretrained: str | None = key(PRETRAINED)

    def check(self) -> None:
        if self.backbone.type != "vgg16":
            reject_vgg_keys(self, self.backbone.type, width=1.0, batch_norm=False)
        elif self.reduce:
            raise self.fail("reduce", f"={self.reduce} is an EfficientNet setting (a 1x1 "
                                      "projection of its trunk): VGG-16 takes 0")
        check_pretrained(self.path, self.backbone, self.pretrained)


@dataclasses.dataclass(frozen=True)
class DSRGSettings(Section):
    """DSRG growing thresholds, what it grows on, loss weights, the boundary-loss clip
    (None = no clip, as SEC) and the warm-up iterations trained on the seeds before growing
    starts (``grow_start``, 0 = DSRG)."""
    fg_threshold: float = key(Float(0, 1))
    bg_threshold: float = key(Float(0, 1))
    grow_on: str = key(OneOf("crf", "probs"))
    seed_weight: float = key(Float(0))
    boundary_weight: float = key(Float(0))
    boundary_clip: tuple | None = key(Nullable(TupleOf(Float(0, lo_open=True), length=2)))
    grow_start: int = key(Int(0))

    def check(self) -> None:
        if self.boundary_clip is not None and self.boundary_clip[0] >= self.boundary_clip[1]:
            raise self.fail("boundary_clip", f"={self.boundary_clip} must be (low, high) with low < high")


@dataclasses.dataclass(frozen=True)
class CESettings(Section):
    resolution: str = key(OneOf("input", "output"))   # loss on upsampled logits | at the grid


@dataclasses.dataclass(frozen=True)
class ClassBalance(Section):
    """Per-class loss weights from the training labels' pixel counts
    (pipeline.losses.class_balance_weights): ``w_c = min((n_max / n_c)^power, max_weight)``;
    ``power`` 0 = unweighted (DSRG, DeepLab)."""
    power: float = key(Float(0))
    max_weight: float = key(Float(1))


@dataclasses.dataclass(frozen=True)
class QuickVal(Section):
    """Single-scale, no-CRF val mIoU after training."""
    split: str = key(SPLIT)
    size: int | tuple = key(Size())
    batch_size: int = key(Int(1))


@dataclasses.dataclass(frozen=True)
class SegmenterVal(QuickVal):
    """``segmenter.val``: plus ``score_train``, also scoring the segmenter on the images the
    seeds stage scored its pseudo-masks on."""
    score_train: bool = key(Bool())


@dataclasses.dataclass(frozen=True)
class SegmenterSettings(Section):
    model: SegmenterModel = key(Sub(SegmenterModel))
    loss: str = key(OneOf("dsrg", "ce"))
    train: SegmenterTrain = key(Sub(SegmenterTrain))
    dsrg: DSRGSettings = key(Sub(DSRGSettings))
    crf: TrainingCRF = key(Sub(TrainingCRF))
    ce: CESettings = key(Sub(CESettings))
    class_balance: ClassBalance = key(Sub(ClassBalance))
    val: SegmenterVal = key(Sub(SegmenterVal))

    def check(self) -> None:
        check_trunk_cache(self, self.model.backbone)

    def dsrg_config(self) -> DSRGConfig:
        """The parameters of pipeline.dsrg.dsrg_losses: ``dsrg`` and the ``crf`` preset."""
        return DSRGConfig(**self.dsrg.fields_dict(), crf=self.crf.params(),
                          crf_backend=self.crf.backend)


@dataclasses.dataclass(frozen=True)
class UpperBoundSettings(Section):
    """The segmenter section's model and schedule trained on GT masks: ``loss`` and ``train``
    overrides of ``segmenter.train``."""
    loss: str = key(OneOf("dsrg", "ce"))
    train: dict = key(Partial(SegmenterTrain))

    def segmenter(self, seg: SegmenterSettings) -> SegmenterSettings:
        """``seg`` with this section's loss and training overrides."""
        merged = seg.replace(loss=self.loss, train=seg.train.replace(**self.train))
        merged.check()
        return merged


@dataclasses.dataclass(frozen=True)
class PseudoLabelSettings(Section):
    """Inference of the trained segmenter on ``split`` for the pseudo-labels: a test
    ``protocol`` and, optionally, pass keys overriding it (as ``eval``'s; unset = the
    protocol's)."""
    split: str = key(SPLIT)
    protocol: str | None = key(PROTOCOL)
    size: int | tuple | str | None = key(INFERENCE_SIZE, optional=True)
    scales: tuple | None = key(Nullable(SCALES), optional=True)
    sizes: tuple | None = key(SIZES, optional=True)
    flip: bool | None = key(Nullable(Bool()), optional=True)
    fusion: str | None = key(FUSION, optional=True)
    batch_size: int = key(Int(1))
    amp: bool = key(Bool())
    crf: InferenceCRF = key(Sub(InferenceCRF))

    def inference(self) -> Inference:
        return Inference(InferenceSettings.from_cfg(self), self.crf.params_if_enabled(),
                         self.crf.workers)


@dataclasses.dataclass(frozen=True)
class RetrainSettings(Section):
    """Second round: pseudo-labels → ``model``: ``type="DeepLabV2VGG16"`` (DSRG's second round:
    the first round's network, ``init`` "segmenter" = its weights | "pretrained" = the
    segmenter's own start; trained with cross-entropy at ``ce.resolution``) or any other type,
    an mmseg segmentor config dict (``ce`` then unused and optional)."""
    pseudo: PseudoLabelSettings = key(Sub(PseudoLabelSettings))
    model: dict = key(FreeDict("type"))
    ce: CESettings | None = key(Sub(CESettings), optional=True)
    train: TrainSettings = key(Sub(TrainSettings))
    val: QuickVal = key(Sub(QuickVal))

    def check(self) -> None:
        if self.model["type"] != OWN_MODEL:
            return
        extra = sorted(set(self.model) - {"type", "init"})
        if extra:
            raise self.fail(f"model.{extra[0]}", f"is not a key of type {OWN_MODEL!r}: the second "
                                                  f"round takes the first round's architecture (keys: type, init)")
        if "init" not in self.model:
            raise self.fail("model.init", f"is not set: type {OWN_MODEL!r} needs init "
                                          f"({' or '.join(repr(i) for i in RETRAIN_INITS)})")
        OneOf(*RETRAIN_INITS)(self.model["init"], f"{self.path}.model.init")
        if self.ce is None:
            raise self.fail("ce", f"is not set: type {OWN_MODEL!r} needs ce=dict(resolution=...)")
