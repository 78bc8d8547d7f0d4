"""Typed ``classifier`` section (stage ``classifier``; configs/_base_/classifier_vgg16_ep.py)."""
from __future__ import annotations

import dataclasses

from pipeline.models.pooling import POOLING_HEADS
from pipeline.models.vgg import BEW_POSITIONS, BLOCK_NAMES, POOL_NAMES

from .checks import Bool, Float, Int, Nullable, OneOf, Str, SubsetOf, TupleOf
from .section import Section, Sub, key
from .train import SPLIT, ClassifierTrain

__all__ = ["BackboneSettings", "PoolingSettings", "ClassifierModel", "ClassifierVal",
           "ClassifierSettings", "POOLING", "PRETRAINED"]

POOLING = OneOf(*POOLING_HEADS)
# ImageNet VGG-16 weights: None (from scratch), "torchvision" (its cache) or a file path
PRETRAINED = Nullable(Str())


@dataclasses.dataclass(frozen=True)
class BackboneSettings(Section):
    """The fully convolutional VGG-16 (pipeline.models.vgg.VGG16Backbone)."""
    width: float = key(Float(0, lo_open=True))
    batch_norm: bool = key(Bool())
    dropout: float = key(Float(0, 1, hi_open=True))
    fc6_dilation: int = key(Int(1))
    sge_after: tuple = key(SubsetOf(BLOCK_NAMES))
    sge_groups: int = key(Int(1))
    lip_pools: tuple = key(SubsetOf(POOL_NAMES))
    bew_before: tuple = key(SubsetOf(BEW_POSITIONS))


@dataclasses.dataclass(frozen=True)
class PoolingSettings(Section):
    """Global pooling head: ``tau`` is used by gndrp, ``normalize`` by ep ('hw': Eq. 4's 1/hw,
    'lambda': the λ-weighted mean)."""
    type: str = key(POOLING)
    detach_lambda: bool = key(Bool())
    tau: float = key(Float(0, 1))
    normalize: str = key(OneOf("hw", "lambda"))


@dataclasses.dataclass(frozen=True)
class ClassifierModel(Section):
    backbone: BackboneSettings = key(Sub(BackboneSettings))
    pooling: PoolingSettings = key(Sub(PoolingSettings))
    pretrained: str | None = key(PRETRAINED)
    bew_loss_weight: float = key(Float(0))
    classifier_bias: bool = key(Bool())


@dataclasses.dataclass(frozen=True)
class ClassifierVal(Section):
    """mAP on ``split`` after training; ``extra_poolings`` also scores the trained weights with
    other pooling rules (e.g. 'ep' on a GAP model = EP inference)."""
    split: str = key(SPLIT)
    size: int = key(Int(1))
    batch_size: int = key(Int(1))
    num_workers: int = key(Int(0))
    extra_poolings: tuple = key(TupleOf(POOLING))


@dataclasses.dataclass(frozen=True)
class ClassifierSettings(Section):
    model: ClassifierModel = key(Sub(ClassifierModel))
    train: ClassifierTrain = key(Sub(ClassifierTrain))
    val: ClassifierVal = key(Sub(ClassifierVal))
