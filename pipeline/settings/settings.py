"""The typed settings of a whole experiment: one typed section per config section.

:meth:`Settings.from_dict` takes the plain dict of an experiment config (``_base_`` inheritance
and command-line overrides already applied) and checks every section, every key and every value
before any stage runs: an unknown section or key fails with the closest known name, a wrong type
or an out-of-range value fails naming the key and what it must be (:class:`ConfigError`, one
line). Rules between sections and the overrides of every ablation variant are checked too.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping

from .checks import ConfigError, unknown_key
from .classifier import ClassifierSettings
from .cues import HeatmapsSettings, SaliencySettings, SeedsSettings
from .evaluation import EvalSettings, LocalizeSettings, SubmitSettings
from .experiment import (ABLATION_RESERVED, AblationSettings, DataSettings,
                         ExperimentSettings)
from .segmenter import RetrainSettings, SegmenterSettings, UpperBoundSettings

__all__ = ["Settings", "SECTIONS", "apply_overrides", "flatten_overrides"]

SECTIONS = {
    "experiment": ExperimentSettings, "data": DataSettings, "classifier": ClassifierSettings,
    "heatmaps": HeatmapsSettings, "saliency": SaliencySettings, "seeds": SeedsSettings,
    "segmenter": SegmenterSettings, "upper_bound": UpperBoundSettings, "retrain": RetrainSettings,
    "eval": EvalSettings, "submit": SubmitSettings, "localize": LocalizeSettings,
    "ablation": AblationSettings,
}


def flatten_overrides(d, prefix: str = "") -> dict:
    """``{"a": {"b": 1}, "c.d": 2}`` → ``{"a.b": 1, "c.d": 2}`` (an empty dict stays a value)."""
    out = {}
    for k, v in (d or {}).items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_overrides(v, name + "."))
        else:
            out[name] = v
    return out


def _merge(old, new):
    """``new`` merged into ``old`` as mmengine's Config merges: dicts key by key, else replaced."""
    if isinstance(old, dict) and isinstance(new, Mapping):
        out = dict(old)
        for k, v in new.items():
            out[k] = _merge(old.get(k), v)
        return out
    return copy.deepcopy(new)


def apply_overrides(raw: dict, overrides: dict) -> dict:
    """A copy of the plain config ``raw`` with ``{"section.key.sub": value}`` set (missing
    intermediate dicts are created and dict values merged, as the command line's ``--opts``)."""
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        *parents, leaf = str(dotted).split(".")
        node = out
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = _merge(node.get(leaf), value)
    return out


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every section of an experiment, typed; a section the config does not have is None.
    ``raw`` is the plain config dict the settings were checked from."""
    experiment: ExperimentSettings
    data: DataSettings | None = None
    classifier: ClassifierSettings | None = None
    heatmaps: HeatmapsSettings | None = None
    saliency: SaliencySettings | None = None
    seeds: SeedsSettings | None = None
    segmenter: SegmenterSettings | None = None
    upper_bound: UpperBoundSettings | None = None
    retrain: RetrainSettings | None = None
    eval: EvalSettings | None = None
    submit: SubmitSettings | None = None
    localize: LocalizeSettings | None = None
    ablation: AblationSettings | None = None
    extra: dict = dataclasses.field(default_factory=dict)      # sections of extra_sections
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    extra_sections: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: Mapping, *, check_variants: bool = True,
                  extra_sections: dict | None = None) -> "Settings":
        """Check the plain config dict ``raw`` (module docstring); raise ConfigError.
        ``extra_sections`` (``{name: Section class}``): sections of stage modules outside the
        project's own (a stage module's ``SETTINGS``)."""
        raw, extra_sections = dict(raw), dict(extra_sections or {})
        known = {**SECTIONS, **extra_sections}
        for name in raw:
            if name not in known:
                raise unknown_key("", name, known)
        typed = {name: SECTIONS[name].from_dict(raw[name], name) for name in SECTIONS if name in raw}
        extra = {name: c.from_dict(raw[name], name) for name, c in extra_sections.items() if name in raw}
        if "experiment" not in typed:
            raise ConfigError("experiment is not set: add experiment = dict(seed=..., device=...)",
                              "experiment")
        settings = cls(**typed, extra=extra, raw=raw, extra_sections=extra_sections)
        settings.check()
        if check_variants and settings.ablation is not None:
            for name in settings.ablation.variants:
                settings.variant(name)
        return settings

    def check(self) -> None:
        """Rules between sections."""
        if (self.seeds is not None and self.heatmaps is not None
                and self.seeds.heatmap_source == "lambda_c" and not self.heatmaps.class_specific_lambda):
            raise ConfigError("seeds.heatmap_source='lambda_c' needs the λ^c maps: set "
                              "heatmaps.class_specific_lambda=True", "seeds.heatmap_source")

    def __contains__(self, name: str) -> bool:
        return getattr(self, name, None) is not None and name in SECTIONS

    def section(self, name: str, stage: str | None = None):
        """The typed section ``name``; ConfigError when the experiment has none."""
        if name in self.extra_sections:
            value = self.extra.get(name)
        elif name not in SECTIONS:
            raise unknown_key("", name, SECTIONS)
        else:
            value = getattr(self, name)
        if value is None:
            who = f" for stage {stage!r}" if stage else ""
            raise ConfigError(f"no config section {name!r}{who}: add it (or a configs/_base_/ "
                              f"file that has it) to the experiment", name)
        return value

    def stage_section(self, stage: str, names=None):
        """What a stage's ``run`` gets as ``ctx.section``: its own section, or
        ``{name: section}`` for a stage that reads several (``names``)."""
        names = tuple(names or (stage,))
        if len(names) == 1:
            return self.section(names[0], stage)
        return {name: self.section(name, stage) for name in names}

    def with_overrides(self, overrides: dict, where: str = "overrides") -> "Settings":
        """New settings with ``{"section.key": value}`` applied and checked; a ConfigError names
        ``where`` the overrides came from."""
        known = {**SECTIONS, **self.extra_sections}
        for dotted in overrides:
            section = str(dotted).split(".")[0]
            if section not in self.raw:
                err = (unknown_key("", section, known) if section not in known else
                       ConfigError(f"section {section} is not in this experiment: add the "
                                   f"configs/_base_/ file that has it to its _base_ list", section))
                raise ConfigError(f"{where}: {err}", err.key)
        try:
            return Settings.from_dict(apply_overrides(self.raw, overrides), check_variants=False,
                                      extra_sections=self.extra_sections)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}", exc.key) from None

    def variant(self, name: str) -> "Settings":
        """The settings of ablation variant ``name``: ``ablation.common``, then its overrides."""
        spec = self.ablation.variants[name]
        opts = {k: v for k, v in spec.items() if k not in ABLATION_RESERVED}
        flat = {**flatten_overrides(self.ablation.common), **flatten_overrides(opts)}
        bad = [k for k in flat if "." not in k]
        if bad:
            raise ConfigError(f"ablation.variants.{name}: {bad[0]} is not an override: overrides are "
                              f"'section.key' (reserved keys: {', '.join(ABLATION_RESERVED)})",
                              f"ablation.variants.{name}.{bad[0]}")
        return self.with_overrides(flat, f"ablation.variants.{name}")
