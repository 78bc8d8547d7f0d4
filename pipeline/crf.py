"""Fully connected CRF (Krähenbühl & Koltun, NIPS 2011, Eq. 1-3) through ``pydensecrf``
(docs/ALGORITHMS.md §7).

Energy E(x) = Σ_u ψ_u(x_u) + Σ_{u<v} μ(x_u, x_v) k(f_u, f_v) with Potts μ and
k = bi_w·exp(−|p_u−p_v|²/2bi_xy² − |I_u−I_v|²/2bi_rgb²) + pos_w·exp(−|p_u−p_v|²/2pos_xy²);
mean-field inference for ``iterations`` steps returns the approximate marginals Q (C,H,W).

Size scaling (``reference_side``, off by default): the presets' spatial σ were chosen for
VOC photos (longer side ≈ 500 px); with ``reference_side = S`` each image of longer side L is
processed with bi_xy·L/S and pos_xy·L/S (:meth:`CRFParams.for_image`), so the kernels cover
the same fraction of a small image as of a VOC photo (e.g. bi_xy 80 → 20.5 on a 128-px image
with S = 500). The colour σ and the weights stay as they are.

Unary ψ_u(c): ``'log'`` → −log P_c(u) (P clamped ≥ 1e-5, DSRG test time / DeepLab);
``'prob'`` → −P_c(u) (P clamped ≥ 1e-4, what DSRG's training CRF layer feeds).

The module imports numpy only, so process-pool workers start fast; batches and process pools
(shared-memory transport) are in :mod:`pipeline.crf_pool`.
"""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["CRFParams", "CRF_PRESETS", "dense_crf", "crf_output", "downscale_image",
           "as_uint8_image", "label_map", "label_dtype"]

DSRG_TRAIN_SCALE = 12.0


@dataclasses.dataclass(frozen=True)
class CRFParams:
    """Dense CRF parameters (pydensecrf: addPairwiseBilateral(bi_xy, bi_rgb, img, bi_w),
    addPairwiseGaussian(pos_xy, pos_w))."""
    bi_w: float = 4.0
    bi_xy: float = 65.0
    bi_rgb: float = 3.0
    pos_w: float = 2.0
    pos_xy: float = 2.0
    iterations: int = 10
    unary: str = "log"
    reference_side: float | None = None       # size scaling of the spatial σ (module docstring)

    def __post_init__(self):
        if self.unary not in ("log", "prob"):
            raise ValueError(f"unary must be 'log' or 'prob', got {self.unary!r}")
        if self.reference_side is not None and not self.reference_side > 0:
            raise ValueError(f"reference_side must be > 0 or None, got {self.reference_side!r}")

    def for_image(self, height: int, width: int) -> "CRFParams":
        """The parameters used on an image of ``height`` × ``width``: with ``reference_side`` S,
        the spatial σ times max(height, width) / S (and no further scaling); else unchanged."""
        if self.reference_side is None:
            return self
        return dataclasses.replace(self.scaled(self.reference_side / max(int(height), int(width))),
                                   reference_side=None)

    def scaled(self, factor: float) -> "CRFParams":
        """Divide both spatial σ (bi_xy, pos_xy) by ``factor``; no rounding (pydensecrf takes
        float σ, and DSRG passes 80/12 and 3/12 as floats)."""
        return dataclasses.replace(self, bi_xy=self.bi_xy / factor, pos_xy=self.pos_xy / factor)

    @classmethod
    def preset(cls, name: str, **overrides) -> "CRFParams":
        if name not in CRF_PRESETS:
            raise KeyError(f"unknown CRF preset {name!r}; known: {sorted(CRF_PRESETS)}")
        return dataclasses.replace(CRF_PRESETS[name], **overrides)


_DSRG_TEST = CRFParams(bi_w=10, bi_xy=80, bi_rgb=13, pos_w=3, pos_xy=3, iterations=10,
                       unary="log")
CRF_PRESETS: dict[str, CRFParams] = {
    # DSRG test time, full resolution: test-ms-f.py feeds log-probabilities.
    "dsrg_test": _DSRG_TEST,
    # DSRG training CRF at 41x41: spatial σ / 12 (bi_xy = 6.667, pos_xy = 0.25, not rounded);
    # the reference CRFLayer feeds the probabilities themselves as unary (−P).
    "dsrg_train": dataclasses.replace(_DSRG_TEST.scaled(DSRG_TRAIN_SCALE), unary="prob"),
    "deeplab_vgg16": CRFParams(bi_w=4, bi_xy=65, bi_rgb=3, pos_w=2, pos_xy=2, iterations=10),
    "deeplab_resnet": CRFParams(bi_w=4, bi_xy=67, bi_rgb=3, pos_w=3, pos_xy=1, iterations=10),
}


def as_uint8_image(image) -> np.ndarray:
    """A C-contiguous uint8 (H,W,3) image; other dtypes are rounded and clipped to 0..255."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """Mean-field dense CRF of one image. ``image`` (H,W,3) uint8, ``probs`` (C,H,W) float.

    Returns the (C,H,W) float32 marginals, renormalised so Σ_c Q_c(u) = 1.
    """
    import pydensecrf.densecrf as dcrf

    image = np.asarray(image)
    probs = np.asarray(probs, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H,W,3), got {image.shape}")
    if probs.ndim != 3:
        raise ValueError(f"probs must be (C,H,W), got {probs.shape}")
    C, H, W = probs.shape
    if image.shape[:2] != (H, W):
        raise ValueError(f"image size {image.shape[:2]} differs from probs size {(H, W)}")
    image = as_uint8_image(image)
    params = params.for_image(H, W)
    flat = probs.reshape(C, H * W)
    if params.unary == "log":
        unary = -np.log(np.maximum(flat, 1e-5))
    else:
        unary = -np.maximum(flat, 1e-4)
    unary = np.ascontiguousarray(unary, dtype=np.float32)

    crf = dcrf.DenseCRF2D(W, H, C)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=params.pos_xy, compat=params.pos_w)
    crf.addPairwiseBilateral(sxy=params.bi_xy, srgb=params.bi_rgb, rgbim=image,
                             compat=params.bi_w)
    q = np.asarray(crf.inference(int(params.iterations)), dtype=np.float32).reshape(C, H, W)
    return q / np.maximum(q.sum(axis=0, keepdims=True), 1e-12)


def label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8 if num_classes <= 256 else np.int32)


def label_map(q: np.ndarray) -> np.ndarray:
    """(C,H,W) scores → (H,W) argmax labels, uint8 (int32 beyond 256 classes)."""
    q = np.asarray(q)
    return q.argmax(0).astype(label_dtype(q.shape[0]))


def crf_output(image: np.ndarray, probs: np.ndarray, params: CRFParams,
               labels: bool = False) -> np.ndarray:
    """:func:`dense_crf` of one image, or with ``labels`` its :func:`label_map`."""
    q = dense_crf(image, probs, params)
    return label_map(q) if labels else q


def downscale_image(image: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of an (H,W,3) image to ``size`` (int or (h,w)), returned as uint8.

    Corner-aligned bilinear interpolation (as ``scipy.ndimage.zoom(order=1)``, which DSRG uses to
    bring the 321×321 image to the 41×41 training CRF), then rounded.
    """
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    img = np.asarray(image, dtype=np.float32)
    H, W = img.shape[:2]

    def axis(n_in, n_out):
        pos = np.zeros(n_out) if n_out == 1 else np.linspace(0, n_in - 1, n_out)
        i0 = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (pos - i0).astype(np.float32)

    y0, y1, fy = axis(H, h)
    x0, x1, fx = axis(W, w)
    fy, fx = fy[:, None, None], fx[None, :, None]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bot = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    out = top * (1 - fy) + bot * fy
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
