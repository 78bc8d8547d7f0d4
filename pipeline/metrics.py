"""Segmentation, classification and seed-quality metrics (pure numpy; torch only for all_reduce).

Confusion matrix ``M`` (rows = ground truth, columns = prediction), accumulated over a whole
split with GT 255 ignored (docs/ALGORITHMS.md §9.2, the VOC protocol):

* ``IoU_c = M_cc / (Σ_j M_cj + Σ_i M_ic − M_cc)``  (TP / (TP + FN + FP));
  undefined (NaN) for a class absent from both GT and prediction.
* ``mIoU`` = mean of IoU_c over the classes present in GT or prediction (NaN-mean).
* pixel accuracy ``aAcc = Σ_c M_cc / Σ M``; class accuracy ``Acc_c = M_cc / Σ_j M_cj``
  (NaN for classes absent from GT); mean accuracy = NaN-mean of Acc_c.
* frequency-weighted IoU ``fwIoU = Σ_c (Σ_j M_cj / Σ M) · IoU_c`` over the classes present in GT.

All values are fractions in [0, 1]; :func:`format_table` prints percentages.
These definitions match mmseg's ``IoUMetric`` (union over GT-valid pixels, NaN-mean).
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.voc import IGNORE_INDEX


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _nanmean(v: np.ndarray) -> float:
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


class ConfusionMatrix:
    """Accumulating ``num_classes × num_classes`` confusion matrix (rows GT, columns prediction)."""

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = int(num_classes)
        self.mat = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, gt) -> None:
        """Add one image (or a batch): ``pred`` and ``gt`` integer arrays of the same shape.

        GT pixels equal to 255 are ignored. Raises ValueError for prediction values outside
        ``0..num_classes-1`` (at any pixel) or GT values outside ``0..num_classes-1`` ∪ {255}.
        """
        pred, gt = _np(pred), _np(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
        pred = pred.astype(np.int64).ravel()
        gt = gt.astype(np.int64).ravel()
        n = self.num_classes
        if pred.size and (pred.min() < 0 or pred.max() >= n):
            raise ValueError(f"prediction values must lie in 0..{n - 1}, got {np.unique(pred[(pred < 0) | (pred >= n)])[:10]}")
        keep = gt != IGNORE_INDEX
        gt, pred = gt[keep], pred[keep]
        if gt.size and (gt.min() < 0 or gt.max() >= n):
            raise ValueError(f"ground-truth values must lie in 0..{n - 1} or be 255")
        self.mat += np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)

    def reduce_(self, group=None) -> "ConfusionMatrix":
        """Sum the matrix over all ranks with ``torch.distributed.all_reduce`` (in place).

        No-op when torch.distributed is unavailable or not initialised. With the NCCL
        backend the reduction runs on the current CUDA device.
        """
        try:
            import torch
            import torch.distributed as dist
        except ImportError:  # pragma: no cover
            return self
        if not (dist.is_available() and dist.is_initialized()):
            return self
        device = "cpu"
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        t = torch.from_numpy(self.mat.copy()).to(device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        self.mat = t.cpu().numpy().astype(np.int64)
        return self

    def summary(self, class_names=None) -> dict:
        """Return ``{"IoU": [...], "Acc": [...], "mIoU", "aAcc", "mAcc", "fwIoU", "class_names",
        "present": [...], "pixels"}``; per-class entries are ``nan`` for undefined classes."""
        m = self.mat.astype(np.float64)
        tp = np.diag(m)
        gt_count = m.sum(1)
        pred_count = m.sum(0)
        union = gt_count + pred_count - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt_count > 0, tp / gt_count, np.nan)
        total = m.sum()
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        fw = float(np.nansum(gt_count / total * np.nan_to_num(iou))) if total > 0 else float("nan")
        return {
            "class_names": names,
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
            "present": (union > 0).tolist(),
            "mIoU": _nanmean(iou),
            "aAcc": float(tp.sum() / total) if total > 0 else float("nan"),
            "mAcc": _nanmean(acc),
            "fwIoU": fw,
            "pixels": int(total),
        }


def format_table(summary: dict, digits: int = 2) -> str:
    """Text table (percentages) of a :meth:`ConfusionMatrix.summary`; undefined classes show '-'."""
    names = summary["class_names"]
    w = max(12, max(len(n) for n in names) + 2)

    def f(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f}"

    lines = [f"{'class':<{w}}{'IoU':>9}{'Acc':>9}", "-" * (w + 18)]
    for n, i, a in zip(names, summary["IoU"], summary["Acc"]):
        lines.append(f"{n:<{w}}{f(i):>9}{f(a):>9}")
    lines.append("-" * (w + 18))
    for key in ("mIoU", "mAcc", "aAcc", "fwIoU"):
        lines.append(f"{key:<{w}}{f(summary[key]):>9}")
    return "\n".join(lines)


def average_precision(scores, targets) -> dict:
    """Per-class average precision and mAP of multi-label scores (docs/ALGORITHMS.md §9.3).

    ``scores`` (N, K) real, ``targets`` (N, K) in {0, 1}. For class k, with samples ranked by
    decreasing score and thresholds at every distinct score value (tied scores form one
    operating point), ``AP_k = Σ_n (R_n − R_{n−1}) · P_n`` (non-interpolated AP, the
    scikit-learn ``average_precision_score`` definition). Classes with no positive sample have
    undefined AP: they get ``nan`` and are skipped in ``mAP``.
    Returns ``{"AP": [K floats], "mAP": float}``.
    """
    s, t = _np(scores).astype(np.float64), _np(targets).astype(np.int64)
    if s.ndim == 1:
        s, t = s[:, None], t[:, None]
    if s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} differ in shape")
    aps = []
    for k in range(s.shape[1]):
        y = t[:, k] > 0
        if not y.any():
            aps.append(float("nan"))
            continue
        order = np.argsort(-s[:, k], kind="mergesort")
        sk, yk = s[order, k], y[order]
        tp = np.cumsum(yk)
        # last index of each group of equal scores = one threshold
        last = np.r_[np.nonzero(np.diff(sk))[0], sk.size - 1]
        tp_t = tp[last]
        prec = tp_t / (last + 1)
        rec = tp_t / y.sum()
        aps.append(float(np.sum(np.diff(np.r_[0.0, rec]) * prec)))
    aps_a = np.array(aps)
    return {"AP": aps, "mAP": _nanmean(aps_a)}


class SeedQuality:
    """Quality of partial label maps (seeds; 255 = unlabelled), accumulated over images
    (docs/ALGORITHMS.md §9.2).

    Over pixels with GT ≠ 255 (``valid``), with ``labelled`` = valid pixels whose seed ≠ 255:

    * precision = #(labelled and seed == GT) / #labelled
    * recall    = #(labelled and seed == GT) / #valid
    * fraction_labelled = #labelled / #valid
    * bg_precision / fg_precision = precision of the labelled pixels whose seed is background
      (0) / a foreground class (≥ 1): how far each cue can be trusted
    * per-class IoU / mIoU computed with a confusion matrix restricted to labelled pixels
      (i.e. IoU of the seeds where they exist; unlabelled pixels count neither as FP nor FN).
    """

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)
        self.cm = ConfusionMatrix(num_classes)
        self.valid = 0
        self.labelled = 0
        self.correct = 0

    def update(self, seeds, gt) -> None:
        seeds, gt = _np(seeds).astype(np.int64), _np(gt).astype(np.int64)
        if seeds.shape != gt.shape:
            raise ValueError(f"seed shape {seeds.shape} != ground-truth shape {gt.shape}")
        valid = gt != IGNORE_INDEX
        lab = valid & (seeds != IGNORE_INDEX)
        self.valid += int(valid.sum())
        self.labelled += int(lab.sum())
        self.correct += int((lab & (seeds == gt)).sum())
        self.cm.update(seeds[lab], gt[lab])

    def summary(self, class_names=None) -> dict:
        s = self.cm.summary(class_names)
        nan = float("nan")
        m = self.cm.mat
        n_bg, n_fg = int(m[:, 0].sum()), int(m[:, 1:].sum())
        return {
            "precision": self.correct / self.labelled if self.labelled else nan,
            "bg_precision": int(m[0, 0]) / n_bg if n_bg else nan,
            "fg_precision": int(np.trace(m[1:, 1:])) / n_fg if n_fg else nan,
            "recall": self.correct / self.valid if self.valid else nan,
            "fraction_labelled": self.labelled / self.valid if self.valid else nan,
            "IoU": s["IoU"],
            "mIoU": s["mIoU"],
            "class_names": s["class_names"],
            "valid_pixels": self.valid,
            "labelled_pixels": self.labelled,
        }
