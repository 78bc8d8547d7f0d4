"""Weakly-supervised object localisation from heatmaps: boxes, IoU and scores (numpy only).

* :func:`smallest_box_holding_mass` — the smallest axis-aligned rectangle holding a fraction
  (0.98) of the total mass of a non-negative map: the EP paper's box from the class-specific
  entropy weights λ^top5 (Wan et al. ICCV 2019, §4.3, Eq. 5; docs/ALGORITHMS.md §12). Exact;
  see its docstring for the algorithm and complexity.
* :func:`topk_lambda` — ``λ^top-k = Σ_{c ∈ top-k} λ^c`` from the per-class maps λ^c.
* :func:`cam_baseline_box` — the CAM baseline of Zhou et al. (CVPR 2016): box around the
  largest connected component of the min-max normalised map ``>= threshold`` (0.2).
* :func:`localize_image` — the boxes of one image by the three methods.
* :func:`box_iou` — IoU of boxes in inclusive pixel coordinates (as the VOC devkit).
* :class:`CorLocAccumulator`, :class:`Top1LocAccumulator` — CorLoc (Deselaers et al. 2010) and
  top-1 localisation accuracy (ImageNet / Zhou et al.).

Boxes are ``(x1, y1, x2, y2)`` with inclusive pixel bounds. Functions here return 0-based
boxes (``map[y1:y2+1, x1:x2+1]``); VOC XML boxes are 1-based (:func:`to_voc` / :func:`from_voc`
convert). IoU does not depend on the origin, only on both boxes using the same one.
"""
from __future__ import annotations

import numpy as np

__all__ = ["smallest_box_holding_mass", "box_mass", "topk_lambda", "cam_baseline_box", "box_iou",
           "to_voc", "from_voc", "localize_image", "CorLocAccumulator", "Top1LocAccumulator"]

_TOL = 1e-9          # relative tolerance of "holds >= fraction of the mass" (float round-off)


def _clean(weights) -> np.ndarray:
    w = np.nan_to_num(np.asarray(weights, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"expected a non-empty (H, W) map, got shape {w.shape}")
    return np.maximum(w, 0.0)


def box_mass(weights, box) -> float:
    """Sum of ``weights`` (negatives clipped to 0) inside the 0-based inclusive ``box``."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return float(_clean(weights)[y1:y2 + 1, x1:x2 + 1].sum())


def _first_last(cum: np.ndarray, slack: float) -> tuple[int, int]:
    """For a cumulative profile ``cum`` (length n+1, cum[0] = 0, cum[n] = 1): the largest
    start index whose mass before it is <= slack, and the smallest end index (exclusive) whose
    mass after it is <= slack. Every box holding >= 1 - slack lies within these limits."""
    start_max = int(np.searchsorted(cum, slack, side="right")) - 1
    end_min = int(np.searchsorted(cum, 1.0 - slack, side="left"))
    return max(start_max, 0), max(end_min, 1)


def smallest_box_holding_mass(weights, fraction: float = 0.98) -> tuple[int, int, int, int]:
    """Smallest axis-aligned rectangle holding ``>= fraction`` of the total mass of ``weights``.

    ``weights`` (H, W): non-negative map (negatives and NaN count as 0). Returns the 0-based
    inclusive box ``(x1, y1, x2, y2)`` of minimal area ``(x2-x1+1)(y2-y1+1)``; among boxes of
    equal area the one holding the most mass (then the first in (top, bottom, left) order).
    A map with no mass gives the whole image. "Holds" is ``mass >= fraction·total·(1 - 1e-9)``
    (round-off guard). The EP paper cites an external method ([4]) for this search; this is an
    exact search of our own:

    1. Normalise to total mass 1; 2-D prefix sums (row-cumulative ``R``, then column sums).
    2. Pruning (exact): a box holding ``f`` leaves at most ``1 - f`` outside, so its top row
       cannot lie below the row where the mass above reaches ``1 - f`` (likewise bottom, left,
       right). For f = 0.98 this leaves only a few candidate tops / bottoms / lefts / rights.
    3. For every candidate (top, bottom) pair the column masses of the strip give a
       non-decreasing prefix ``P`` over columns (weights >= 0), so for every left ``l`` the
       narrowest window is ``r = min{r : P[r] - P[l] >= f}`` — a ``searchsorted``. All pairs of
       a chunk (<= 1024 pairs) are searched at once by offsetting row ``p`` of ``P`` by ``4p``
       (keeps the flattened array sorted; round-off stays ~1e-12, far below the tolerance).
       Strips are visited shortest first and the search stops once ``height × w_min`` (w_min =
       narrowest column window of the whole map holding f) exceeds the best area found.

    Complexity: O(T·B·W·log(T·B·W)) time for T candidate tops and B candidate bottoms, at most
    O(H²·W·log(HW)) (vs O(H²W²) for trying every rectangle with a prefix-sum lookup, or the
    O(H²W) two-pointer scan this vectorises); memory O(HW + 1024·W).
    """
    w = _clean(weights)
    H, W = w.shape
    total = w.sum()
    if not total > 0:
        return 0, 0, W - 1, H - 1
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    w = w / total
    need = fraction * (1.0 - _TOL)
    slack = 1.0 - need
    row_cum = np.concatenate([[0.0], np.cumsum(w.sum(axis=1))])
    col_cum = np.concatenate([[0.0], np.cumsum(w.sum(axis=0))])
    row_cum /= row_cum[-1]
    col_cum /= col_cum[-1]
    t_max, b_min = _first_last(row_cum, slack)          # top <= t_max, bottom + 1 >= b_min
    l_max, _ = _first_last(col_cum, slack)
    R = np.zeros((H + 1, W))
    np.cumsum(w, axis=0, out=R[1:])                     # R[i, j] = Σ_{y<i} w[y, j]

    tops = np.arange(0, min(t_max, H - 1) + 1)
    ends = np.arange(max(b_min, 1), H + 1)              # exclusive bottom = bottom + 1
    pairs_t, pairs_e = np.meshgrid(tops, ends, indexing="ij")
    keep = pairs_e > pairs_t
    pairs_t, pairs_e = pairs_t[keep], pairs_e[keep]
    order = np.argsort(pairs_e - pairs_t, kind="stable")   # shortest strips first
    pairs_t, pairs_e = pairs_t[order], pairs_e[order]
    # any box is at least as wide as the narrowest column window holding `need` of the mass
    ends_c = np.searchsorted(col_cum, col_cum[:-1] + need, side="left")
    w_glob = int((ends_c - np.arange(W))[ends_c <= W].min(initial=1))
    lefts = np.arange(0, min(l_max, W - 1) + 1)
    best = None                                         # (area, -mass, t, e, l, r)
    # rows of one searchsorted: few enough that the 4p offsets keep ~1e-12 absolute precision
    per_chunk = 1024
    for s in range(0, len(pairs_t), per_chunk):
        t, e = pairs_t[s:s + per_chunk], pairs_e[s:s + per_chunk]
        if best is not None and int(e[0] - t[0]) * w_glob > best[0]:
            break                                       # every remaining strip is taller
        P = np.zeros((len(t), W + 1))
        np.cumsum(R[e] - R[t], axis=1, out=P[:, 1:])    # column prefix of each strip
        ok = P[:, W] >= need                            # the whole strip must hold enough
        if not ok.any():
            continue
        t, e, P = t[ok], e[ok], P[ok]
        n = len(t)
        offset = 4.0 * np.arange(n)[:, None]
        flat = (P + offset).ravel()
        query = P[:, lefts] + need + offset             # (n, L)
        idx = np.searchsorted(flat, query.ravel(), side="left").reshape(n, len(lefts))
        r = idx - np.arange(n)[:, None] * (W + 1)       # exclusive right edge in P's index
        valid = r <= W
        area = np.where(valid, (r - lefts[None, :]) * (e - t)[:, None], (W + 1) * (H + 1))
        a_min = int(area.min())
        if a_min > H * W or (best is not None and a_min > best[0]):
            continue
        ps, ls = np.nonzero(area == a_min)
        rs = r[ps, ls]
        mass = P[ps, rs] - P[ps, lefts[ls]]
        j = np.lexsort((rs, lefts[ls], e[ps], t[ps], -mass))[0]
        key = (a_min, -float(mass[j]), int(t[ps[j]]), int(e[ps[j]]), int(lefts[ls[j]]), int(rs[j]))
        if best is None or key < best:
            best = key
    if best is None:                                    # only with fraction ~ 1 and round-off
        return 0, 0, W - 1, H - 1
    _, _, t, e, l_, r_ = best
    return l_, t, r_ - 1, e - 1


def topk_lambda(lambda_c, scores, k: int = 5, classes=None) -> tuple[np.ndarray, list[int]]:
    """``λ^top-k = Σ_{c ∈ S} λ^c`` (EP paper §4.3) for per-class maps ``lambda_c`` (K, H, W).

    ``S`` = the ``min(k, K)`` channels with the highest ``scores`` (K,), or ``classes`` (channel
    indices, e.g. the image's own classes) when given. Returns ``(map (H, W), S)``.
    """
    lc = np.asarray(lambda_c, dtype=np.float64)
    if classes is not None:
        chosen = [int(c) for c in classes]
    else:
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        chosen = [int(c) for c in order[:max(1, min(int(k), lc.shape[0]))]]
    return lc[chosen].sum(axis=0), chosen


def cam_baseline_box(heatmap, threshold: float = 0.2) -> tuple[int, int, int, int]:
    """Zhou et al. (CVPR 2016) CAM localisation: min-max normalise the map (as their released
    code: ``cam - min``, then ``/ max``), segment ``normalised >= threshold`` and return the
    bounding box (0-based inclusive) of the largest 8-connected component. A constant map gives
    the whole image."""
    import cv2

    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float64), nan=0.0)
    H, W = h.shape
    lo, hi = h.min(), h.max()
    if not hi > lo:
        return 0, 0, W - 1, H - 1
    mask = ((h - lo) >= threshold * (hi - lo)).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y = int(stats[k, cv2.CC_STAT_LEFT]), int(stats[k, cv2.CC_STAT_TOP])
    return x, y, x + int(stats[k, cv2.CC_STAT_WIDTH]) - 1, y + int(stats[k, cv2.CC_STAT_HEIGHT]) - 1


def box_iou(a, b) -> float:
    """IoU of two inclusive-coordinate boxes ``(x1, y1, x2, y2)`` (areas count pixels:
    ``(x2 - x1 + 1)(y2 - y1 + 1)``, as the VOC devkit)."""
    ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    area = lambda q: (q[2] - q[0] + 1) * (q[3] - q[1] + 1)  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))


def to_voc(box) -> tuple[int, int, int, int]:
    """0-based inclusive box → VOC 1-based inclusive box."""
    return tuple(int(v) + 1 for v in box)


def from_voc(box) -> tuple[int, int, int, int]:
    """VOC 1-based inclusive box → 0-based inclusive box."""
    return tuple(int(v) - 1 for v in box)


def _hit(box, gt, cls: int, thr: float) -> bool:
    return any(int(g[0]) == cls and box_iou(box, g[1:]) >= thr for g in gt)


class CorLocAccumulator:
    """CorLoc (Deselaers et al. ECCV 2010): for each class c, the fraction of images containing
    c (by their GT boxes) whose predicted box for c has IoU >= ``iou_threshold`` with some GT
    box of c; ``corloc`` is the mean over the classes seen. GT boxes ``(c, x1, y1, x2, y2)`` and
    predictions must use the same coordinate origin."""

    def __init__(self, iou_threshold: float = 0.5):
        self.thr = float(iou_threshold)
        self.hits: dict[int, int] = {}
        self.total: dict[int, int] = {}

    def add(self, pred: dict, gt) -> dict[int, bool]:
        """``pred`` {class: box}; a class of ``gt`` without a prediction counts as a miss.
        Returns {class: hit} for this image."""
        out = {}
        for c in sorted({int(g[0]) for g in gt}):
            ok = c in pred and pred[c] is not None and _hit(pred[c], gt, c, self.thr)
            self.total[c] = self.total.get(c, 0) + 1
            self.hits[c] = self.hits.get(c, 0) + int(ok)
            out[c] = bool(ok)
        return out

    def result(self) -> dict:
        per = {c: self.hits[c] / self.total[c] for c in sorted(self.total)}
        return {"corloc": float(np.mean(list(per.values()))) if per else None,
                "per_class": per, "pairs": int(sum(self.total.values())),
                "hits": int(sum(self.hits.values()))}


class Top1LocAccumulator:
    """Top-1 localisation accuracy: an image counts as correct when its top-1 predicted class
    is one of its GT classes AND the box predicted for it has IoU >= ``iou_threshold`` with a GT
    box of that class (ImageNet protocol; for multi-label images "correct class" = any of the
    image's classes). Also reports the top-1 classification accuracy alone."""

    def __init__(self, iou_threshold: float = 0.5):
        self.thr = float(iou_threshold)
        self.n = self.cls_ok = self.loc_ok = 0

    def add(self, top1: int, box, gt) -> bool:
        if not gt:
            return False
        self.n += 1
        cls_ok = any(int(g[0]) == int(top1) for g in gt)
        ok = cls_ok and box is not None and _hit(box, gt, int(top1), self.thr)
        self.cls_ok += int(cls_ok)
        self.loc_ok += int(ok)
        return bool(ok)

    def result(self) -> dict:
        return {"top1_loc": self.loc_ok / self.n if self.n else None,
                "top1_cls": self.cls_ok / self.n if self.n else None, "images": self.n}


def localize_image(maps: dict, labels: list[int], *, topk: int, mass: float, cam_threshold: float,
                   use_image_classes: bool, extra_classes=()) -> dict:
    """Boxes (0-based) of one image from :func:`pipeline.heatmaps.image_heatmaps` maps; classes
    are dataset indices (map k = class k + 1). λ^top-k (over the image's classes ``labels`` when
    ``use_image_classes``, else the top-k scores) → its ``mass`` box; per class c ∈ ``labels`` ∪
    ``extra_classes`` ∪ {top-1 class}: the ``mass`` box of λ^c and the CAM baseline box at
    ``cam_threshold`` (docs/ALGORITHMS.md §12)."""
    K = maps["cam"].shape[0]
    scores = maps["scores"]
    top1 = int(np.argmax(scores)) + 1
    use_img = use_image_classes and labels
    lt, chosen = topk_lambda(maps["lambda_c"], scores, topk,
                             classes=[c - 1 for c in labels] if use_img else None)
    thr = cam_threshold
    box_topk = smallest_box_holding_mass(lt, mass)
    classes = sorted(set(labels) | {int(c) for c in extra_classes} | {top1})
    return {"top1": top1, "topk": [c + 1 for c in chosen], "lambda_topk_map": lt,
            "lambda_topk": box_topk,
            "lambda_c": {c: smallest_box_holding_mass(maps["lambda_c"][c - 1], mass) for c in classes},
            "cam": {c: cam_baseline_box(maps["cam"][c - 1], thr) for c in classes},
            "scores": {c + 1: float(scores[c]) for c in range(K)}}
