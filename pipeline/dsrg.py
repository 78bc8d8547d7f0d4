"""DSRG training loss of the segmenter (Huang et al. CVPR 2018; docs/ALGORITHMS.md §5-§7).

Pure torch.

One training step, for logits z (B,C,h,w) at output stride 8 (41×41 for a 321 input):

1. P = stable softmax of z (:func:`pipeline.losses.stable_softmax_probs`);
2. cues: the seed label map (B,H,W) of the crop (255 = unlabelled) sampled on the h×w grid at
   the pixel each cell sits on, ``y = min(8·i, H − 1)`` (:mod:`pipeline.geometry`; 321 → 41:
   pixels 0, 8, …, 320), on the device, and made multi-hot;
3. Q = dense CRF of P.detach() on the crop sampled the same way (:func:`grid_images`; preset
   ``dsrg_train``: spatial σ / 12, probability unary), by the CRF backend ``crf_backend``:
   ``"pydensecrf"`` one image per job on the CPU, in a process pool
   (:func:`pipeline.crf_pool.crf_batch`), or ``"torch"`` the exact mean-field of the whole batch
   on the logits' device (:func:`pipeline.crf_torch.dense_crf_torch`);
4. grown seeds = :func:`pipeline.growing.grow_seeds` (thresholds ``fg_threshold`` /
   ``bg_threshold``, the image's classes only) on Q (``grow_on="crf"``, the reference) or on P
   (``grow_on="probs"``); before iteration ``grow_start`` the seeds are not grown (a warm-up on
   the seeds alone; 0 = grow from the first iteration, as DSRG);
5. loss = seed_weight · balanced seeding loss(P, grown) + boundary_weight · KL(Q‖P)
   (:func:`pipeline.losses.balanced_seeding_loss`, :func:`pipeline.losses.boundary_loss`; Q is a
   constant, the Q/P ratio clipped to ``boundary_clip`` as DSRG's ``ConstrainLossLayer``).

CPU/GPU overlap (the CRF must not block longer than needed): Q only needs P.detach(), so the
CRF jobs are submitted as soon as P exists. With a process pool the submission runs in a
helper thread (it only waits on the pool) while the main thread computes the cues and, with
``grow_on="probs"``, grows the seeds; the main thread then blocks only for what is left of the
CRF. With ``grow_on="crf"`` (default) growing needs Q, so the CRF lies on the critical path:
it is as short as the pool makes it (the batch is split over the workers). With no pool
(``workers=0``) the CRF runs in-process, sequentially. The backward pass cannot start earlier
because the optimised loss includes the boundary term. The torch backend needs no pool: it runs
in the main thread on the network's device (``crf_wait_s`` then includes a CUDA synchronise).

Logged (non-optimised) values: ``seed_bg`` / ``seed_fg`` (the two seeding terms), ``cov_before``
/ ``cov_after`` (fraction of grid pixels carrying at least one seed before / after growing),
``crf_wait_s`` (seconds the main thread waited for Q), ``grow_s`` (seconds spent growing), and
the collapse diagnostics of :func:`pipeline.dsrg_diagnostics.growing_diagnostics`: ``pred_fg``
(cells predicted foreground), ``conf_bg`` / ``conf_fg`` (cells confident enough to grow),
``cov_{bg,fg}_{before,after}`` (cells labelled background / foreground before / after growing).
"""
from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.crf import CRFParams
from pipeline.crf_pool import crf_batch
from pipeline.crf_torch import dense_crf_torch
from pipeline.dsrg_diagnostics import growing_diagnostics
from pipeline.geometry import cell_pixels, grid_to_frame
from pipeline.growing import grow_seeds
from pipeline.losses import balanced_seeding_loss, boundary_loss, stable_softmax_probs
from pipeline.voc import IGNORE_INDEX

__all__ = ["DSRGConfig", "CRF_BACKENDS", "cues_on_grid", "grid_images", "dsrg_losses", "ce_loss", "segmenter_loss_fn"]

CRF_BACKENDS = ("pydensecrf", "torch")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DSRGConfig:
    """Parameters of :func:`dsrg_losses` (module docstring), all required but ``grow_start``
    (the warm-up iterations without growing, default 0 as DSRG): growing thresholds,
    what the seeds grow on ("crf": Q, the reference | "probs": P), loss weights, the Q/P clip
    of the boundary loss (None = no clip, as SEC), the training CRF and its backend
    ("pydensecrf": CPU, process pool | "torch": on the device). The stage builds it from the
    ``segmenter.dsrg`` / ``segmenter.crf`` config sections."""
    fg_threshold: float
    bg_threshold: float
    grow_on: str
    seed_weight: float
    boundary_weight: float
    boundary_clip: tuple | None
    crf: CRFParams
    crf_backend: str
    grow_start: int = 0

    def __post_init__(self):
        if self.grow_on not in ("crf", "probs"):
            raise ValueError(f"dsrg.grow_on must be 'crf' or 'probs', got {self.grow_on!r}")
        if self.grow_start < 0:
            raise ValueError(f"dsrg.grow_start must be >= 0, got {self.grow_start}")
        if self.crf_backend not in CRF_BACKENDS:
            raise ValueError(f"segmenter.crf.backend must be one of {CRF_BACKENDS}, "
                             f"got {self.crf_backend!r}")


def _grid_index(n_in: int, n_out: int, device) -> torch.Tensor:
    """The input pixel each of the ``n_out`` grid cells sits on: ``min(8·i, n_in − 1)``
    (:func:`pipeline.geometry.cell_pixels`; the label map is the network input's frame). A
    label map already at the grid size (``n_in == n_out``) is taken as it is."""
    if n_in == n_out:
        return torch.arange(n_out, device=device)
    return torch.as_tensor(cell_pixels(n_out, n_in), device=device)


def cues_on_grid(labels: torch.Tensor, num_classes: int, size) -> torch.Tensor:
    """(B,H,W) label maps (255 = none) → (B,C,h,w) bool multi-hot cues on the output grid."""
    B, H, W = labels.shape
    h, w = int(size[0]), int(size[1])
    lab = labels[:, _grid_index(H, h, labels.device)][:, :, _grid_index(W, w, labels.device)].long()
    valid = lab != IGNORE_INDEX
    if bool((((lab < 0) | (lab >= num_classes)) & valid).any()):   # one host sync, no mask index
        raise ValueError(f"seed labels must lie in 0..{num_classes - 1} or be {IGNORE_INDEX}")
    onehot = F.one_hot(torch.where(valid, lab, torch.zeros_like(lab)), num_classes)
    return onehot.permute(0, 3, 1, 2).bool() & valid[:, None]


def grid_images(raw: torch.Tensor | np.ndarray, size) -> torch.Tensor | np.ndarray:
    """(B,H,W,3) uint8 crops → (B,h,w,3) uint8 on the output grid (for the training CRF): the
    pixel each cell sits on (:func:`pipeline.geometry.cell_pixels`; for 321 → 41 the same
    pixels as DSRG's ``scipy.ndimage.zoom``, which samples the image at 8·i). A tensor stays a
    tensor on its own device (no copy to the host before the torch CRF); an array stays an array."""
    H, W = raw.shape[1:3]
    ys, xs = cell_pixels(int(size[0]), H), cell_pixels(int(size[1]), W)
    if torch.is_tensor(raw):
        ys, xs = torch.from_numpy(ys).to(raw.device), torch.from_numpy(xs).to(raw.device)
        return raw.detach()[:, ys][:, :, xs].to(torch.uint8).contiguous()
    raw = np.asarray(raw)
    return np.ascontiguousarray(raw[:, ys][:, :, xs].astype(np.uint8, copy=False))


_THREAD: ThreadPoolExecutor | None = None


def _start_crf(images: torch.Tensor | np.ndarray, probs: torch.Tensor, params: CRFParams, pool,
               backend: str = "pydensecrf"):
    """Start the CRF of ``probs`` (detached); returns a function that waits for Q (B,C,h,w)."""
    global _THREAD
    if backend == "torch":
        q = dense_crf_torch(images, probs, params)
        if q.is_cuda:
            torch.cuda.synchronize(q.device)
        return lambda: q
    p = probs.detach().float().cpu().numpy()
    if torch.is_tensor(images):
        images = images.cpu().numpy()
    if pool is None:
        q = crf_batch(images, p, params)
        return lambda: torch.from_numpy(q).to(probs.device)
    if _THREAD is None:
        _THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsrg-crf")
    fut = _THREAD.submit(crf_batch, images, p, params, pool)
    return lambda: torch.from_numpy(fut.result()).to(probs.device)


def dsrg_losses(logits: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor,
                raw_images, cfg: DSRGConfig, crf_pool=None, iteration: int | None = None,
                class_weights: torch.Tensor | None = None) -> dict:
    """DSRG losses of one batch (module docstring).

    ``logits`` (B,C,h,w); ``labels`` (B,H,W) seed label maps of the crops (255 = none);
    ``classes`` (B,C) bool image classes ([0] = background, forced on); ``raw_images``
    (B,H,W,3) uint8 crops; ``cfg`` a :class:`DSRGConfig`; ``crf_pool`` an executor from
    :func:`pipeline.crf_pool.make_crf_pool` or None (in-process CRF; the pool is not used by
    the torch backend); ``iteration``: the 0-based training iteration (None = past the warm-up):
    before ``cfg.grow_start`` the seeds are used as they are (``cov_after == cov_before``);
    ``class_weights`` (C,): the seeding loss's foreground classes weighted
    (:func:`pipeline.losses.balanced_seeding_loss`; None = DSRG).
    Returns ``{"loss_seed", "loss_boundary" (when boundary_weight > 0), "seed_bg", "seed_fg",
    "cov_before", "cov_after", "crf_wait_s", "grow_s"}`` and the diagnostics of
    :func:`pipeline.dsrg_diagnostics.growing_diagnostics` (scalar tensors on the logits' device).
    """
    logits = logits.float()
    B, C, h, w = logits.shape
    dev = logits.device
    probs = stable_softmax_probs(logits)
    need_crf = cfg.grow_on == "crf" or cfg.boundary_weight > 0
    t0 = time.perf_counter()
    wait_q = (_start_crf(grid_images(raw_images, (h, w)), probs, cfg.crf, crf_pool, cfg.crf_backend)
              if need_crf else None)
    crf_wait = time.perf_counter() - t0            # in-process CRF: all of it; pool: submission
    cues = cues_on_grid(labels.to(dev), C, (h, w))
    image_classes = classes.to(dev).bool()
    grow_t = 0.0
    growing = iteration is None or iteration >= cfg.grow_start
    if not growing:
        grown = cues
    elif cfg.grow_on == "probs":
        t0 = time.perf_counter()
        grown = grow_seeds(probs.detach(), cues, image_classes, cfg.fg_threshold, cfg.bg_threshold)
        grow_t = time.perf_counter() - t0
    q = None
    if need_crf:
        t0 = time.perf_counter()
        q = wait_q()
        crf_wait += time.perf_counter() - t0
    if growing and cfg.grow_on == "crf":
        t0 = time.perf_counter()
        grown = grow_seeds(q, cues, image_classes, cfg.fg_threshold, cfg.bg_threshold)
        grow_t = time.perf_counter() - t0
    seed, parts = balanced_seeding_loss(probs, grown, class_weights=class_weights)
    out = {"loss_seed": cfg.seed_weight * seed,
           "seed_bg": parts["bg"].detach(), "seed_fg": parts["fg"].detach(),
           "cov_before": cues.any(dim=1).float().mean(), "cov_after": grown.any(dim=1).float().mean(),
           "crf_wait_s": torch.tensor(crf_wait, device=dev), "grow_s": torch.tensor(grow_t, device=dev)}
    out.update(growing_diagnostics(probs, q if cfg.grow_on == "crf" else probs, cues, grown,
                                   image_classes, cfg.fg_threshold, cfg.bg_threshold))
    if cfg.boundary_weight > 0:
        out["loss_boundary"] = cfg.boundary_weight * boundary_loss(probs, q, cfg.boundary_clip)
    return out


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, resolution: str,
            class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy with 255 ignored, averaged over the labelled pixels (0 when none); with
    ``class_weights`` (C,) the weighted mean ``Σ_u w_{y_u} ℓ_u / Σ_u w_{y_u}``
    (:func:`pipeline.losses.class_balance_weights`).

    ``resolution="input"``: logits bilinearly upsampled to the label size with the stride-8
    alignment (:func:`pipeline.geometry.grid_to_frame`; mmseg / DeepLab v3 practice);
    ``"output"``: labels sampled on the logit grid as :func:`cues_on_grid` (DeepLab v2 Caffe
    practice).
    """
    logits = logits.float()
    labels = labels.to(logits.device).long()
    if resolution == "input":
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = grid_to_frame(logits, labels.shape[-2:])
    elif resolution == "output":
        h, w = logits.shape[-2:]
        H, W = labels.shape[-2:]
        labels = labels[:, _grid_index(H, h, labels.device)][:, :, _grid_index(W, w, labels.device)]
    else:
        raise ValueError(f"ce resolution must be 'input' or 'output', got {resolution!r}")
    valid = labels != IGNORE_INDEX
    if class_weights is None:
        n = valid.sum().clamp_min(1)
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum") / n
    w = class_weights.to(logits.device, logits.dtype)
    n = w[labels[valid]].sum().clamp_min(1e-12)
    return F.cross_entropy(logits, labels, weight=w, ignore_index=IGNORE_INDEX, reduction="sum") / n


def segmenter_loss_fn(loss: str, dsrg_cfg: DSRGConfig | None = None, crf_pool=None,
                      ce_resolution: str | None = None, from_trunk: bool = False,
                      class_weights: torch.Tensor | None = None):
    """``loss_fn(net, batch)`` for :mod:`pipeline.runtime.training` (batch: SegmentationDataset items):
    ``"dsrg"`` with ``dsrg_cfg`` or ``"ce"`` at ``ce_resolution``; ``from_trunk``: the batches
    hold cached trunk features (``train.cache_trunk``); ``class_weights`` (C,) or None: per-class
    loss weights (:func:`ce_loss`, :func:`dsrg_losses`)."""
    extra = {"from_trunk": True} if from_trunk else {}

    def loss_fn(net, batch):
        logits = net(batch["image"], **extra)
        if loss == "ce":
            return {"loss_ce": ce_loss(logits, batch["label"], ce_resolution, class_weights)}
        return dsrg_losses(logits, batch["label"], batch["classes"], batch["raw"], dsrg_cfg, crf_pool,
                           iteration=batch.get("iteration"), class_weights=class_weights)
    return loss_fn
