"""Diagnostics of DSRG training: where the grid's labels come from and what the network predicts.

Pure functions on tensors/arrays, logged through the training loss's non-optimised scalars
(:func:`pipeline.dsrg.dsrg_losses`) and the segmenter stage's metrics. They make a collapse to
background visible (a network that predicts background everywhere, fed by background growing):

* :func:`growing_fractions` — on the output grid, the fraction of cells labelled background /
  foreground by the cues before growing and by the grown seeds after (DSRG, Huang et al.
  CVPR 2018, §3.2; docs/ALGORITHMS.md §5). A cell with several labels counts in each group.
* :func:`confident_fractions` — the fraction of cells growing may claim: the growing map
  (CRF output Q or P) has background as its most probable image class with probability
  > ``bg_threshold``, or a foreground class with probability > ``fg_threshold`` (the growing
  rule of docs/ALGORITHMS.md §5.3 step 2, before connectivity).
* :func:`predicted_fg_fraction` — the fraction of cells whose argmax over all classes is not
  background.
* :func:`confusion_fg_fractions` — from a confusion matrix (rows GT, columns prediction, GT
  void already excluded): the fraction of scored pixels predicted foreground and the fraction
  that is foreground in the GT.
* :func:`grid_label_counts` / :func:`grid_label_rates` — grid labels (cues or grown seeds)
  against the GT sampled to the same grid: how many background labels fall on GT foreground,
  and which share of the GT foreground is labelled background only / with its own class /
  not at all (offline check, ``python -m stages.growing_check``).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["growing_fractions", "confident_fractions", "predicted_fg_fraction",
           "confusion_fg_fractions", "growing_diagnostics", "grid_label_counts", "grid_label_rates"]


def growing_fractions(cues: torch.Tensor, grown: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"cov_bg_before", "cov_fg_before", "cov_bg_after", "cov_fg_after"}`` of (B,C,h,w)
    bool cue / grown-seed maps (channel 0 = background): mean over all B·h·w cells of
    ``map[:, 0]`` (background) and of ``map[:, 1:].any(1)`` (any foreground class)."""
    out = {}
    for when, m in (("before", cues), ("after", grown)):
        m = m.bool()
        out[f"cov_bg_{when}"] = m[:, 0].float().mean()
        out[f"cov_fg_{when}"] = m[:, 1:].any(dim=1).float().mean()
    return out


def confident_fractions(grow_map: torch.Tensor, image_classes: torch.Tensor,
                        fg_threshold: float, bg_threshold: float) -> dict[str, torch.Tensor]:
    """``{"conf_bg", "conf_fg"}``: fractions of cells where, over the image's classes S
    (background always in S), c* = argmax_{c∈S} M_c is background with M_0 > ``bg_threshold``,
    resp. a foreground class with M_{c*} > ``fg_threshold`` (``grow_map`` M: (B,C,h,w))."""
    classes = image_classes.to(grow_map.device).bool().clone()
    classes[:, 0] = True
    p, k = grow_map.float().masked_fill(~classes[:, :, None, None], -1.0).max(dim=1)
    return {"conf_bg": ((k == 0) & (p > bg_threshold)).float().mean(),
            "conf_fg": ((k > 0) & (p > fg_threshold)).float().mean()}


def predicted_fg_fraction(probs: torch.Tensor) -> torch.Tensor:
    """Fraction of cells of (B,C,h,w) ``probs`` whose argmax over all C classes is not 0."""
    return (probs.argmax(dim=1) != 0).float().mean()


def growing_diagnostics(probs, grow_map, cues, grown, image_classes, fg_threshold: float,
                        bg_threshold: float) -> dict[str, torch.Tensor]:
    """All per-batch scalars above, detached: ``pred_fg`` (argmax of P), ``conf_bg`` /
    ``conf_fg`` (on the growing map), ``cov_{bg,fg}_{before,after}``."""
    with torch.no_grad():
        out = {"pred_fg": predicted_fg_fraction(probs.detach())}
        out.update(confident_fractions(grow_map.detach(), image_classes, fg_threshold, bg_threshold))
        out.update(growing_fractions(cues, grown))
    return out


def confusion_fg_fractions(mat) -> dict[str, float | None]:
    """``{"pred_fg", "gt_fg"}`` of a (C,C) confusion matrix (rows GT, columns prediction, class
    0 background): Σ_{g, p≥1} M[g,p] / Σ M and Σ_{g≥1, p} M[g,p] / Σ M (None when empty)."""
    m = np.asarray(mat, dtype=np.float64)
    total = m.sum()
    if total <= 0:
        return {"pred_fg": None, "gt_fg": None}
    return {"pred_fg": float(m[:, 1:].sum() / total), "gt_fg": float(m[1:, :].sum() / total)}


def grid_label_counts(labels: torch.Tensor, gt: torch.Tensor) -> dict[str, int]:
    """Counts of (B,C,h,w) bool multi-hot grid labels (cues or grown seeds) against (B,h,w) GT
    labels on the same grid (255 = void, not counted): ``gt_fg_cells`` (GT foreground cells),
    ``bg_cells`` / ``bg_on_gt_fg`` (cells labelled background / those of them that are GT
    foreground), and of the GT foreground cells: ``gt_fg_bg_only`` (background and no
    foreground label), ``gt_fg_correct`` (their GT class among the labels), ``gt_fg_unlabelled``."""
    labels = labels.bool()
    gt = gt.long()
    fg = (gt > 0) & (gt != 255)
    bg_lab, fg_lab = labels[:, 0], labels[:, 1:].any(dim=1)
    own = labels.gather(1, torch.where(fg, gt, torch.zeros_like(gt)).unsqueeze(1))[:, 0] & fg
    valid = gt != 255
    counts = {"gt_fg_cells": fg, "bg_cells": bg_lab & valid, "bg_on_gt_fg": bg_lab & fg,
              "gt_fg_bg_only": fg & bg_lab & ~fg_lab, "gt_fg_correct": own,
              "gt_fg_unlabelled": fg & ~bg_lab & ~fg_lab}
    return {k: int(v.sum()) for k, v in counts.items()}


def grid_label_rates(counts: dict) -> dict[str, float | None]:
    """Rates of :func:`grid_label_counts` (summed over images): ``bg_precision_loss`` = share of
    background-labelled cells that are GT foreground; ``fg_as_bg``, ``fg_correct``,
    ``fg_unlabelled`` = shares of the GT foreground cells."""
    def ratio(a, b):
        return None if counts[b] == 0 else counts[a] / counts[b]
    return {"bg_precision_loss": ratio("bg_on_gt_fg", "bg_cells"),
            "fg_as_bg": ratio("gt_fg_bg_only", "gt_fg_cells"),
            "fg_correct": ratio("gt_fg_correct", "gt_fg_cells"),
            "fg_unlabelled": ratio("gt_fg_unlabelled", "gt_fg_cells")}
