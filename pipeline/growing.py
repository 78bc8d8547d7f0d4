"""DSRG seeded region growing (Huang et al., CVPR 2018; docs/ALGORITHMS.md §5.3, steps 1-4).

Shapes: ``probs`` (B,C,H,W) class probabilities (channel 0 = background), ``cues`` (B,C,H,W)
multi-hot original seeds (a pixel may carry no class or several), ``image_classes`` (B,C) bool
(channel 0 is forced to true). The result is a (B,C,H,W) bool multi-hot seed map.

Algorithm, for every image with classes S = {0} ∪ labels:

1. label map L (one label per pixel, -1 = none) from the original cues of classes in S;
2. over S only: p = max_{c∈S} P_c, c* = argmax_{c∈S} P_c; L = c* where c* ≥ 1 and p > fg_threshold,
   L = 0 where c* = 0 and p > bg_threshold (confident predictions overwrite cue labels in L; this
   only changes connectivity, original cues are never removed);
3. for each c ∈ S: the 8-connected components of {L == c} containing an original cue of c are
   kept; their pixels are added to c's seeds, except pixels whose original cue is exactly one
   other class (those keep their single label);
4. output = original cues OR added pixels. Growth restarts from the cues at every call.

Choices (documented, see also the tests):

* multi-cue pixels: in L a pixel with several cue classes takes the *highest* class index
  among them (DSRG's reference ``generate_seed_step`` writes ``label_map[...] = c + 1`` with
  numpy fancy indexing, where the last = highest class wins). Such pixels are never excluded
  in step 3 (the exclusion concerns pixels with exactly one other cue class).
* cues of classes absent from the image are copied to the output unchanged but otherwise
  ignored: they neither label L, nor block growth, nor count in the "exactly one other" rule.
  Absent classes never grow.

Vectorised implementation (all images and classes at once, on the tensor's device):

* tie-breaking: c* is the first maximal class (``torch.max`` / ``np.argmax``); with thresholds
  ≥ 0.5 and probabilities summing to ≤ 1 a confident pixel has a unique maximum, so ties never
  change the result.
* compaction: each image's present classes are gathered (ascending, background first) into a
  (B,K,H,W) block, K = max |S|, so the work scales with |S| and not with C.
* component selection of step 3 is a masked flood fill. Start from F_0 = {L == c} ∩ cue_c and
  iterate F_{k+1} = dilate_3x3(F_k) ∩ {L == c} (a 3×3 stride-1 max pool) until F stops changing.
  The 3×3 window is exactly the 8-neighbourhood, so F_k is the set of pixels of {L == c}
  reachable from a cue pixel of c by an 8-connected path of ≤ k steps inside {L == c}; at the
  fixed point F is the union of the 8-connected components of {L == c} that contain a cue
  pixel of c, i.e. the kept components. The 3×3 max pool is computed separably (1×3 then 3×1,
  whose product is the full 3×3 square) on rows bit-packed into int64 when W ≤ 62 (one word per
  row: horizontal max = x | x<<1 | x>>1, vertical max = OR with the rows above/below), and on
  bool maps otherwise; all give the same sets. On CPU the packed loop runs in numpy (same
  words, same steps), which has less overhead per call than torch on such small arrays. On an
  accelerator a step is ``max_pool2d`` of a 0/1 float map times the region (two kernel
  launches; the words need about eight), and the fixed point is tested every 8 steps.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["grow_seeds", "grow_seeds_reference", "grown_label_map", "masked_flood_fill",
           "FLOOD_FILL_METHODS"]


def _check(probs, cues, image_classes):
    if probs.ndim != 4 or tuple(cues.shape) != tuple(probs.shape):
        raise ValueError(f"probs {tuple(probs.shape)} and cues {tuple(cues.shape)} must be the "
                         "same (B,C,H,W) shape")
    if tuple(image_classes.shape) != tuple(probs.shape[:2]):
        raise ValueError(f"image_classes {tuple(image_classes.shape)} must be (B,C) = "
                         f"{tuple(probs.shape[:2])}")


_MAX_PACKED_WIDTH = 62  # bits 0..W-1 of an int64, bit W (from x << 1) and the sign bit stay free


def _dilate_bool(f: torch.Tensor) -> torch.Tensor:
    """3×3 max pool (stride 1, padding 1) of an (N,H,W) bool map, separably."""
    r = f.clone()
    r[..., 1:] |= f[..., :-1]
    r[..., :-1] |= f[..., 1:]
    c = r.clone()
    c[:, 1:] |= r[:, :-1]
    c[:, :-1] |= r[:, 1:]
    return c


def _dilate_packed(x: torch.Tensor) -> torch.Tensor:
    """3×3 max pool of (N,H) int64 rows whose bit j is column j (bits ≥ W are masked later)."""
    h = x | (x << 1) | (x >> 1)
    v = h.clone()
    v[:, 1:] |= h[:, :-1]
    v[:, :-1] |= h[:, 1:]
    return v


def _fill_numpy(r: np.ndarray, f: np.ndarray, check_every: int) -> np.ndarray:
    """:func:`_dilate_packed` ∧ r to the fixed point on (N,H) int64 numpy rows, in place."""
    h, v = np.empty_like(f), np.empty_like(f)
    f = f.copy()
    while True:
        prev = f.copy()
        for _ in range(check_every):
            np.left_shift(f, 1, out=h)
            h |= f
            h |= f >> 1
            v[...] = h
            v[:, 1:] |= h[:, :-1]
            v[:, :-1] |= h[:, 1:]
            np.bitwise_and(v, r, out=f)
        if np.array_equal(f, prev):
            return f


FLOOD_FILL_METHODS = ("numpy", "words", "bool", "pool")


def _dilate_pool(f: torch.Tensor) -> torch.Tensor:
    """3×3 max pool (stride 1, padding 1) of an (N,1,H,W) 0/1 float map: one kernel."""
    return F.max_pool2d(f, 3, stride=1, padding=1)


@torch.no_grad()
def masked_flood_fill(region: torch.Tensor, start: torch.Tensor, method: str | None = None,
                      check_every: int | None = None) -> torch.Tensor:
    """Pixels of ``region`` 8-connected (inside ``region``) to a pixel of ``start & region``.

    ``region``/``start``: (N,H,W) bool. Iterates F ← maxpool3x3(F) ∧ region to the fixed point;
    convergence is tested every ``check_every`` steps (extra steps are no-ops at the fixed point).
    ``method`` — all give the same sets:

    * ``"numpy"`` rows bit-packed into int64 words, the loop in numpy (W ≤ 62; default on the
      CPU: per call numpy costs ~1 µs, torch ~5 µs, and the loop is dozens of calls on a few kB);
    * ``"words"`` the same words in torch (W ≤ 62);
    * ``"bool"`` separable dilation of bool maps (any W; the CPU default when W > 62);
    * ``"pool"`` ``max_pool2d`` on a 0/1 float map times the region, two kernels per step
      (default on accelerators, where each step's cost is its kernel launches and each
      convergence test a device → host synchronisation).

    ``check_every`` defaults to 4 on the CPU and 8 elsewhere.
    """
    N, H, W = region.shape
    if region.numel() == 0:
        return region.clone()
    on_cpu = region.device.type == "cpu"
    if method is None:
        method = ("numpy" if W <= _MAX_PACKED_WIDTH else "bool") if on_cpu else "pool"
    if method not in FLOOD_FILL_METHODS:
        raise ValueError(f"flood fill method must be one of {FLOOD_FILL_METHODS}, got {method!r}")
    if method in ("numpy", "words") and W > _MAX_PACKED_WIDTH:
        raise ValueError(f"packed flood fill needs W <= {_MAX_PACKED_WIDTH}, got {W}")
    check_every = int(check_every or (4 if on_cpu else 8))
    if method == "numpy":
        r, f = _pack_numpy(region.cpu().numpy()), _pack_numpy((start & region).cpu().numpy())
        return torch.from_numpy(_unpack_numpy(_fill_numpy(r, f, check_every), W)).to(region.device)
    if method == "words":
        bits = torch.ones(W, dtype=torch.int64, device=region.device) << torch.arange(
            W, device=region.device)
        r = (region.long() * bits).sum(-1)
        f = ((start & region).long() * bits).sum(-1)
        step = lambda f: _dilate_packed(f) & r                 # noqa: E731
    elif method == "pool":
        r = region.unsqueeze(1).float()
        f = (start & region).unsqueeze(1).float()
        step = lambda f: _dilate_pool(f) * r                   # noqa: E731
    else:
        r, f = region, start & region
        step = lambda f: _dilate_bool(f) & r                   # noqa: E731
    while True:
        prev = f
        for _ in range(check_every):
            f = step(f)
        if torch.equal(f, prev):
            break
    if method == "words":
        return (f.unsqueeze(-1) & bits) != 0
    if method == "pool":
        return f.squeeze(1) > 0
    return f


def _pack_numpy(m: np.ndarray) -> np.ndarray:
    """(N,H,W) bool → (N,H) int64 rows, bit j = column j (as the torch packing)."""
    b = np.packbits(m, axis=-1, bitorder="little")            # (N,H,ceil(W/8)) uint8
    out = np.zeros(m.shape[:-1] + (8,), np.uint8)
    out[..., :b.shape[-1]] = b
    return out.view("<i8")[..., 0].astype(np.int64, copy=False)


def _unpack_numpy(x: np.ndarray, W: int) -> np.ndarray:
    b = np.ascontiguousarray(x.astype("<i8", copy=False))[..., None].view(np.uint8)
    return np.unpackbits(b, axis=-1, count=W, bitorder="little").astype(bool)


def _present_index(classes: torch.Tensor):
    """(B,K) class indices of each image's present classes, ascending (stable sort puts present
    classes first), padded to K = max |S|; and the (B,K) validity mask."""
    order = torch.sort((~classes).to(torch.uint8), dim=1, stable=True).indices
    K = int(classes.sum(dim=1).max())
    idx = order[:, :K]
    return idx, classes.gather(1, idx)


@torch.no_grad()
def grow_seeds(probs: torch.Tensor, cues: torch.Tensor, image_classes: torch.Tensor,
               fg_threshold: float, bg_threshold: float, fill_method: str | None = None) -> torch.Tensor:
    """DSRG region growing (module docstring), batched and vectorised on ``probs.device``.

    ``fill_method``: the :func:`masked_flood_fill` method (None = that device's default; every
    method gives the same result). Returns a (B,C,H,W) bool tensor: the original cues plus the
    grown pixels.
    """
    _check(probs, cues, image_classes)
    B, C, H, W = probs.shape
    dev = probs.device
    cues = cues.to(dev).bool()
    classes = image_classes.to(dev).bool().clone()
    classes[:, 0] = True
    idx, valid = _present_index(classes)                     # idx[:, 0] == 0 (background)
    K = idx.shape[1]
    bidx = torch.arange(B, device=dev)[:, None].expand(B, K)
    vmask = valid[:, :, None, None]
    eff = cues[bidx, idx] & vmask                           # cues of present classes (B,K,H,W)
    ar = torch.arange(K, dtype=torch.int16, device=dev).view(1, K, 1, 1)   # int16: less memory
    # step 1: highest cue class per pixel (compact order = class order), -1 = unlabelled
    label = (eff.to(torch.int16) * (ar + 1)).amax(dim=1) - 1
    # step 2: confident predictions over S only
    p, kstar = probs[bidx, idx].masked_fill(~vmask, float("-inf")).max(dim=1)
    confident = ((kstar > 0) & (p > fg_threshold)) | ((kstar == 0) & (p > bg_threshold))
    label = torch.where(confident, kstar.to(torch.int16), label)
    # step 3: components of {L == c} that contain a cue of c
    region = label.unsqueeze(1) == ar
    start = region & eff
    # every (image, slot) map is filled, none selected: a selection costs a device → host
    # synchronisation, a map without a start pixel leaves the loop at its first check
    kept = masked_flood_fill(region.flatten(0, 1), start.flatten(0, 1), fill_method).view_as(region)
    single_other = (eff.sum(dim=1, keepdim=True, dtype=torch.int16) == 1) & ~eff  # one other cue
    add = (kept & ~single_other & vmask).to(torch.uint8)
    # back to class channels; step 4: cues are never removed. idx is a slice of a permutation
    # (no class twice in a row) and padded slots add nothing, so an OR through amax is exact.
    index = idx[:, :, None, None].expand(B, K, H, W)
    out = cues.to(torch.uint8).scatter_reduce_(1, index, add, reduce="amax").bool()
    return out


def grown_label_map(probs: np.ndarray, seeds: np.ndarray, labels, fg_threshold: float,
                    bg_threshold: float, ignore: int = 255) -> np.ndarray:
    """One image's seeds grown by :func:`grow_seeds` on its probabilities, as a label map.

    ``probs`` (C,H,W) class probabilities at the seeds' resolution; ``seeds`` (H,W) labels with
    ``ignore`` = unlabelled; ``labels`` the image's classes (dataset indices ≥ 1; those ≥ C are
    left out). A grown pixel takes the grown class of highest probability (several classes
    can grow into one pixel, docs/ALGORITHMS.md §5.3); a seed pixel keeps its seed; the rest is
    ``ignore``. Returns uint8 (H,W).
    """
    C = probs.shape[0]
    cues = np.stack([seeds == c for c in range(C)])[None]
    classes = np.zeros((1, C), bool)
    classes[0, [0] + [int(c) for c in labels if c < C]] = True
    grown = grow_seeds(torch.from_numpy(probs[None]), torch.from_numpy(cues),
                       torch.from_numpy(classes), fg_threshold, bg_threshold)[0].numpy()
    out = np.where(grown.any(0), (grown * (1.0 + probs)).argmax(0), ignore).astype(np.uint8)
    known = seeds != ignore
    out[known] = seeds[known]
    return out


def grow_seeds_reference(probs, cues, image_classes, fg_threshold: float,
                         bg_threshold: float) -> np.ndarray:
    """Per-image, per-class loop version of :func:`grow_seeds` with ``scipy.ndimage.label``.

    Same semantics and choices (module docstring); numpy in, numpy bool (B,C,H,W) out. For tests
    and benchmarks only.
    """
    from scipy import ndimage

    def as_np(x):
        return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)

    probs, cues = as_np(probs), as_np(cues).astype(bool)
    classes = as_np(image_classes).astype(bool).copy()
    _check(probs, cues, classes)
    classes[:, 0] = True
    B, C, H, W = probs.shape
    out = cues.copy()
    eight = np.ones((3, 3), dtype=bool)
    for b in range(B):
        S = np.flatnonzero(classes[b])
        label = np.full((H, W), -1, dtype=np.int64)
        for c in S:                                   # ascending: the highest cue class wins
            label[cues[b, c]] = c
        sel = probs[b, S]
        cstar = S[sel.argmax(axis=0)]
        p = sel.max(axis=0)
        label[(cstar != 0) & (p > fg_threshold)] = cstar[(cstar != 0) & (p > fg_threshold)]
        label[(cstar == 0) & (p > bg_threshold)] = 0
        n_cues = cues[b, S].sum(axis=0)
        for c in S:
            mask = label == c
            comp, _ = ndimage.label(mask, structure=eight)
            ids = np.unique(comp[mask & cues[b, c]])
            keep = np.isin(comp, ids[ids > 0])
            single_other = (n_cues == 1) & ~cues[b, c]
            out[b, c] |= keep & ~single_other
    return out
