"""Test-time segmentation: multi-scale (+ flip) inference and dense-CRF post-processing.

Three protocols (docs/ALGORITHMS.md §5.6, §7; ``protocol`` of an inference section,
:data:`PROTOCOLS`), each a set of network passes and a fusion of their logits:

* ``test-ms-f`` (DSRG's ``test-ms-f.py``, its published val / test numbers): scales 0.75 / 1 /
  1.25 of the ORIGINAL image, no flip, ``fusion='sum'``;
* ``test-ms`` (DSRG's ``test-ms.py``, the second round's trainaug pseudo-labels): fixed squares
  241 / 321 / 401 (aspect ratio ignored), no flip, ``fusion='sum'``;
* ``resized-square`` (scales 0.75 / 1 / 1.25 of a 321×321 resize + horizontal flips,
  ``fusion='mean'``): the usual multi-scale + flip averaging; the synthetic demo's setting.

Each pass's logits are upsampled bilinearly to the original image size with the networks'
stride-8 alignment (:func:`pipeline.geometry.grid_to_frame`; a mirrored pass to the mirrored
image, then mirrored back: its grid sits 8·i px from the *right* edge), then

* ``fusion='sum'`` (DSRG): ``z = Σ_passes up(z_p)``, ``P = max(softmax_c(z), 1e-5)`` (the
  reference floors P at ``eps = 1e-5`` before the CRF and does not renormalise);
* ``fusion='mean'``: ``z = (1/N) Σ_passes up(z_p)``, ``P = softmax_c(z)``.

Optional dense CRF (``CRFParams.preset('dsrg_test')``: log-probability unary, bilateral
10/80/13, Gaussian 3/3, 10 iterations) on ``P`` at full resolution, one image per job in a
process pool; the labels are ``argmax_c`` of ``P`` (resp. of the CRF marginals). Images are
resized with OpenCV's bilinear filter (the reference uses ``scipy.ndimage.zoom``).

Images that share a base size are batched (all of them with a fixed ``size`` or ``sizes``).
Pure torch / numpy; no OpenMMLab.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from typing import Iterable, Iterator

import numpy as np
import torch

from pipeline.crf import CRFParams, crf_output, label_map
from pipeline.crf_pool import CRFJobs, make_crf_pool
from pipeline.geometry import STRIDE, grid_to_frame
from pipeline.inference_settings import (DSRG_PROB_FLOOR, FUSIONS, INFERENCE_KEYS, PROTOCOLS,
                                         InferenceSettings, crf_from_cfg, merge_inference_cfg)
from pipeline.transforms import parse_size, resize_image, to_tensor

__all__ = ["InferenceSettings", "predict_logits", "predict_probs", "crf_postprocess",
           "iter_segmentation", "Segmentation", "crf_from_cfg", "merge_inference_cfg",
           "INFERENCE_KEYS", "open_crf_pool", "settings_probs", "PROTOCOLS", "FUSIONS",
           "DSRG_PROB_FLOOR"]


def _net_logits(out):
    if isinstance(out, dict):
        out = out["logits"] if "logits" in out else out["seg"]
    return out


def _base_size(shape, size) -> tuple[int, int]:
    return parse_size(size) or (int(shape[0]), int(shape[1]))


def _pass_sizes(base, scales, sizes) -> list[tuple[int, int]]:
    """Network input sizes of the passes: the ``sizes`` squares, else ``round(base · s)``."""
    if sizes is not None:
        return [(int(v), int(v)) for v in sizes]
    bh, bw = base
    return [(max(1, round(bh * s)), max(1, round(bw * s))) for s in scales]


@torch.no_grad()
def predict_logits(net, images: list, scales=(1.0,), flip: bool = True, size=321,
                   device="cpu", batch_size: int = 1, amp: bool = False, *, sizes=None,
                   fusion: str = "mean") -> list[torch.Tensor]:
    """Fused logits of the passes upsampled to each image's own size (module doc): their mean
    (``fusion='mean'``) or sum (``'sum'``). Passes: ``sizes`` squares, else ``scales`` of the
    base ``size``; each also mirrored with ``flip``.

    ``images``: list of (H, W, 3) uint8 RGB. Returns a list of (C, H, W) float32 tensors on
    ``device``. The network's grid cell i sits on input pixel ``net.output_stride``·i (8 when
    the attribute is absent: the VGG-16 networks). The network is put in eval mode for the call
    (its mode is restored after).
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    device = torch.device(device)
    scales = tuple(float(s) for s in scales)
    use_amp = bool(amp) and device.type == "cuda"
    stride = int(getattr(net, "output_stride", STRIDE))     # cell i on input pixel stride·i
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        key = (0, 0) if sizes is not None else _base_size(np.shape(img), size)
        groups.setdefault(key, []).append(i)
    out: list = [None] * len(images)
    was_training = net.training
    net.eval()
    try:
        for base, idx in groups.items():
            passes = _pass_sizes(base, scales, sizes)
            n_pass = len(passes) * (2 if flip else 1)
            for start in range(0, len(idx), max(1, int(batch_size))):
                chunk = idx[start:start + max(1, int(batch_size))]
                acc = [None] * len(chunk)
                for sh, sw in passes:
                    x = torch.stack([to_tensor(_resized(images[i], (sh, sw))) for i in chunk]).to(device)
                    if flip:
                        x = torch.cat([x, x.flip(-1)])
                    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                        z = _net_logits(net(x))
                    z = z.float()
                    for j, i in enumerate(chunk):
                        hw = np.shape(images[i])[:2]
                        up = grid_to_frame(z[j], (sh, sw), hw, stride)
                        if flip:          # the mirrored grid sits on the mirrored frame
                            up = up + grid_to_frame(z[len(chunk) + j], (sh, sw), hw, stride).flip(-1)
                        acc[j] = up if acc[j] is None else acc[j] + up
                for j, i in enumerate(chunk):
                    out[i] = acc[j] / n_pass if fusion == "mean" else acc[j]
    finally:
        net.train(was_training)
    return out


def _resized(image, hw):
    image = np.asarray(image)
    return image if image.shape[:2] == tuple(hw) else resize_image(image, hw)


def predict_probs(net, images: list, scales=(1.0,), flip: bool = True, size=321, device="cpu",
                  batch_size: int = 1, amp: bool = False, *, sizes=None,
                  fusion: str = "mean") -> list[np.ndarray]:
    """``softmax_c`` of :func:`predict_logits` (floored at :data:`DSRG_PROB_FLOOR` for
    ``fusion='sum'``): a list of (C, H, W) float32 numpy arrays, one per image at its size."""
    logits = predict_logits(net, images, scales, flip, size, device, batch_size, amp,
                            sizes=sizes, fusion=fusion)
    probs = [torch.softmax(z, dim=0).cpu().numpy().astype(np.float32, copy=False) for z in logits]
    if fusion == "sum":
        probs = [np.maximum(p, np.float32(DSRG_PROB_FLOOR)) for p in probs]
    return probs


def settings_probs(net, images: list, settings: InferenceSettings,
                   device="cpu") -> list[np.ndarray]:
    """:func:`predict_probs` with the passes and fusion of ``settings``."""
    return predict_probs(net, images, settings.scales, settings.flip, settings.size, device,
                         settings.batch_size, settings.amp, sizes=settings.sizes,
                         fusion=settings.fusion)


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
        probs = settings_probs(net, [im for _, im in buf], settings, device)
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
