"""OPTS that change an upstream stage's section, given to a downstream stage's command.

``make segmenter OPTS="seeds.fg_top=0.2"`` changes nothing the segmenter stage reads: its own
section and the run digest of the seeds are unchanged, so it would call itself fresh, or train
on seeds built with another ``fg_top``, without a word. :func:`check_upstream_opts` refuses such
a command (a :class:`~pipeline.runtime.stage.StageError`, one line) when an OPTS key belongs to
a stage upstream of the one run (directly or through others, as their manifests record) and
differs from the value that stage's output was built with, naming the stage to re-run with
those OPTS. Keys of stages the command does not read, and values equal to the recorded ones,
pass; :data:`~pipeline.runtime.stage.EXECUTION_KEYS` (pool sizes) never count.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.data.io_utils import plain_data
from pipeline.runtime.stage import EXECUTION_KEYS, StageError, digest, read_manifest

_ABSENT = object()


def upstream_closure(work_dir: Path, upstream: tuple[str, ...]) -> list[str]:
    """Every stage upstream of one whose direct upstream is ``upstream``, nearest first, as
    their manifests in ``work_dir`` record it (a stage without a manifest ends its branch)."""
    seen: list[str] = []
    queue = list(upstream)
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.append(name)
        queue += list((read_manifest(work_dir / name) or {}).get("upstream", {}))
    return seen


def _at(tree: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def upstream_opts_conflicts(work_dir: Path, upstream: tuple[str, ...], opts: dict,
                            cfg) -> dict[str, list[tuple[str, Any, Any]]]:
    """``{upstream stage: [(key, given, built with), ...]}`` for the OPTS keys ``opts`` that
    differ from what those stages' outputs were built with (module docstring); ``cfg``: the
    checked settings, whose sections give the values as the stages would record them."""
    stages = upstream_closure(Path(work_dir), tuple(upstream))
    conflicts: dict[str, list[tuple[str, Any, Any]]] = {}
    for key in opts:
        stage, *parts = str(key).split(".")
        if stage not in stages or EXECUTION_KEYS & set(parts):
            continue
        built = _at((read_manifest(Path(work_dir) / stage) or {}).get("config"), parts)
        given = _at(plain_data(cfg.section(stage)), parts)
        if built is _ABSENT or given is _ABSENT or digest(built) == digest(given):
            continue
        conflicts.setdefault(stage, []).append((str(key), given, built))
    return conflicts


def check_upstream_opts(name: str, work_dir: Path, upstream: tuple[str, ...], opts: dict, cfg) -> None:
    """Raise a one-line StageError when ``opts`` change an upstream stage's output that the
    stage ``name`` would read unchanged (:func:`upstream_opts_conflicts`)."""
    conflicts = upstream_opts_conflicts(work_dir, upstream, opts, cfg) if opts else {}
    if not conflicts:
        return
    stages = list(reversed(list(conflicts)))                        # upstream first
    items = [item for s in stages for item in conflicts[s]]
    given = " ".join(f"{key}={_shown(value)}" for key, value, _ in items)
    built = ", ".join(_shown(value) for _, _, value in items)
    outputs = " and ".join(f"WORK_DIR/{s}" for s in stages)
    raise StageError(f"OPTS {given} differ from what {outputs} {'was' if len(stages) == 1 else 'were'} "
                     f"built with ({built}), and {name} would read that output unchanged: run "
                     f"`make {' '.join(stages)} OPTS=\"{given}\"` first (same EXP/WORK_DIR), or "
                     f"`make {' '.join(stages)} {name}` with these OPTS, or leave them out of OPTS")
