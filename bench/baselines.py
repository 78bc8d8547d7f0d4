"""Straightforward baselines the benchmarks compare the library against (never used by the pipeline).

:func:`grow_seeds_loop` — DSRG seeded region growing written the obvious way: pure Python, one
pixel at a time, a breadth-first flood fill per (image, class). It implements the definition of
:mod:`pipeline.growing` (module docstring, steps 1-4 and the documented choices) independently of
both library versions (:func:`pipeline.growing.grow_seeds`, vectorised, and
:func:`pipeline.growing.grow_seeds_reference`, scipy labelling), so the benchmark can assert that
all three give identical seeds.
"""
from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["grow_seeds_loop"]

_EIGHT = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _as_np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def grow_seeds_loop(probs, cues, image_classes, fg_threshold: float,
                    bg_threshold: float) -> np.ndarray:
    """Per-pixel pure-Python DSRG growing: ``probs`` / ``cues`` (B,C,H,W), ``image_classes`` (B,C).

    For each image with classes S = {0} ∪ labels (ascending):

    1. L(u) = highest class of S with a cue at u (-1 = none); n(u) = number of S-cues at u;
    2. c* = first class of S with the maximal probability, p its probability; L(u) = c* when
       c* ≥ 1 and p > fg_threshold, L(u) = 0 when c* = 0 and p > bg_threshold;
    3. for each c ∈ S a BFS over 8-neighbours inside {L == c}, started from every pixel with
       L == c and a cue of c; every reached pixel is added to c's seeds unless n(u) == 1 and its
       single cue is another class;
    4. output = cues (all classes, also absent ones) OR the added pixels.

    Thresholds are compared in float32, as torch compares a float32 tensor with a Python scalar.
    Returns a (B,C,H,W) bool numpy array.
    """
    p_np = _as_np(probs).astype(np.float32)
    c_np = _as_np(cues).astype(bool)
    k_np = _as_np(image_classes).astype(bool)
    if p_np.ndim != 4 or c_np.shape != p_np.shape or k_np.shape != p_np.shape[:2]:
        raise ValueError(f"shapes: probs {p_np.shape}, cues {c_np.shape}, classes {k_np.shape}")
    B, C, H, W = p_np.shape
    fg = float(np.float32(fg_threshold))
    bg = float(np.float32(bg_threshold))
    P, Q, K = p_np.tolist(), c_np.tolist(), k_np.tolist()
    out = c_np.tolist()
    for b in range(B):
        S = [0] + [c for c in range(1, C) if K[b][c]]
        pb, qb = P[b], Q[b]
        label = [[-1] * W for _ in range(H)]
        ncue = [[0] * W for _ in range(H)]
        for y in range(H):
            for x in range(W):
                lab, n = -1, 0
                for c in S:
                    if qb[c][y][x]:
                        lab, n = c, n + 1
                best_c, best_p = S[0], pb[S[0]][y][x]
                for c in S[1:]:
                    v = pb[c][y][x]
                    if v > best_p:
                        best_c, best_p = c, v
                if best_c != 0 and best_p > fg:
                    lab = best_c
                elif best_c == 0 and best_p > bg:
                    lab = 0
                label[y][x] = lab
                ncue[y][x] = n
        for c in S:
            cue_c, out_c = qb[c], out[b][c]
            seen = [[False] * W for _ in range(H)]
            queue = deque()
            for y in range(H):
                for x in range(W):
                    if label[y][x] == c and cue_c[y][x]:
                        seen[y][x] = True
                        queue.append((y, x))
            while queue:
                y, x = queue.popleft()
                if not (ncue[y][x] == 1 and not cue_c[y][x]):
                    out_c[y][x] = True
                for dy, dx in _EIGHT:
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < H and 0 <= xx < W and not seen[yy][xx] and label[yy][xx] == c:
                        seen[yy][xx] = True
                        queue.append((yy, xx))
    return np.asarray(out, dtype=bool).reshape(B, C, H, W)
