"""Experiment configs read as plain Python, without mmengine (``make gpu-check`` and the
benchmarks run on a stock torch install): the ``_base_`` files merged in order, then the file's
own dict sections, as mmengine's ``Config`` does for this project's configs (a test compares
the two where mmengine is installed)."""
from __future__ import annotations

import copy
import runpy
from pathlib import Path


def merge(dst: dict, src: dict) -> dict:
    """Recursive update; a dict with ``_delete_=True`` replaces instead of merging."""
    for k, v in src.items():
        if isinstance(v, dict):
            v = copy.deepcopy(v)
            if v.pop("_delete_", False) or not isinstance(dst.get(k), dict):
                dst[k] = merge({}, v)
            else:
                merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def plain_config(path: str | Path) -> dict:
    """An experiment config's dict sections without mmengine: its ``_base_`` files in order, then
    the file's own sections, merged with :func:`merge`."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"experiment config not found: {path}")
    ns = runpy.run_path(str(path))
    merged: dict = {}
    for base in ns.get("_base_", []):
        merge(merged, plain_config(path.parent / base))
    return merge(merged, {k: v for k, v in ns.items() if not k.startswith("_") and isinstance(v, dict)})
