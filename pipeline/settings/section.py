"""Typed config sections: a frozen dataclass per section, built and validated from a plain dict.

A section class declares its keys with :func:`key` (the check of the value, whether the key may
be left out). It holds types, allowed values and ranges — never default values: those live in
``configs/_base_/`` only, so a required key that the experiment does not set is an error.
An *optional* key (``optional=True``) may be left out; it is then None, and the field's
docstring says what None means.

:meth:`Section.from_dict` rejects unknown keys (naming the closest known one), checks every value
and runs the class's cross-key rule :meth:`Section.check`. :meth:`Section.to_dict` gives the
section back as plain Python — the keys that were set, with their checked values — which is what
the stage digest, the manifest and the model files record. Keys listed in
:data:`KEYS_ADDED_LATER` are left out of it while they hold the value that reproduces the
behaviour from before the key existed, so adding a key to ``configs/_base_/`` leaves finished
work dirs fresh.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .checks import ConfigError, unknown_key

__all__ = ["Section", "Sub", "Partial", "key", "make_section", "KEYS_ADDED_LATER", "with_later_keys"]

# dotted key -> the value with which it is left out of to_dict() (and so of the stage digest):
# keys that joined configs/_base_/ after work dirs existed; this value is what the code did
# before the key was there, so a config holding it keeps its old digest.
KEYS_ADDED_LATER: dict[str, Any] = {
    "classifier.model.classifier_bias": True,
    "classifier.model.pooling.normalize": "hw",
    "classifier.model.backbone.sge_groups": 32,
    "classifier.val.num_workers": 0,
    "classifier.val.extra_poolings": (),
    "heatmaps.writers": 2,
    "heatmaps.rib.classifier_lr_mult": 10.0,
    "heatmaps.rib.weight_decay": 1e-4,
    "heatmaps.rib.momentum": 0.0,
    "heatmaps.rib.poly_power": 0.9,
    "heatmaps.rib.explode_th": 0.3,
    "heatmaps.rib.neg_batch": 20,
    "heatmaps.rib.loss_reduction": "sum",
    "heatmaps.rib.train_mode": False,
    "heatmaps.rib.seed": 0,
    "segmenter.crf.start_method": "spawn",
    "eval.model": "segmenter",
    "classifier.model.backbone.type": "vgg16",
    "classifier.model.backbone.frozen_blocks": 0,
    "classifier.model.backbone.head": True,
    "classifier.train.cache_trunk": False,
    # a nested section whose keys are all at their earlier values is left out as a whole ({})
    "segmenter.model.backbone": {},
    "segmenter.model.backbone.type": "vgg16",
    "segmenter.model.backbone.frozen_blocks": 0,
    "segmenter.model.backbone.head": False,
    "segmenter.train.cache_trunk": False,
    "retrain.train.cache_trunk": False,
    "segmenter.dsrg.grow_start": 0,
    "classifier.model.backbone.taps": (),
    "segmenter.model.backbone.taps": (),
    "segmenter.model.reduce": 0,
    "segmenter.class_balance": {},
    "segmenter.class_balance.power": 0.0,
    "segmenter.class_balance.max_weight": 50.0,
    "seeds.fg_min": 0.0,
    "heatmaps.refine": {},
    "heatmaps.refine.iterations": 0,
    "heatmaps.refine.beta": 8.0,
    "heatmaps.refine.radius": 5,
}


def with_later_keys(raw: Mapping, path: str) -> dict:
    """A copy of section ``raw`` (at dotted ``path``, e.g. a ``model_cfg`` read back from a model
    file) with every :data:`KEYS_ADDED_LATER` key below ``path`` that it lacks set to its earlier
    value (nested sections first), so a record written without those keys loads as a section."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for dotted in sorted(KEYS_ADDED_LATER, key=lambda k: k.count(".")):
        if not dotted.startswith(path + "."):
            continue
        *parents, name = dotted[len(path) + 1:].split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and name not in node:
            later = KEYS_ADDED_LATER[dotted]
            node[name] = dict(later) if isinstance(later, Mapping) else later
    return out


def key(check, *, optional: bool = False):
    """A config key of a section: ``check`` validates its value; ``optional`` keys may be left
    out (they are then None)."""
    return dataclasses.field(default=None, metadata={"check": check, "optional": optional})


@dataclasses.dataclass(frozen=True)
class Section(Mapping):
    """Base of the typed sections (see the module docstring). Subclasses are frozen dataclasses
    whose fields are declared with :func:`key`. A section also reads as a read-only mapping of
    its set keys (``tr["max_iters"]``, ``dict(tr["optimizer"])``), for code that takes a config
    mapping such as the trainer."""

    @classmethod
    def from_dict(cls, raw, path: str):
        """Validate ``raw`` (a dict) as the section at dotted ``path``; raise ConfigError."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}={raw!r} has the wrong type: it must be a dict of keys "
                              f"({', '.join(f.name for f in dataclasses.fields(cls))})", path)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in raw:
            if name not in fields:
                raise unknown_key(path, name, fields)
        values = {}
        for name, f in fields.items():
            if name in raw:
                values[name] = f.metadata["check"](raw[name], f"{path}.{name}")
            elif not f.metadata["optional"]:
                raise ConfigError(f"{path}.{name} is not set: add it to the experiment config "
                                  f"(configs/_base_/ holds the defaults)", f"{path}.{name}")
        obj = cls(**values)
        object.__setattr__(obj, "_path", path)
        object.__setattr__(obj, "_given", frozenset(raw))
        obj.check()
        return obj

    def check(self) -> None:
        """Rules between keys of the section (override); raise ConfigError."""

    @property
    def path(self) -> str:
        return getattr(self, "_path", type(self).__name__)

    def fail(self, name: str, message: str) -> ConfigError:
        """A ConfigError about key ``name`` of this section: "<section>.<name> <message>" (no
        space before a message that starts with "=")."""
        sep = "" if message.startswith("=") else " "
        return ConfigError(f"{self.path}.{name}{sep}{message}", f"{self.path}.{name}")

    def is_set(self, name: str) -> bool:
        """Whether the config set key ``name`` (optional keys may be left out)."""
        return name in getattr(self, "_given", {f.name for f in dataclasses.fields(self)})

    def to_dict(self) -> dict:
        """The set keys as plain Python (nested sections as dicts; see the module docstring)."""
        out = {}
        for f in dataclasses.fields(self):
            if not self.is_set(f.name):
                continue
            value = getattr(self, f.name)
            value = value.to_dict() if isinstance(value, Section) else value
            later = KEYS_ADDED_LATER.get(f"{self.path}.{f.name}", _NOTHING)
            if later is not _NOTHING and value == later:
                continue
            out[f.name] = value
        return out

    def fields_dict(self) -> dict:
        """Every key's typed value (nested sections stay typed), e.g. as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __getitem__(self, name: str):
        if not self.is_set(name):
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return (f.name for f in dataclasses.fields(self) if self.is_set(f.name))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def replace(self, **changes):
        """A copy with ``changes`` (already checked values), keeping the path and set keys."""
        new = dataclasses.replace(self, **changes)
        object.__setattr__(new, "_path", self.path)
        object.__setattr__(new, "_given", frozenset(getattr(self, "_given", ())) | set(changes))
        return new


_NOTHING = object()


def make_section(name: str, **checks) -> type:
    """A typed section class with one required key per ``checks`` item (``key=check``), e.g.
    for a stage module outside the project's sections (its ``SETTINGS``)."""
    fields = [(k, object, key(check)) for k, check in checks.items()]
    return dataclasses.make_dataclass(f"{name.title()}Settings", fields, bases=(Section,), frozen=True)


class Sub:
    """Check of a nested section: the value is validated as ``cls``."""

    def __init__(self, cls):
        self.cls = cls

    def __call__(self, v, key):
        return self.cls.from_dict(v, key)

    def describe(self) -> str:
        return f"a dict of {self.cls.__name__} keys"


class Partial:
    """Overrides of some keys of section ``cls`` (e.g. ``upper_bound.train``): a plain dict of
    checked values, unknown keys rejected."""

    def __init__(self, cls):
        self.cls = cls

    def __call__(self, v, key):
        if not isinstance(v, Mapping):
            raise ConfigError(f"{key}={v!r} has the wrong type: it must be a dict of "
                              f"{self.cls.__name__} keys", key)
        fields = {f.name: f for f in dataclasses.fields(self.cls)}
        out = {}
        for name, value in v.items():
            if name not in fields:
                raise unknown_key(key, name, fields)
            out[name] = fields[name].metadata["check"](value, f"{key}.{name}")
        return out

    def describe(self) -> str:
        return f"a dict of some {self.cls.__name__} keys"
