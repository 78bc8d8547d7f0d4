"""Test-time segmentation: multi-scale + flip inference and dense-CRF post-processing.

DSRG test protocol (Huang et al. CVPR 2018; docs/ALGORITHMS.md §5.6, §7):

* every image is resized to a base size (``size`` × ``size``, aspect ratio ignored, as DSRG's
  321×321; or its own size when ``size`` is None), then to ``round(base · s)`` for each scale
  ``s`` (e.g. 0.75 / 1 / 1.25) and, with ``flip``, also mirrored horizontally;
* the logits of every (scale, flip) pass (flipped ones mirrored back) are upsampled bilinearly
  (``align_corners=False``) to the ORIGINAL image size and averaged:
  ``z̄ = (1/|S||F|) Σ_{s,f} up(f⁻¹(net(f(resize_s(x)))))``; then ``P = softmax_c(z̄)``;
* optional dense CRF (``CRFParams.preset('dsrg_test')``: log-probability unary, bilateral
  10/80/13, Gaussian 3/3, 10 iterations) on ``P`` at full resolution, one image per job in a
  process pool; the labels are ``argmax_c`` of ``P`` (resp. of the CRF marginals).

Images that share a base size are batched (all of them with a fixed ``size``). Pure torch /
numpy; no OpenMMLab.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.crf import CRFParams, crf_output, label_map
from pipeline.crf_pool import CRFJobs, make_crf_pool
from pipeline.data.transforms import parse_size, resize_image, to_tensor

__all__ = ["InferenceSettings", "predict_logits", "predict_probs", "crf_postprocess",
           "iter_segmentation", "Segmentation", "crf_from_cfg", "merge_inference_cfg",
           "INFERENCE_KEYS", "open_crf_pool"]

# config keys of an inference section (eval / submit); see configs/_base_/eval_submit.py
INFERENCE_KEYS = ("size", "scales", "flip", "batch_size", "amp", "crf")


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """``size``: (h, w) base size, or None: each image's own size (``from_cfg`` reads the
    config value with :func:`pipeline.data.transforms.parse_size`; a missing key means 321);
    ``scales`` relative to the base; ``flip`` adds mirrored passes;
    ``amp``: float16 autocast on CUDA only. ``from_cfg``: None values take the defaults."""
    size: int | tuple | None = (321, 321)
    scales: tuple = (1.0,)
    flip: bool = True
    batch_size: int = 1
    amp: bool = False

    @classmethod
    def from_cfg(cls, cfg) -> "InferenceSettings":
        def g(key, default):
            v = cfg.get(key)
            return default if v is None else v

        size = parse_size(cfg.get("size", 321))
        scales = g("scales", (1.0,))
        scales = (float(scales),) if np.isscalar(scales) else tuple(float(s) for s in scales)
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be positive, got {scales}")
        return cls(size=size, scales=scales, flip=bool(g("flip", True)),
                   batch_size=max(1, int(g("batch_size", 1))), amp=bool(g("amp", False)))


def merge_inference_cfg(base, override) -> dict:
    """Inference keys of ``override`` (e.g. the submit section) where they are not None, else
    those of ``base`` (the eval section). ``crf``: base's dict updated with override's keys.
    (A None ``size`` in the result means "original size"; override it with ``'original'``.)"""
    out = {}
    for k in INFERENCE_KEYS:
        if not any(d is not None and k in d for d in (base, override)):
            continue
        b = base.get(k) if base is not None else None
        o = override.get(k) if override is not None else None
        if k == "crf":
            merged = dict(b or {})
            merged.update(dict(o or {}))
            out[k] = merged
        else:
            out[k] = b if o is None else o
    return {k: v for k, v in out.items() if v is not None or k == "size"}


def crf_from_cfg(crf_cfg) -> tuple[CRFParams | None, int]:
    """``crf=dict(enabled, preset, workers, **param overrides)`` → (params or None, workers)."""
    crf_cfg = dict(crf_cfg or {})
    enabled = bool(crf_cfg.pop("enabled", False))
    preset = crf_cfg.pop("preset", "dsrg_test")
    workers = int(crf_cfg.pop("workers", 0) or 0)
    crf_cfg.pop("start_method", None)
    if not enabled:
        return None, workers
    return CRFParams.preset(preset, **crf_cfg), workers


def _net_logits(out):
    if isinstance(out, dict):
        out = out["logits"] if "logits" in out else out["seg"]
    return out


def _base_size(shape, size) -> tuple[int, int]:
    return parse_size(size) or (int(shape[0]), int(shape[1]))


@torch.no_grad()
def predict_logits(net, images: list, scales=(1.0,), flip: bool = True, size=321,
                   device="cpu", batch_size: int = 1, amp: bool = False) -> list[torch.Tensor]:
    """Average of the (scale, flip) logits upsampled to each image's own size (module doc).

    ``images``: list of (H, W, 3) uint8 RGB. Returns a list of (C, H, W) float32 tensors on
    ``device``. The network is put in eval mode for the call (its mode is restored after).
    """
    device = torch.device(device)
    scales = tuple(float(s) for s in scales)
    n_pass = len(scales) * (2 if flip else 1)
    use_amp = bool(amp) and device.type == "cuda"
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(_base_size(np.shape(img), size), []).append(i)
    out: list = [None] * len(images)
    was_training = net.training
    net.eval()
    try:
        for (bh, bw), idx in groups.items():
            for start in range(0, len(idx), max(1, int(batch_size))):
                chunk = idx[start:start + max(1, int(batch_size))]
                acc = [None] * len(chunk)
                for s in scales:
                    sh, sw = max(1, round(bh * s)), max(1, round(bw * s))
                    x = torch.stack([to_tensor(_resized(images[i], (sh, sw))) for i in chunk]).to(device)
                    if flip:
                        x = torch.cat([x, x.flip(-1)])
                    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                        z = _net_logits(net(x))
                    z = z.float()
                    if flip:
                        z = z[:len(chunk)] + z[len(chunk):].flip(-1)
                    for j, i in enumerate(chunk):
                        h, w = np.shape(images[i])[:2]
                        up = F.interpolate(z[j:j + 1], size=(h, w), mode="bilinear",
                                           align_corners=False)[0]
                        acc[j] = up if acc[j] is None else acc[j] + up
                for j, i in enumerate(chunk):
                    out[i] = acc[j] / n_pass
    finally:
        net.train(was_training)
    return out


def _resized(image, hw):
    image = np.asarray(image)
    return image if image.shape[:2] == tuple(hw) else resize_image(image, hw)


def predict_probs(net, images: list, scales=(1.0,), flip: bool = True, size=321, device="cpu",
                  batch_size: int = 1, amp: bool = False) -> list[np.ndarray]:
    """Softmax of :func:`predict_logits`: a list of (C, H, W) float32 numpy arrays, one per image
    at its original size."""
    logits = predict_logits(net, images, scales, flip, size, device, batch_size, amp)
    return [torch.softmax(z, dim=0).cpu().numpy().astype(np.float32, copy=False) for z in logits]


def crf_postprocess(images: list, probs: list, params: CRFParams, pool=None,
                    labels: bool = False) -> list[np.ndarray]:
    """Dense CRF of each (image, probs) pair: the (C, H, W) float32 marginals, or with
    ``labels`` their (H, W) argmax (:func:`pipeline.crf.label_map`), what the stages keep.

    Images may differ in size. With ``pool`` (:func:`pipeline.crf_pool.make_crf_pool`) the images
    run in parallel worker processes (:class:`pipeline.crf_pool.CRFJobs`, shared memory); the
    result equals the sequential one (independent, deterministic jobs, returned in order).
    """
    if len(images) != len(probs):
        raise ValueError(f"{len(images)} images but {len(probs)} probability maps")
    if pool is None:
        return [crf_output(im, p, params, labels) for im, p in zip(images, probs)]
    with CRFJobs(pool, images, probs, params, chunksize=1, labels=labels) as jobs:
        return jobs.results()


@dataclasses.dataclass
class Segmentation:
    """One image's result: ``label`` = argmax of P, ``label_crf`` = argmax of the CRF marginals
    (None without CRF), both (H, W) uint8; ``probs`` only when asked for."""
    key: object
    image: np.ndarray
    label: np.ndarray
    label_crf: np.ndarray | None = None
    probs: np.ndarray | None = None

    @property
    def final(self) -> np.ndarray:
        return self.label if self.label_crf is None else self.label_crf


def iter_segmentation(net, items: Iterable, settings: InferenceSettings, device="cpu",
                      crf: CRFParams | None = None, pool=None, chunk: int | None = None,
                      keep_probs: bool = False) -> Iterator[Segmentation]:
    """Stream ``items`` = iterable of ``(key, image)`` through :func:`predict_probs` (``chunk``
    images at a time) and, with ``crf``, the CRF (in ``pool`` when given: the next chunk runs
    on the network while the pool works). Yields :class:`Segmentation` in input order."""
    chunk = int(chunk or max(settings.batch_size, 8))
    pending: deque = deque()

    def finish(entry) -> Segmentation:
        seg, jobs, i = entry
        if jobs is not None:
            seg.label_crf = jobs.result(i)
            if i == len(jobs) - 1:
                jobs.close()
        return seg

    buf: list = []

    def flush():
        probs = predict_probs(net, [im for _, im in buf], settings.scales, settings.flip,
                              settings.size, device, settings.batch_size, settings.amp)
        jobs = None
        if crf is not None and pool is not None:
            jobs = CRFJobs(pool, [im for _, im in buf], probs, crf, chunksize=1, labels=True)
        for i, ((key, im), p) in enumerate(zip(buf, probs)):
            seg = Segmentation(key, im, label_map(p), probs=p if keep_probs else None)
            if crf is not None and pool is None:
                seg.label_crf = crf_output(im, p, crf, labels=True)
            pending.append((seg, jobs, i))
        buf.clear()

    for key, image in items:
        buf.append((key, np.asarray(image)))
        if len(buf) >= chunk:
            flush()
            while len(pending) > chunk:
                yield finish(pending.popleft())
    if buf:
        flush()
    while pending:
        yield finish(pending.popleft())


def open_crf_pool(crf: CRFParams | None, workers: int):
    """A process pool for the CRF when ``crf`` is set and ``workers >= 2``, else None."""
    if crf is None or int(workers) < 2:
        return None
    return make_crf_pool(int(workers))
