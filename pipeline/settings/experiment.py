"""Typed ``experiment``, ``data`` and ``ablation`` sections."""
from __future__ import annotations

import dataclasses

from .checks import Bool, Float, FreeDict, Int, Nullable, OneOf, Str, TupleOf
from .section import Section, Sub, key

__all__ = ["ExperimentSettings", "SyntheticSettings", "DataSettings", "AblationSettings",
           "ABLATION_RESERVED"]

# keys of an ablation variant that are not config overrides
ABLATION_RESERVED = ("label", "classifier_from")


@dataclasses.dataclass(frozen=True)
class ExperimentSettings(Section):
    """``name`` None = the config file's name (set when the experiment is loaded);
    ``device``: 'auto' = CUDA when available, 'cpu' = always the CPU."""
    name: str | None = key(Nullable(Str()), optional=True)
    seed: int = key(Int(0))
    device: str = key(OneOf("auto", "cpu"))


@dataclasses.dataclass(frozen=True)
class SyntheticSettings(Section):
    """The generated benchmark (pipeline.data.synthetic): ``seed``, and optional overrides of
    the generator's parameters (each None = pipeline.data.synthetic.DEFAULTS)."""
    seed: int = key(Int(0))
    image_size: int | None = key(Int(32), optional=True)
    n_train: int | None = key(Int(0), optional=True)
    n_val: int | None = key(Int(0), optional=True)
    n_test: int | None = key(Int(0), optional=True)
    n_classes: int | None = key(Int(1), optional=True)   # at most the generator's class names
    max_objects: int | None = key(Int(1), optional=True)
    max_classes_per_image: int | None = key(Int(1), optional=True)
    difficulty: float | None = key(Float(0, 1), optional=True)
    context_prob: float | None = key(Float(0, 1), optional=True)
    void_band: int | None = key(Int(0), optional=True)
    void_band_test: int | None = key(Nullable(Int(0)), optional=True)
    min_visible: int | None = key(Int(0), optional=True)
    jpeg_quality: int | None = key(Int(1, 100), optional=True)
    # (min, max) object radius as fractions of the image size
    object_radius: tuple | None = key(TupleOf(Float(0, 1, lo_open=True), length=2), optional=True)

    def check(self) -> None:
        if self.object_radius is not None and self.object_radius[0] > self.object_radius[1]:
            raise self.fail("object_radius", f"={self.object_radius} must be (min, max) with min <= max")

    def generator_options(self) -> dict:
        """The set generator parameters (all keys but ``seed``)."""
        return {k: v for k, v in self.to_dict().items() if k != "seed"}


@dataclasses.dataclass(frozen=True)
class DataSettings(Section):
    """``dataset`` 'synthetic' (generated, ``synthetic`` section) or 'voc' (a VOC-format tree
    at ``root``, SBD at ``sbd_root`` or None; DeepLab's SegmentationClassAug folder ``aug_dir``
    ('auto' = VOC2012/SegmentationClassAug when it exists, a path, or None / unset = not used)
    and its list ``aug_list`` (None / unset = looked for)); ``name`` None = 'synthetic' /
    'voc2012'."""
    dataset: str = key(OneOf("synthetic", "voc"))
    root: str | None = key(Nullable(Str()))
    sbd_root: str | None = key(Nullable(Str()))
    aug_dir: str | None = key(Nullable(Str()), optional=True)
    aug_list: str | None = key(Nullable(Str()), optional=True)
    label_source: str = key(OneOf("xml", "mask"))
    name: str | None = key(Nullable(Str()), optional=True)
    # processes decoding every listed image (execution only); None / unset = min(4, CPUs)
    workers: int | None = key(Nullable(Int(1)), optional=True)
    synthetic: SyntheticSettings | None = key(Sub(SyntheticSettings), optional=True)

    def check(self) -> None:
        if self.dataset == "synthetic" and self.synthetic is None:
            raise self.fail("synthetic", "is not set: dataset 'synthetic' needs synthetic=dict(seed=...)")


@dataclasses.dataclass(frozen=True)
class AblationSettings(Section):
    """Classifier variants (stages/ablation.py): each a dict of ``"section.key": value``
    overrides plus the reserved keys ``label`` and ``classifier_from``; ``common`` overrides
    apply to every variant first. The overrides themselves are checked by applying them to the
    experiment (pipeline.settings.Settings)."""
    variants: dict = key(FreeDict())
    common: dict = key(FreeDict())
    full: bool = key(Bool())

    def check(self) -> None:
        if not self.variants:
            raise self.fail("variants", "is empty: list at least one variant")
        for name, spec in self.variants.items():
            if not isinstance(spec, dict):
                raise self.fail(f"variants.{name}", f"={spec!r} must be a dict of overrides")
            src = spec.get("classifier_from")
            if src is not None and (src not in self.variants
                                    or (self.variants[src] or {}).get("classifier_from") is not None):
                raise self.fail(f"variants.{name}.classifier_from",
                                f"={src!r} must name a variant that trains its own classifier "
                                f"({', '.join(self.variants)})")
