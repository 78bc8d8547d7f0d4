"""Shared helpers of the benchmarks: timing (median of repeats), result rows, table, JSON output.

A benchmark module exposes ``NAME`` and ``run(cfg: dict, ctx: BenchContext) -> list[dict]``; each
dict is one figure (:func:`row`). Timings are wall-clock (``time.perf_counter``) medians over
``repeats`` runs after ``warmup`` untimed runs; a ratio always compares two figures measured in
the same process, one right after the other.
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from pipeline.data.io_utils import json_safe

__all__ = ["BenchContext", "measure", "measure_interleaved", "row", "fmt", "markdown_table",
           "dump_json"]


@dataclasses.dataclass
class BenchContext:
    """What every benchmark receives: global repeats/warmup, a scratch folder, the ``shared`` dict
    (figures later benchmarks reuse, e.g. the segmenter fwd/bwd time), and ``log``."""
    repeats: int = 5
    warmup: int = 1
    quick: bool = False
    tmp: Path = Path("/tmp")
    shared: dict = dataclasses.field(default_factory=dict)
    log: Callable[[str], None] = print

    def reps(self, cfg: dict) -> int:
        """Repeats of a benchmark: its own ``repeats`` key, else the global value."""
        return max(1, int(cfg.get("repeats", self.repeats)))


def measure(fn: Callable[[], Any], repeats: int, warmup: int = 1, setup: Callable[[], Any] | None = None) -> dict:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls (``setup()`` before each call,
    untimed). Returns ``{"median", "min", "max", "runs", "result"}`` (seconds; ``result`` = the
    last return value)."""
    result = None
    for _ in range(max(0, int(warmup))):
        if setup is not None:
            setup()
        result = fn()
    runs = []
    for _ in range(max(1, int(repeats))):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs,
            "result": result}


def measure_interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict:
    """:func:`measure` of several functions taking turns within each repeat (A B C, A B C, …),
    so a drift in the load of a shared machine hits all of them alike. Returns ``{name: the
    dict measure returns}``."""
    out = {name: {"runs": [], "result": None} for name in fns}
    for _ in range(max(0, int(warmup))):
        for name, fn in fns.items():
            out[name]["result"] = fn()
    for _ in range(max(1, int(repeats))):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out[name]["result"] = fn()
            out[name]["runs"].append(time.perf_counter() - t0)
    for m in out.values():
        m.update(median=statistics.median(m["runs"]), min=min(m["runs"]), max=max(m["runs"]))
    return out


def row(bench: str, figure: str, value: float | None, unit: str, *, baseline: str | None = None,
        baseline_value: float | None = None, ratio: float | None = None, ratio_desc: str = "",
        goal: str | None = None, goal_met: bool | None = None, check: str | None = None,
        check_ok: bool | None = None, notes: str = "", runs=None, baseline_runs=None,
        extra: dict | None = None) -> dict:
    """One figure. ``ratio`` is "how the figure compares with its baseline" as ``ratio_desc`` says
    (e.g. "x faster", "x plain-step time", "of the iteration"); ``check`` / ``check_ok`` report a
    correctness comparison done in the same run (e.g. identical outputs)."""
    return {"bench": bench, "figure": figure, "value": value, "unit": unit, "baseline": baseline,
            "baseline_value": baseline_value, "ratio": ratio, "ratio_desc": ratio_desc, "goal": goal,
            "goal_met": goal_met, "check": check, "check_ok": check_ok, "notes": notes,
            "runs": runs, "baseline_runs": baseline_runs, "extra": extra or {}}


def fmt(value, unit: str = "") -> str:
    """Human formatting: seconds as µs/ms/s, bytes as MiB, others with 3 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit == "s":
        v = float(value)
        if v < 1e-3:
            return f"{v * 1e6:.0f} µs"
        if v < 1:
            return f"{v * 1e3:.1f} ms"
        return f"{v:.2f} s"
    if unit == "MiB":
        return f"{float(value):.1f} MiB"
    if unit == "%":
        return f"{100 * float(value):.1f} %"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,} {unit}".strip()
    v = float(value)
    text = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{text} {unit}".strip()


def _ratio_text(r: dict) -> str:
    if r.get("ratio") is None:
        return "–"
    if r.get("ratio_desc", "").startswith("of "):
        return f"{100 * r['ratio']:.1f} % {r['ratio_desc']}"
    return f"{r['ratio']:.3g}{r.get('ratio_desc') or '×'}"


def markdown_table(rows: list[dict]) -> str:
    """The result rows as one markdown table (errors as rows too)."""
    head = ["bench", "figure", "measured", "baseline (same run)", "ratio", "goal", "check", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['bench']} | **error** | – | – | – | – | ✗ | {_cell(r['error'])} |")
            continue
        base = "–" if r.get("baseline") is None else (
            f"{r['baseline']}: {fmt(r['baseline_value'], r['unit'])}" if r.get("baseline_value") is not None
            else r["baseline"])
        goal = "–" if not r.get("goal") else r["goal"] + (
            "" if r.get("goal_met") is None else (" ✓" if r["goal_met"] else " ✗"))
        check = "–" if not r.get("check") else r["check"] + (
            "" if r.get("check_ok") is None else (" ✓" if r["check_ok"] else " ✗"))
        cells = [r["bench"], r["figure"], fmt(r["value"], r["unit"]), base, _ratio_text(r), goal, check,
                 r.get("notes", "")]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def dump_json(obj) -> str:
    """Indented JSON of ``obj`` made JSON-safe (NaN/inf → None, numpy scalars → Python,
    anything else, e.g. paths, → str)."""
    return json.dumps(json_safe(obj, default=str), indent=2, sort_keys=False) + "\n"
