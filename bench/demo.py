"""Per-stage wall times of the demo run, read from its manifests (``WORK_DIR/<stage>/manifest.json``).

Nothing is run: the figures are the ``wall_time_s`` the stage runner recorded the last time each
stage of ``work_dir`` (default ``work_dirs/demo_synthetic``, i.e. ``make demo``) completed, in the
order the stages started. A missing work dir gives one row saying so.
"""
from __future__ import annotations

from pathlib import Path

from bench.common import row
from pipeline.runtime.stage import read_manifest

NAME = "demo"
REPO = Path(__file__).resolve().parent.parent
DEFAULTS = dict(work_dir="work_dirs/demo_synthetic")


def run(cfg: dict, ctx) -> list[dict]:
    cfg = {**DEFAULTS, **cfg}
    wd = Path(cfg["work_dir"])
    wd = wd if wd.is_absolute() else REPO / wd
    mans = []
    if wd.is_dir():
        for d in sorted(p for p in wd.iterdir() if p.is_dir() and not p.name.startswith(".")):
            man = read_manifest(d)
            if man is not None and man.get("wall_time_s") is not None:
                mans.append(man)
    if not mans:
        return [row(NAME, f"demo per-stage wall times ({wd})", None, "s",
                    notes="no stage manifests there: run `make demo` first")]
    mans.sort(key=lambda m: m.get("started", ""))
    total = sum(float(m["wall_time_s"]) for m in mans)
    rows = []
    for m in mans:
        counts = m.get("counts") or {}
        what = ", ".join(f"{k} {v}" for k, v in list(counts.items())[:3] if isinstance(v, (int, float)))
        rows.append(row(NAME, f"demo stage `{m.get('stage')}`", float(m["wall_time_s"]), "s",
                        baseline="whole demo (sum of stages)", baseline_value=total,
                        ratio=float(m["wall_time_s"]) / total, ratio_desc="of the demo",
                        notes=f"started {m.get('started')}, device {m.get('device')}"
                              + (", resumed" if m.get("resumed") else "") + (f"; {what}" if what else "")))
    rows.append(row(NAME, f"demo total ({len(mans)} stages, {wd.name})", total, "s",
                    notes="sum of the recorded stage wall times (each stage's last completed run)"))
    return rows
