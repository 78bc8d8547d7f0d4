"""Typed ``train`` sections of the training stages (``classifier.train``, ``segmenter.train``,
``retrain.train``) and their optimizer / lr schedule / parameter-wise rules.

The trainer takes a stage's ``train`` section as a mapping with these key names (a section reads
as a mapping of its set keys: ``tr["max_iters"]``, ``dict(tr["optimizer"])``).
"""
from __future__ import annotations

import dataclasses

from pipeline.models.classifier import LOSS_TYPES

from .checks import AnyOf, Bool, Float, FreeDict, Int, MappingOf, Nullable, OneOf, TupleOf
from .section import Section, Sub, key

__all__ = ["OptimizerSettings", "ScheduleSettings", "ParamwiseSettings", "TrainSettings",
           "ClassifierTrain", "SegmenterTrain", "SPLIT"]

SPLIT = OneOf("train", "val", "test", "trainaug")
_ADAM_ONLY = ("betas", "eps", "amsgrad")
_SGD_ONLY = ("momentum", "nesterov", "dampening")
# one parameter-name substring -> lr multiplier, or {"lr_mult": ..., "decay_mult": ...}
_LR_MULT = AnyOf(Float(0, lo_open=True), FreeDict())


@dataclasses.dataclass(frozen=True)
class OptimizerSettings(Section):
    """A torch optimizer: ``type`` and its arguments; SGD-only / Adam-only arguments are
    rejected for the other kind."""
    type: str = key(OneOf("SGD", "Adam", "AdamW"))
    lr: float = key(Float(0, lo_open=True))
    weight_decay: float = key(Float(0))
    momentum: float | None = key(Float(0, 1, hi_open=True), optional=True)      # SGD
    nesterov: bool | None = key(Bool(), optional=True)                         # SGD
    dampening: float | None = key(Float(0, 1), optional=True)                  # SGD
    betas: tuple | None = key(TupleOf(Float(0, 1, hi_open=True), length=2), optional=True)  # Adam(W)
    eps: float | None = key(Float(0, lo_open=True), optional=True)             # Adam(W)
    amsgrad: bool | None = key(Bool(), optional=True)                          # Adam(W)

    def check(self) -> None:
        wrong = _SGD_ONLY if self.type != "SGD" else _ADAM_ONLY
        for name in wrong:
            if getattr(self, name) is not None:
                raise self.fail(name, f"is not an argument of {self.type}: remove it (optimizer "
                                      f"dicts of another type need _delete_=True in the config)")


@dataclasses.dataclass(frozen=True)
class ScheduleSettings(Section):
    """lr schedule: ``poly`` (lr·(1 − it/max_iters)^power), ``step`` (× gamma every ``step``
    iterations) or ``constant``; the keys of the chosen type must be set."""
    type: str = key(OneOf("poly", "step", "constant"))
    power: float | None = key(Float(0, lo_open=True), optional=True)
    step: int | None = key(Int(1), optional=True)
    gamma: float | None = key(Float(0, 1, lo_open=True), optional=True)

    def check(self) -> None:
        needed = {"poly": ("power",), "step": ("step", "gamma"), "constant": ()}[self.type]
        for name in needed:
            if getattr(self, name) is None:
                raise self.fail(name, f"is not set: schedule type {self.type!r} needs "
                                      f"{' and '.join(needed)}")


@dataclasses.dataclass(frozen=True)
class ParamwiseSettings(Section):
    """Parameter-wise rules (each optional; unset = no rule): lr / weight-decay multipliers of
    the biases and weight-decay multiplier of the normalisation layers."""
    bias_lr_mult: float | None = key(Float(0), optional=True)
    bias_decay_mult: float | None = key(Float(0), optional=True)
    norm_decay_mult: float | None = key(Float(0), optional=True)


@dataclasses.dataclass(frozen=True)
class TrainSettings(Section):
    """What every training stage trains with (``retrain.train`` as it is)."""
    split: str = key(SPLIT)
    crop: int = key(Int(1))
    resize: int | None = key(Nullable(Int(1)))         # square resize before the crop; None = none
    scale_range: tuple = key(TupleOf(Float(0, lo_open=True), length=2))
    batch_size: int = key(Int(1))
    max_iters: int = key(Int(1))
    num_workers: int = key(Int(0))
    optimizer: OptimizerSettings = key(Sub(OptimizerSettings))
    schedule: ScheduleSettings = key(Sub(ScheduleSettings))
    lr_mult: dict = key(MappingOf(_LR_MULT))
    # None (unset) = no parameter-wise rules
    paramwise: ParamwiseSettings | None = key(Sub(ParamwiseSettings), optional=True)
    amp: bool = key(Bool())
    log_interval: int = key(Int(1))
    checkpoint_interval: int = key(Int(1))

    def check(self) -> None:
        lo, hi = self.scale_range
        if lo > hi:
            raise self.fail("scale_range", f"={self.scale_range} must be (low, high) with low <= high")
        for name, mult in self.lr_mult.items():
            if isinstance(mult, dict):
                unknown = set(mult) - {"lr_mult", "decay_mult"}
                if unknown or not mult:
                    raise self.fail(f"lr_mult.{name}", f"={mult} must be a number > 0 or a dict "
                                                       "with lr_mult and/or decay_mult")
                for k, x in mult.items():
                    Float(0)(x, f"{self.path}.lr_mult.{name}.{k}")


@dataclasses.dataclass(frozen=True)
class ClassifierTrain(TrainSettings):
    """``classifier.train``: plus the multi-label loss."""
    loss: str = key(OneOf(*LOSS_TYPES))


@dataclasses.dataclass(frozen=True)
class SegmenterTrain(TrainSettings):
    """``segmenter.train``: plus where the training labels come from."""
    labels: str = key(OneOf("seeds", "gt"))       # seeds: WORK_DIR/seeds/labels | gt: GT masks

