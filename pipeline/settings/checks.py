"""Value checks of the typed settings: each check validates one config value and returns it in its
typed form (lists become tuples; numbers keep the type they were written with, so a value that
did not change keeps the digest it had), or raises :class:`ConfigError` naming the key and what
it must be.

A check is a callable ``check(value, key) -> value`` with a ``describe()`` phrase used in the
messages ("a number in [0, 1]").
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Mapping

from pipeline.runtime.stage import StageError

__all__ = ["ConfigError", "closest", "unknown_key", "Int", "Float", "Bool", "Str", "OneOf",
           "TupleOf", "SubsetOf", "Size", "AnyOf", "Nullable", "MappingOf", "FreeDict"]


class ConfigError(StageError):
    """A config key or value is wrong. ``key`` is the dotted key (``seeds.fg_top``); the message
    names it, says what is allowed and fits on one line."""

    def __init__(self, message: str, key: str | None = None, problem: str = ""):
        super().__init__(message)
        self.key, self.problem = key, problem


def closest(name: str, known) -> str | None:
    """The known name nearest to ``name`` (difflib), or None when nothing is close."""
    match = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_key(prefix: str, name: str, known) -> ConfigError:
    """``unknown key seeds.fg_tpo — did you mean seeds.fg_top?`` (or the list of known keys)."""
    key = f"{prefix}.{name}" if prefix else str(name)
    what = "key" if prefix else "section"
    near = closest(name, known)
    if near is not None:
        hint = f"did you mean {prefix + '.' if prefix else ''}{near}?"
    else:
        hint = f"known: {', '.join(sorted(str(k) for k in known))}"
    return ConfigError(f"unknown {what} {key} — {hint}", key)


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


# what went wrong, least to most specific (a union reports the most specific of its members)
PROBLEMS = ("is not allowed", "has the wrong type", "has the wrong length", "is out of range")


def _fail(key: str, value, check, problem: str = PROBLEMS[0]) -> ConfigError:
    return ConfigError(f"{key}={_show(value)} {problem}: it must be {check.describe()}", key,
                       problem)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


class _Range:
    """A number of the kind ``accepts`` says, between ``lo`` / ``hi`` (None = open-ended),
    exclusive with ``lo_open`` / ``hi_open``."""
    noun = "a number"

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    @staticmethod
    def accepts(v) -> bool:
        return _is_number(v)

    def __call__(self, v, key):
        if not self.accepts(v):
            raise _fail(key, v, self, "has the wrong type")
        if not self.contains(v):
            raise _fail(key, v, self, "is out of range")
        return v

    def describe(self) -> str:
        return self.noun + self.phrase()

    def contains(self, v) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))

    def phrase(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f" in {'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f" {'>' if self.lo_open else '>='} {self.lo}"
        if self.hi is not None:
            return f" {'<' if self.hi_open else '<='} {self.hi}"
        return ""


class Int(_Range):
    noun = "an integer"

    @staticmethod
    def accepts(v) -> bool:
        return _is_int(v)


class Float(_Range):
    """A finite number (an integer is accepted as it is, so its digest does not change)."""


class Bool:
    def __call__(self, v, key):
        if not isinstance(v, bool):
            raise _fail(key, v, self, "has the wrong type")
        return v

    def describe(self) -> str:
        return "True or False"


class Str:
    """Any non-empty string (paths, names)."""

    def __call__(self, v, key):
        if not isinstance(v, str) or not v:
            raise _fail(key, v, self, "has the wrong type")
        return v

    def describe(self) -> str:
        return "a non-empty string"


class OneOf:
    def __init__(self, *values):
        self.values = tuple(values)

    def __call__(self, v, key):
        if not any(v == x and type(v) is type(x) for x in self.values):
            raise _fail(key, v, self)
        return v

    def describe(self) -> str:
        return "one of " + ", ".join(_show(x) for x in self.values)


class TupleOf:
    """A list or tuple of items passing ``item``; ``min_len`` / ``length`` constrain its size."""

    def __init__(self, item, min_len: int = 0, length: int | None = None):
        self.item, self.min_len, self.length = item, min_len, length

    def __call__(self, v, key):
        if not isinstance(v, (list, tuple)):
            raise _fail(key, v, self, "has the wrong type")
        if (self.length is not None and len(v) != self.length) or len(v) < self.min_len:
            raise _fail(key, v, self, "has the wrong length")
        out = []
        for x in v:
            try:
                out.append(self.item(x, key))
            except ConfigError as exc:
                problem = exc.problem if exc.problem == "is out of range" else PROBLEMS[0]
                raise _fail(key, v, self, problem) from None
        return tuple(out)

    def describe(self) -> str:
        size = (f"{self.length} " if self.length is not None else
                "one or more " if self.min_len == 1 else f"at least {self.min_len} " if self.min_len else "")
        return f"a tuple of {size}values, each {self.item.describe()}"


class SubsetOf(TupleOf):
    """A tuple of distinct names taken from ``names``."""

    def __init__(self, names):
        super().__init__(OneOf(*names))

    def __call__(self, v, key):
        out = super().__call__(v, key)
        if len(set(out)) != len(out):
            raise _fail(key, v, self, "repeats a name")
        return out

    def describe(self) -> str:
        return f"a tuple of distinct names from {', '.join(_show(x) for x in self.item.values)}"


class Size:
    """An image size: ``n`` (square, n >= 1) or ``(h, w)``."""

    def __call__(self, v, key):
        if _is_int(v) and v >= 1:
            return v
        if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) and x >= 1 for x in v):
            return tuple(v)
        raise _fail(key, v, self)

    def describe(self) -> str:
        return "an integer >= 1 or a pair (h, w) of them"


class AnyOf:
    """The first of ``checks`` that accepts the value."""

    def __init__(self, *checks):
        self.checks = checks

    def __call__(self, v, key):
        problems = []
        for check in self.checks:
            try:
                return check(v, key)
            except ConfigError as exc:
                problems.append(exc.problem)
        worst = max(problems, key=lambda p: PROBLEMS.index(p) if p in PROBLEMS else 0)
        raise _fail(key, v, self, worst)

    def describe(self) -> str:
        return " or ".join(c.describe() for c in self.checks)


class Nullable(AnyOf):
    """None or what ``check`` accepts."""

    def __init__(self, check):
        super().__init__(OneOf(None), check)

    def describe(self) -> str:
        return f"None or {self.checks[1].describe()}"


class MappingOf:
    """A dict with string keys and values passing ``value`` (e.g. ``lr_mult``)."""

    def __init__(self, value):
        self.value = value

    def __call__(self, v, key):
        if not isinstance(v, Mapping):
            raise _fail(key, v, self, "has the wrong type")
        return {str(k): self.value(x, f"{key}.{k}") for k, x in v.items()}

    def describe(self) -> str:
        return f"a dict of name: {self.value.describe()}"


class FreeDict:
    """A dict passed on as it is (e.g. an mmseg model config); ``required`` keys must be there."""

    def __init__(self, *required: str):
        self.required = required

    def __call__(self, v, key):
        if not isinstance(v, Mapping):
            raise _fail(key, v, self, "has the wrong type")
        for name in self.required:
            if name not in v:
                raise ConfigError(f"{key}.{name} is not set: {key} must be {self.describe()}",
                                  f"{key}.{name}")
        return _plain_tree(v)

    def describe(self) -> str:
        return "a dict" + (f" with {', '.join(self.required)}" if self.required else "")


def _plain_tree(v):
    if isinstance(v, Mapping):
        return {str(k): _plain_tree(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain_tree(x) for x in v]
    return v
