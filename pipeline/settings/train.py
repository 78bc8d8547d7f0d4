"""Typed ``train`` sections of the training stages (``classifier.train``, ``segmenter.train``,
``retrain.train``) and their optimizer / lr schedule / parameter-wise rules.

The trainer takes a stage's ``train`` section as a mapping with these key names (a section reads
as a mapping of its set keys: ``tr["max_iters"]``, ``dict(tr["optimizer"])``).
"""
from __future__ import annotations

import dataclasses

import inspect
from collections.abc import Mapping

from pipeline.models.classifier import LOSS_TYPES
from pipeline.runtime.optim import SCHEDULES, optimizer_class

from .checks import (AnyOf, Bool, ConfigError, Float, FreeDict, Int, MappingOf, Nullable, OneOf,
                     TupleOf, closest, unknown_key)
from .section import Section, Sub, key

__all__ = ["Optimizer", "ScheduleSettings", "ParamwiseSettings", "TrainSettings",
           "ClassifierTrain", "SegmenterTrain", "SPLIT"]

SPLIT = OneOf("train", "val", "test", "trainaug")
# one parameter-name substring -> lr multiplier, or {"lr_mult": ..., "decay_mult": ...}
_LR_MULT = AnyOf(Float(0, lo_open=True), FreeDict())


class Optimizer:
    """Check of an ``optimizer`` dict: ``type`` a torch.optim class (pipeline.runtime.optim), ``lr`` > 0,
    ``weight_decay`` >= 0, and every other key an argument of that class (closest name
    suggested), a number, bool or tuple of numbers. The value stays a plain dict."""

    def __call__(self, v, key):
        if not isinstance(v, Mapping):
            raise ConfigError(f"{key}={v!r} has the wrong type: it must be {self.describe()}", key)
        opts = dict(v)
        for name in ("type", "lr", "weight_decay"):
            if name not in opts:
                raise ConfigError(f"{key}.{name} is not set: {key} must be {self.describe()}",
                                  f"{key}.{name}")
        try:
            cls = optimizer_class(opts["type"])
        except ValueError:
            raise ConfigError(f"{key}.type={opts['type']!r} is not allowed: it must name a "
                              f"torch.optim optimizer (SGD, Adam, AdamW, ...)", f"{key}.type") from None
        Float(0)(opts["lr"], f"{key}.lr")
        Float(0)(opts["weight_decay"], f"{key}.weight_decay")
        known = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "params")]
        for name, value in opts.items():
            if name == "type":
                continue
            if name not in known and closest(name, known) is not None:
                raise unknown_key(key, name, known)
            if name not in known:
                raise ConfigError(f"{key}.{name} is not an argument of {opts['type']}: remove it "
                                  f"({opts['type']} takes {', '.join(known)})", f"{key}.{name}")
            AnyOf(Bool(), Float(), TupleOf(Float()))(value, f"{key}.{name}")
        return {k: tuple(x) if isinstance(x, list) else x for k, x in opts.items()}

    def describe(self) -> str:
        return "a dict with type (a torch.optim optimizer), lr >= 0, weight_decay >= 0"


@dataclasses.dataclass(frozen=True)
class ScheduleSettings(Section):
    """lr schedule: ``poly`` (lr·(1 − it/max_iters)^power), ``step`` (× gamma every ``step``
    iterations) or ``constant``; the keys of the chosen type must be set."""
    type: str = key(OneOf(*SCHEDULES))
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
    optimizer: dict = key(Optimizer())
    schedule: ScheduleSettings = key(Sub(ScheduleSettings))
    lr_mult: dict = key(MappingOf(_LR_MULT))
    # None (unset) = no parameter-wise rules
    paramwise: ParamwiseSettings | None = key(Sub(ParamwiseSettings), optional=True)
    amp: bool = key(Bool())
    log_interval: int = key(Int(1))
    checkpoint_interval: int = key(Int(1))
    # iterations without a loss change before the stall warning (pipeline.runtime.guards; execution
    # only); unset = pipeline.runtime.guards.DEFAULT_STALL_ITERS, 0 = no warning
    stall_iters: int | None = key(Int(0), optional=True)
    # compute a frozen trunk once per image and train the rest on the cached features
    # (pipeline/runtime/trunk_cache.py); needs resize = crop and scale_range (1, 1)
    cache_trunk: bool = key(Bool())

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

