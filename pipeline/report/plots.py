"""Figures of the HTML report (`make report`): training curves and per-class IoU bars.

Matplotlib with the Agg backend (no display needed); every function writes one PNG and returns
whether it did. Training scalars are read from the training loop's ``<train_dir>/scalars.jsonl``
(:mod:`pipeline.runtime.training`: one JSON object per line with ``iter``, ``loss``, ``lr``, ... keys;
a resumed run appends, and the later line wins where iterations repeat) and, for work dirs
trained before it, from mmengine's ``<train_dir>/<timestamp>/vis_data/scalars.json`` (same
layout, one file per run, read first in time order).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

__all__ = ["read_scalars", "plot_training_curves", "plot_dsrg_diagnostics", "plot_iou_bars",
           "DSRG_DIAGNOSTICS"]

# logged keys that are not worth a curve
SKIP_KEYS = {"iter", "step", "epoch", "time", "data_time", "memory", "lr", "base_lr"}


def read_scalars(train_dir: str | os.PathLike) -> list[dict]:
    """Records ``{"iter": int, key: float, ...}`` of the scalars files of ``train_dir``, sorted
    by iteration (one record per iteration; later lines and files override earlier ones)."""
    by_iter: dict[int, dict] = {}
    train_dir = Path(train_dir)
    for path in [*sorted(train_dir.glob("*/vis_data/scalars.json")), train_dir / "scalars.jsonl"]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue                          # a line cut by an interruption
            if not isinstance(rec, dict) or "iter" not in rec:
                continue
            clean = {k: float(v) for k, v in rec.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
            by_iter.setdefault(int(rec["iter"]), {}).update(clean)
    return [{**by_iter[i], "iter": i} for i in sorted(by_iter)]


def _series(records, key):
    pts = [(r["iter"], r[key]) for r in records if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_training_curves(records: list[dict], title: str, path: str | os.PathLike) -> bool:
    """Losses (left), learning rate (middle) and any other logged scalar (right) vs iteration."""
    if not records:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in records for k in r} - SKIP_KEYS)
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if "loss" not in k and not k.endswith("_s")]
    panels = [("loss", losses)] + ([("learning rate", ["lr"])] if any("lr" in r for r in records) else [])
    if others:
        panels.append(("other scalars", others))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, ks) in zip(axes[0], panels):
        for k in ks:
            x, y = _series(records, k)
            if x:
                ax.plot(x, y, label=k, lw=1.2, marker="." if len(x) < 30 else None)
        ax.set_xlabel("iteration")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        if name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        elif len(ks) > 1 or name == "loss":
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# the DSRG collapse diagnostics of the training log (pipeline.dsrg_diagnostics): panel -> keys
DSRG_DIAGNOSTICS = {
    "grid cells labelled / predicted": ("cov_bg_before", "cov_bg_after", "cov_fg_before",
                                        "cov_fg_after", "pred_fg"),
    "cells confident enough to grow": ("conf_bg", "conf_fg"),
    "seeding loss terms": ("seed_bg", "seed_fg"),
}


def plot_dsrg_diagnostics(records: list[dict], path: str | os.PathLike, title: str = "",
                          final: dict | None = None) -> bool:
    """The DSRG diagnostics vs iteration, one panel per :data:`DSRG_DIAGNOSTICS` group (False
    when the records hold none). ``final``: the segmenter's end-of-training fractions
    (``val_pred_fg``, ``train_pred_fg``, ``train_gt_fg``, ``val_gt_fg``), drawn as markers at
    the last iteration (predicted) and dotted lines (GT) on the first panel."""
    panels = [(name, [k for k in keys if any(k in r for r in records)])
              for name, keys in DSRG_DIAGNOSTICS.items()]
    panels = [(n, ks) for n, ks in panels if ks]
    if not panels:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    final = {k: v for k, v in (final or {}).items() if v is not None}
    last = max(r["iter"] for r in records)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    for j, (ax, (name, ks)) in enumerate(zip(axes[0], panels)):
        for k in ks:
            x, y = _series(records, k)
            colour = "tab:green" if k == "pred_fg" else "tab:blue" if "bg" in k else "tab:red"
            ax.plot(x, y, label=k, lw=1.2, ls="--" if k.endswith("_before") else "-", color=colour,
                    marker="." if len(x) < 30 else None)
        if j == 0:
            for key, mark in (("train_pred_fg", "o"), ("val_pred_fg", "s")):
                if key in final:
                    ax.plot([last], [final[key]], mark, ms=7, color="tab:green", mfc="none",
                            label=f"{key} (end)")
            for key, ls in (("train_gt_fg", ":"), ("val_gt_fg", "-.")):
                if key in final:
                    ax.axhline(final[key], color="grey", ls=ls, lw=1, label=key)
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("iteration")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_iou_bars(class_names: list[str], series: dict[str, list], path: str | os.PathLike,
                  title: str = "per-class IoU (%)") -> bool:
    """Grouped bars: one group per class, one bar per series (values in [0, 1] or None/NaN)."""
    series = {k: v for k, v in series.items() if v is not None}
    if not class_names or not series:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n, m = len(class_names), len(series)
    width = 0.8 / m
    x = np.arange(n)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * n * max(1, m) / 1.5 + 2), 3.4))
    for j, (label, vals) in enumerate(series.items()):
        v = np.array([np.nan if a is None else 100.0 * float(a) for a in vals], dtype=float)
        ax.bar(x - 0.4 + width * (j + 0.5), np.nan_to_num(v), width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(class_names, rotation=45 if n > 8 else 0, ha="right" if n > 8 else "center",
                       fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
