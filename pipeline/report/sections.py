"""Sections of the experiment report (``stages.report``) read from the work dir: training
curves and per-class IoU bars (:mod:`pipeline.report.plots`), the ablation table
(``WORK_DIR/ablation/results.json``, :mod:`pipeline.report.ablation_table`).
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.report.ablation_table import format_cell, table_columns
from pipeline.report.html import esc, final_scores, table
from pipeline.report.plots import (plot_dsrg_diagnostics, plot_iou_bars, plot_training_curves,
                                   read_scalars)

TRAINING = ("classifier", "segmenter", "upper_bound")
DSRG_NOTE = ("Per logging interval, on the training batches' output grid: cells labelled "
             "background / foreground by the seeds (cov_*_before) and after region growing "
             "(cov_*_after), cells predicted foreground (pred_fg), cells confident enough to grow "
             "(conf_*), and the two seeding-loss terms. Markers: predicted-foreground fraction "
             "of the final segmenter on the pseudo-mask images and on val (1 scale, no CRF); "
             "grey lines: their GT foreground fractions. A collapse to background shows as "
             "cov_bg_after → 1 and pred_fg → 0.")


def ablation_html(work_dir: Path) -> str:
    path = work_dir / "ablation" / "results.json"
    if not path.is_file():
        return "<p class=note>No ablation results (<code>make ablation</code>).</p>"
    res = json.loads(path.read_text())
    cols = table_columns(res)
    rows = [[esc(format_cell(r.get(k), kind)) for k, _, kind in cols] for r in res.get("rows", [])]
    return (table([t for _, t, _ in cols], rows, left=3)
            + f"<p class=note>Percentages; generated {esc(res.get('generated', '?'))}; variants in "
              f"{esc(work_dir / 'ablation')}.</p>")


def figures_html(work_dir: Path, man: dict, out_dir: Path) -> tuple[str, str, int]:
    """(training curves section, IoU bars section, number of PNGs)."""
    curves, n = [], 0
    for stage in TRAINING:
        recs = read_scalars(work_dir / stage / "train") if man[stage] or (work_dir / stage).is_dir() else []
        if recs and plot_training_curves(recs, f"{stage} ({len(recs)} logged iterations)",
                                         out_dir / f"curves_{stage}.png"):
            curves.append(f"<p><img src='curves_{stage}.png' alt='{stage} training curves'></p>")
            n += 1
            if plot_dsrg_diagnostics(recs, out_dir / f"dsrg_{stage}.png", f"{stage}: DSRG diagnostics",
                                     (man[stage] or {}).get("metrics")):
                curves.append(f"<p><img src='dsrg_{stage}.png' alt='{stage} DSRG diagnostics'></p>"
                              f"<p class=note>{DSRG_NOTE}</p>")
                n += 1
        else:
            curves.append(f"<p class=note>{esc(stage)}: no training log "
                          f"({'stage missing' if not man[stage] else 'no scalars.jsonl'}).</p>")
    curves.append(f"<p class=note>TensorBoard: <code>tensorboard --logdir {esc(work_dir)}</code></p>")
    ev, ub = (man[s]["metrics"] if man[s] else None for s in ("eval", "upper_bound"))
    series, names = {}, None
    for label, m in (("WSSS", ev), ("upper bound", ub)):
        s = final_scores(m)
        if s:
            names = names or s["class_names"]
            series[label] = s["IoU"]
    bars = "<p class=note>No per-class IoU yet (needs eval and/or upper_bound).</p>"
    if series and plot_iou_bars(names, series, out_dir / "iou_bars.png",
                                "per-class val IoU, final (CRF where enabled)"):
        bars = "<p><img src='iou_bars.png' alt='per-class IoU'></p>"
        n += 1
    return "".join(curves), bars, n
