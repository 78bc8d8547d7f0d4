"""Typed ``classifier`` section (stage ``classifier``; configs/_base_/classifier_vgg16_ep.py)."""
from __future__ import annotations

import dataclasses

from pipeline.models.backbones import BACKBONES, LITE_TYPES, MAX_LITE_BLOCKS, lite_blocks
from pipeline.models.pooling import POOLING_HEADS
from pipeline.models.vgg import BEW_POSITIONS, BLOCK_NAMES, POOL_NAMES

from .checks import AnyOf, Bool, ConfigError, Float, Int, Nullable, OneOf, Str, SubsetOf, TupleOf
from .section import Section, Sub, key
from .train import SPLIT, ClassifierTrain

__all__ = ["LITE_CHOICES", "TrunkSettings", "BackboneSettings", "PoolingSettings", "ClassifierModel",
           "ClassifierVal",
           "ClassifierSettings", "POOLING", "PRETRAINED"]

POOLING = OneOf(*POOLING_HEADS)
# ImageNet VGG-16 weights: None (from scratch), "torchvision" (its cache) or a file path
PRETRAINED = Nullable(Str())
# the EfficientNet trunks, for messages: 'efficientnet_lite0' | 'efficientnet_lite1' | ...
LITE_CHOICES = " | ".join(repr(t) for t in LITE_TYPES)


@dataclasses.dataclass(frozen=True)
class TrunkSettings(Section):
    """Which trunk (pipeline.models.backbones): ``type`` 'vgg16' | 'efficientnet_lite0' |
    'efficientnet_lite1' | 'efficientnet_lite2'; ``frozen_blocks`` (EfficientNet only): the stem
    and that many MBConv blocks keep their ImageNet weights, 0 = all trained (at most 16 for
    Lite0, 21 for Lite1 / Lite2: checked against the type); ``head`` (EfficientNet only): the 1×1
    1280-channel head conv on top (else the map of the last block: 320 channels, 352 in Lite2);
    ``taps`` (EfficientNet only, whole trunk frozen): the trunk's output is the concatenation of
    these frozen layers (block indices on the stride-8 grid, ``"head"`` = the ImageNet head conv),
    () = the last layer alone."""
    type: str = key(OneOf(*BACKBONES))
    frozen_blocks: int = key(Int(0, MAX_LITE_BLOCKS))
    head: bool = key(Bool())
    taps: tuple = key(TupleOf(AnyOf(Int(0, MAX_LITE_BLOCKS - 1), OneOf("head"))))

    def check(self) -> None:
        if self.type == "vgg16" and self.frozen_blocks:
            raise self.fail("frozen_blocks", f"={self.frozen_blocks} needs an EfficientNet type "
                                             f"({LITE_CHOICES}; VGG-16 trains every layer): set it to 0")
        if self.type == "vgg16" and self.taps:
            raise self.fail("taps", f"={self.taps} is an EfficientNet setting: VGG-16 takes ()")
        blocks = lite_blocks(self.type)
        if self.frozen_blocks > blocks:
            raise self.fail("frozen_blocks", f"={self.frozen_blocks} is more than the {blocks} blocks "
                                             f"of {self.type}: choose 0..{blocks}")
        if self.taps:
            from pipeline.models.efficientnet_lite import STAGES, block_plan, check_taps
            plan = block_plan(8, STAGES[LITE_TYPES[self.type]])
            try:
                check_taps(self.taps, self.frozen_blocks, self.head, plan, 8)
            except ValueError as exc:
                raise self.fail("taps", f": {exc}") from None


@dataclasses.dataclass(frozen=True)
class BackboneSettings(TrunkSettings):
    """The classifier's trunk: the fully convolutional VGG-16 (pipeline.models.vgg.VGG16Backbone;
    ``width`` .. ``bew_before``, VGG-16 only) or EfficientNet-Lite0 / -Lite1 / -Lite2 (``type``,
    ``frozen_blocks``, ``head``, ``taps``, ``dropout``)."""
    width: float = key(Float(0, lo_open=True))
    batch_norm: bool = key(Bool())
    dropout: float = key(Float(0, 1, hi_open=True))
    fc6_dilation: int = key(Int(1))
    sge_after: tuple = key(SubsetOf(BLOCK_NAMES))
    sge_groups: int = key(Int(1))
    lip_pools: tuple = key(SubsetOf(POOL_NAMES))
    bew_before: tuple = key(SubsetOf(BEW_POSITIONS))

    def check(self) -> None:
        super().check()
        if self.type != "vgg16":
            reject_vgg_keys(self, self.type, width=1.0, batch_norm=False, fc6_dilation=1, sge_after=(),
                            lip_pools=(), bew_before=())


def reject_vgg_keys(section, trunk: str, **neutral) -> None:
    """A ConfigError for the first VGG-16-only key (BEW positions, LIP pools, SGE placement,
    width, ...) of ``section`` that is not at its neutral value when the trunk is another one."""
    for name, value in neutral.items():
        if getattr(section, name) != value:
            raise section.fail(name, f"={getattr(section, name)!r} is a VGG-16 setting (its "
                                     f"layers or pools): backbone type {trunk!r} takes {value!r}")


def check_pretrained(path: str, trunk: TrunkSettings, pretrained) -> None:
    """'torchvision' is VGG-16's source, 'package' that of every EfficientNet-Lite type (its
    variant's package); a file path works for all."""
    vgg = trunk.type == "vgg16"
    wrong = "package" if vgg else "torchvision"
    if pretrained == wrong:
        right = "'torchvision'" if vgg else "'package'"
        raise ConfigError(f"{path}.pretrained={pretrained!r} is not a source of {trunk.type} weights: "
                          f"use {right}, a file path or None", f"{path}.pretrained")


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

    def check(self) -> None:
        check_pretrained(self.path, self.backbone, self.pretrained)


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

    def check(self) -> None:
        check_trunk_cache(self, self.model.backbone)


def check_trunk_cache(section, trunk: TrunkSettings) -> None:
    """``train.cache_trunk`` needs a frozen trunk and a deterministic input (square resize to
    the crop, no rescale; the cached mode has no flips)."""
    tr = section.train
    if not tr.cache_trunk:
        return
    if trunk.type == "vgg16" or trunk.frozen_blocks == 0:
        raise section.fail("train.cache_trunk", "=True needs a frozen trunk: backbone "
                           f"type {LITE_CHOICES} with frozen_blocks >= 1")
    if tr.resize != tr.crop or tuple(tr.scale_range) != (1.0, 1.0):
        raise section.fail("train.cache_trunk", f"=True needs the same input every epoch: set "
                           f"train.resize={tr.crop} (= crop) and train.scale_range=(1.0, 1.0)")
