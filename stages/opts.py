"""The command line's config overrides: Make's ``OPTS="a.b=1 c.d='x y'"`` and ``--opts a.b=1``.

Make passes ``OPTS`` as one shell-quoted word, ``--opts-line LINE``, so that values with
parentheses, spaces or quotes survive the recipe's shell; :func:`expand_opts_line` splits LINE
here like a POSIX shell splits (quotes group, a backslash escapes) into ``--opts`` words, and
a word that does not start with ``key=`` continues the previous value
(``eval.scales=(0.75, 1.0)`` stays one override). Each value is read by :func:`parse_value`:

* a value that starts with a quote is a string, exactly as quoted:
  ``experiment.name='a,b'`` stays ``"a,b"``, ``data.root='/x/VOC 2012 (copy)'`` keeps its
  spaces and parentheses;
* otherwise as mmengine's ``--cfg-options``: numbers, ``True``/``False``, ``None``,
  ``(a, b)`` tuples, ``[a, b]`` and ``a,b`` lists; spaces inside a plain value are kept.

A word without ``key=``, unbalanced quotes or unbalanced brackets raise
:class:`pipeline.settings.ConfigError` (one line naming the word and the fix) before anything
runs; :func:`parse_command_line` turns it into that line and exit status 1.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys

from pipeline.settings import ConfigError

OPTS_KEY = re.compile(r"^[A-Za-z_][\w.]*=")
QUOTES = "'\""
BRACKETS = {")": "(", "]": "["}
_DQ_ESCAPES = '"\\$`'
QUOTE_HINT = "quote a value that holds spaces or is a string: experiment.name='my run'"


def _shell_words(line: str) -> list[tuple[str, bool]]:
    """``line`` split like a POSIX shell; each word with whether its value (what follows the
    word's first ``=``, when that ``=`` is unquoted) starts with a quote."""
    words: list[tuple[str, bool]] = []
    word, literal, quote, value_starts, i = None, False, None, False, 0
    while i < len(line):
        c, at_value = line[i], value_starts
        value_starts = False
        if quote is not None:                                  # inside '...' or "..."
            if c == quote:
                quote = None
            elif quote == '"' and c == "\\" and line[i + 1:i + 2] and line[i + 1] in _DQ_ESCAPES:
                word, i = word + line[i + 1], i + 1
            else:
                word += c
        elif c.isspace():
            if word is not None:
                words.append((word, literal))
            word, literal = None, False
        elif c in QUOTES:
            word, quote, literal = word or "", c, literal or at_value
        elif c == "\\":
            word, i = (word or "") + line[i + 1:i + 2], i + 1
        else:
            word = (word or "") + c
            value_starts = c == "=" and "=" not in word[:-1]
        i += 1
    if quote is not None:
        raise ConfigError(f"OPTS={line!r}: a {quote} quote is not closed: balance the quotes")
    if word is not None:
        words.append((word, literal))
    return words


def opts_words(line: str) -> list[str]:
    """The ``--opts`` words of an OPTS line (module docstring); a quoted value is passed on as
    a Python string literal, which :func:`parse_value` takes as it is."""
    items: list[list] = []
    for text, literal in _shell_words(line):
        if items and not OPTS_KEY.match(text):
            items[-1][0] += " " + text
        else:
            items.append([text, literal])
    out = []
    for text, literal in items:
        key, eq, value = text.partition("=")
        out.append(f"{key}={value!r}" if literal and eq else text)
    return out


def expand_opts_line(argv=None) -> list[str]:
    """``argv`` (default ``sys.argv[1:]``) with ``--opts-line LINE`` replaced by
    ``--opts <words of LINE>`` (:func:`opts_words`)."""
    argv, out = list(sys.argv[1:] if argv is None else argv), []
    words = iter(argv)
    for arg in words:
        if arg != "--opts-line":
            out.append(arg)
            continue
        items = opts_words(next(words, ""))
        out += ["--opts", *items] if items else []
    return out


def _check_brackets(key: str, value: str) -> None:
    stack: list[str] = []
    for c in value:
        if c in "([":
            stack.append(c)
        elif c in BRACKETS and (not stack or stack.pop() != BRACKETS[c]):
            stack.append(c)
            break
    if stack:
        raise ConfigError(f"OPTS: {key}={value}: unbalanced brackets: close every ( and [ "
                          f"(e.g. eval.scales=(0.75,1.0)), or {QUOTE_HINT}", key)


def parse_value(key: str, value: str):
    """The config value of ``key=value`` (module docstring)."""
    from mmengine.config import DictAction

    if value[:1] in QUOTES:
        try:
            text = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            text = None
        if isinstance(text, str):
            return text
    if not any(c in value for c in "()[],"):
        return DictAction._parse_int_float_bool(value.strip(QUOTES))
    _check_brackets(key, value)
    return DictAction._parse_iterable(value)


def split_override(word: str) -> tuple[str, str]:
    """``"a.b=1"`` → ``("a.b", "1")``; ConfigError for a word that is not ``key=value``."""
    if not OPTS_KEY.match(word):
        raise ConfigError(f"OPTS: {word!r} is not key=value: write section.key=value, e.g. "
                          f"seeds.fg_top=0.2 ({QUOTE_HINT})")
    key, _, value = word.partition("=")
    return key, value


class OptsAction(argparse.Action):
    """``--opts k=v ...`` → ``{k: value}`` (:func:`split_override`, :func:`parse_value`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        options = dict(getattr(namespace, self.dest, None) or {})
        for word in values or ():
            key, value = split_override(word)
            options[key] = parse_value(key, value)
        setattr(namespace, self.dest, options)


def add_opts_argument(p: argparse.ArgumentParser) -> None:
    """The ``--opts`` option (:class:`OptsAction`)."""
    p.add_argument("--opts", nargs="+", action=OptsAction, default={},
                   help="config overrides, e.g. seeds.fg_top=0.2 eval.scales=(0.75,1.0)")


def parse_command_line(p: argparse.ArgumentParser, argv=None, name: str | None = None):
    """``p.parse_args`` of ``argv`` with ``--opts-line`` expanded; malformed OPTS exit with
    ``[name] error: OPTS: ...`` and status 1 (``name``: the end of ``p.prog``)."""
    try:
        return p.parse_args(expand_opts_line(argv))
    except ConfigError as exc:
        raise SystemExit(f"[{name or p.prog.rsplit('.', 1)[-1]}] error: {exc}") from None
