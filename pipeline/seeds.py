"""Seed (partial label map) generation from class heatmaps and saliency; DSRG/SEC cue export.

Seeds follow the recipe of the EP paper (Wan et al. ICCV 2019) §4.4 and DSRG
(docs/ALGORITHMS.md §3): a pixel is foreground for a class c when it lies in the "top 30%" of
the class heatmap, background when its normalised saliency is < 0.06, and ignored (255) when
unclaimed or claimed by both foreground and background. Without a saliency model the
background can come from the heatmaps alone (every class map of the image at most 0.05, IRN's
rule), or from both cues at once (:func:`background_cues`). Labels are dataset indices: 0
background, classes[k] for heatmap k, 255 ignore.
"""
from __future__ import annotations


import numpy as np

from pipeline.geometry import cell_pixels, input_len_for_grid, pixel_cells
from pipeline.voc import IGNORE_INDEX


def _fg_claims(heatmaps: np.ndarray, fg_top: float, fg_mode: str, fg_min: float = 0.0) -> np.ndarray:
    """Boolean (K, H, W): pixels claimed as foreground by each class map.

    * ``'relative'``: ``h_c(x) >= (1 - fg_top) · max h_c``  (DSRG/SEC style threshold).
    * ``'rank'``: the ``n = round(fg_top · H · W)`` highest pixels; with ``t`` the n-th largest
      value, every pixel with ``h_c >= t`` is claimed, so pixels tied with the cut value are all
      included (the claim can exceed n pixels when values tie).
    In both modes pixels with ``h_c <= 0`` are never claimed (an all-zero map claims nothing).
    ``fg_min > 0`` adds a confidence floor, ``h_c >= fg_min · max h_c``: with ``'rank'`` the claim
    is the top ``fg_top`` share *and* the confident band of the map; the rest of the share is left
    unlabelled (the ignore zone), for DSRG's growing to decide.
    """
    k, h, w = heatmaps.shape
    if not 0.0 <= fg_top <= 1.0:
        raise ValueError(f"fg_top must lie in [0, 1], got {fg_top}")
    flat = heatmaps.reshape(k, -1)
    if fg_mode == "relative":
        thr = (1.0 - fg_top) * flat.max(axis=1, initial=0.0)
    elif fg_mode == "rank":
        n = int(round(fg_top * h * w))
        if n == 0:
            return np.zeros_like(heatmaps, dtype=bool)
        thr = -np.partition(-flat, n - 1, axis=1)[:, n - 1] if flat.size else np.zeros(k)
    else:
        raise ValueError(f"fg_mode must be 'relative' or 'rank', got {fg_mode!r}")
    claims = (heatmaps >= thr[:, None, None]) & (heatmaps > 0)
    if fg_min > 0:
        claims &= heatmaps >= fg_min * flat.max(axis=1, initial=0.0)[:, None, None]
    return claims


BG_SOURCES = ("saliency", "cam", "both")


def background_cues(heatmaps, saliency=None, *, bg_source: str, bg_sal: float,
                    bg_cam: float) -> tuple[np.ndarray, np.ndarray]:
    """``(background, veto)``, boolean (H, W) each (docs/ALGORITHMS.md §3): the pixels labelled
    background, and the pixels where a background cue withdraws a foreground claim.

    * ``'saliency'`` (EP paper §4.4, DSRG): ``s(u) < bg_sal``;
    * ``'cam'`` (Ahn et al. CVPR 2019, IRN's ``conf_bg_thres`` = 0.05 on max-normalised CAMs):
      ``max_c h_c(u) <= bg_cam`` over the image's class maps ``h_c`` (each normalised by its
      max); IRN pads the maps with a constant ``bg_cam`` background map and takes the argmax,
      whose ties go to the background, hence ``<=``. An image without classes is all
      background. IRN also refines this map with a dense CRF; here it is used as it is;
    * ``'both'``: background where both rules hold (AND), so the background seeds are as precise
      as the two cues together make them (DSRG's growing extends them afterwards); each cue
      keeps its veto on foreground claims (OR), as it has alone: saliency still withdraws the
      class maps' spill onto non-salient background.
    With one cue, ``veto`` equals ``background``. ``saliency`` may be None with ``'cam'``.
    """
    hm = np.asarray(heatmaps, dtype=np.float64)
    if hm.ndim == 2:
        hm = hm[None]
    if bg_source not in BG_SOURCES:
        raise ValueError(f"bg_source must be one of {BG_SOURCES}, got {bg_source!r}")
    cam_bg = hm.max(axis=0, initial=-np.inf) <= bg_cam if bg_source != "saliency" else None
    if bg_source == "cam":
        return cam_bg, cam_bg
    if saliency is None:
        raise ValueError(f"bg_source={bg_source!r} needs a saliency map")
    sal = np.asarray(saliency, dtype=np.float64)
    if sal.shape != hm.shape[1:]:
        raise ValueError(f"saliency shape {sal.shape} != heatmap size {hm.shape[1:]}")
    sal_bg = sal < bg_sal
    if cam_bg is None:
        return sal_bg, sal_bg
    return sal_bg & cam_bg, sal_bg | cam_bg


def make_seeds(heatmaps, classes, saliency, *, fg_top: float, fg_mode: str, bg_sal: float,
               overlap: str, bg_source: str, bg_cam: float, fg_min: float = 0.0) -> np.ndarray:
    """Seed label map (H, W) uint8 from per-class heatmaps and a saliency map.

    Args:
        heatmaps: (K_img, H, W) float, each map normalised to [0, 1] (by its max).
        classes: K_img dataset indices (>= 1) of the heatmaps.
        saliency: (H, W) in [0, 1]; may be None with ``bg_source='cam'``.
        fg_top, fg_mode, fg_min: foreground rule, see :func:`_fg_claims` (EP paper §4.4: top
            30 %; ``fg_min`` a confidence floor, 0 = none).
        bg_source, bg_sal, bg_cam: background rule, see :func:`background_cues` (EP paper §4.4:
            ``saliency < bg_sal``).
        overlap: a pixel claimed by several classes gets the claimant with the highest
            (normalised) heatmap value (``'max'``; an exact tie for the highest value → 255),
            or 255 (``'ignore'``).
    Rules, in order: a pixel that is foreground (for any class, before overlap resolution) and
    vetoed by a background cue → 255; unclaimed by both → 255; background only → 0.
    """
    hm = np.asarray(heatmaps, dtype=np.float64)
    if hm.ndim == 2:
        hm = hm[None]
    classes = [int(c) for c in classes]
    if hm.ndim != 3 or hm.shape[0] != len(classes):
        raise ValueError(f"heatmaps shape {hm.shape} does not match {len(classes)} classes")
    if any(c < 1 or c >= IGNORE_INDEX for c in classes):
        raise ValueError(f"foreground classes must be dataset indices in 1..254, got {classes}")
    if overlap not in ("max", "ignore"):
        raise ValueError(f"overlap must be 'max' or 'ignore', got {overlap!r}")

    bg, veto = background_cues(hm, saliency, bg_source=bg_source, bg_sal=bg_sal, bg_cam=bg_cam)
    out = np.full(bg.shape, IGNORE_INDEX, dtype=np.uint8)
    out[bg] = 0
    if not classes:
        return out
    claims = _fg_claims(hm, fg_top, fg_mode, fg_min)
    n_claims = claims.sum(0)
    single = n_claims == 1
    cls_arr = np.asarray(classes, dtype=np.uint8)
    out[single] = cls_arr[np.argmax(claims, axis=0)[single]]
    multi = n_claims > 1
    if overlap == "max" and multi.any():
        scores = np.where(claims, hm, -np.inf)
        best = scores.max(0)
        n_best = (scores == best[None]).sum(0)
        win = multi & (n_best == 1)
        out[win] = cls_arr[np.argmax(scores, axis=0)[win]]
        out[multi & (n_best > 1)] = IGNORE_INDEX
    else:
        out[multi] = IGNORE_INDEX
    out[veto & (n_claims > 0)] = IGNORE_INDEX
    return out


def pseudo_mask_argmax(heatmaps, classes, bg_threshold: float) -> np.ndarray:
    """Dense pseudo-mask: ``classes[argmax_k h_k]`` where ``max_k h_k >= bg_threshold``, else 0.

    Heatmaps (K_img, H, W) normalised to [0, 1]; ties of the argmax go to the first class in
    ``classes`` order. With no classes the mask is all background.
    """
    hm = np.asarray(heatmaps, dtype=np.float64)
    if hm.ndim == 2:
        hm = hm[None]
    if hm.shape[0] != len(classes):
        raise ValueError(f"heatmaps shape {hm.shape} does not match {len(classes)} classes")
    if hm.shape[0] == 0:
        return np.zeros(hm.shape[1:], dtype=np.uint8)
    cls_arr = np.asarray([int(c) for c in classes], dtype=np.uint8)
    lab = cls_arr[hm.argmax(0)]
    lab[hm.max(0) < bg_threshold] = 0
    return lab


def seeds_to_multihot(label, num_classes: int, out_size=None, mode: str = "nearest") -> np.ndarray:
    """Label map (H, W) (255 = none) → bool (num_classes, h, w) one-hot cue tensor.

    ``out_size=(h, w)`` resamples to the output grid of a network input made by resizing the
    whole map to ``8·(h−1)+1 × 8·(w−1)+1`` (DSRG's 321×321 → 41×41, aspect ratio not kept),
    with the grid geometry of :mod:`pipeline.geometry`:
      * ``'nearest'``: cell (i, j) takes the pixel it sits on (:func:`~pipeline.geometry.cell_pixels`,
        ``y = round((8i + ½)·H/n − ½)``; 321 → 41: pixels 0, 8, …, 320);
      * ``'majority'``: cell (i, j) takes the most frequent value among the pixels whose nearest
        cell it is (:func:`~pipeline.geometry.pixel_cells`), counting 255 as a value; ties go
        to 255 first, then to the lowest class. Requires ``H >= h`` and ``W >= w``.
    Cells whose value is 255 have no class set.
    """
    lab = np.asarray(label).astype(np.int64)
    if lab.ndim != 2:
        raise ValueError(f"label map must be 2-D, got {lab.shape}")
    bad = (lab != IGNORE_INDEX) & ((lab < 0) | (lab >= num_classes))
    if bad.any():
        raise ValueError(f"label values must lie in 0..{num_classes - 1} or be 255")
    H, W = lab.shape
    if out_size is not None:
        h, w = int(out_size[0]), int(out_size[1])
        if mode == "nearest":
            ys = cell_pixels(h, input_len_for_grid(h), H)
            xs = cell_pixels(w, input_len_for_grid(w), W)
            lab = lab[ys[:, None], xs[None, :]]
        elif mode == "majority":
            if H < h or W < w:
                raise ValueError(f"majority downsampling needs an input at least {h}x{w}, got {H}x{W}")
            rows = pixel_cells(H, h, input_len_for_grid(h))
            cols = pixel_cells(W, w, input_len_for_grid(w))
            cell = rows[:, None] * w + cols[None, :]
            val = np.where(lab == IGNORE_INDEX, 0, lab + 1)  # 0 = ignore slot, wins ties
            counts = np.bincount((cell * (num_classes + 1) + val).ravel(),
                                 minlength=h * w * (num_classes + 1)).reshape(h, w, num_classes + 1)
            best = counts.argmax(-1)
            lab = np.where(best == 0, IGNORE_INDEX, best - 1)
        else:
            raise ValueError(f"mode must be 'nearest' or 'majority', got {mode!r}")
    out = np.zeros((num_classes,) + lab.shape, dtype=bool)
    yy, xx = np.nonzero(lab != IGNORE_INDEX)
    out[lab[yy, xx], yy, xx] = True
    return out
