"""Exact mean-field dense CRF in torch for small grids (the DSRG training CRF at 41×41).

Same model, parameters and inference as :func:`pipeline.crf.dense_crf` (docs/ALGORITHMS.md §7;
Krähenbühl & Koltun, NIPS 2011, through pydensecrf), with the pairwise kernels computed exactly
instead of through the permutohedral lattice (docs/CRF_TORCH.md). For N = h·w grid cells, image colours I (uint8
RGB) and positions p = (x, y):

* bilateral kernel  K_b(u,v) = exp(−|p_u−p_v|²/(2·bi_xy²) − |I_u−I_v|²/(2·bi_rgb²)),
* smoothness kernel K_s(u,v) = exp(−|p_u−p_v|²/(2·pos_xy²)),

both including the self term K(u,u) = 1 and normalised symmetrically as pydensecrf's default
``NORMALIZE_SYMMETRIC`` (densecrf ``DenseKernel::initLattice`` / ``filter``):
K̃ = D^{−½} K D^{−½} with D = diag(K·1). Potts compatibility (``PottsCompatibility(w)``
returns −w·K̃Q, which ``DenseCRF::inference`` subtracts), so with the pairwise operator

    M = bi_w · K̃_b + pos_w · K̃_s                                   (N×N, symmetric)

mean-field runs, from the unary ψ (:func:`unary_energy`),

    Q⁰ = softmax_c(−ψ),   Q^{t+1} = softmax_c(−ψ + M Q^t),   t < iterations,

and returns Q^{iterations} (``DenseCRF::inference``: ``expAndNormalize`` with the maximum
subtracted, i.e. a softmax over the labels).

Cost: M is built once per image and reused by every iteration, each one batched N×N by N×C
product: the colour distances are one exact matrix product (:func:`colour_sq_distances`), the
spatial exponent is shared by the batch, one N² exp gives K_b; the smoothness kernel is
separable, K_s = g_y ⊗ g_x with g(i,j) = exp(−(i−j)²/2σ²) per axis, so K̃_s is the Kronecker
product of two normalised h×h and w×w matrices, built once per batch. Images go in chunks whose
operators fit ``max_bytes`` (a 41×41 operator is 11 MB: the recipe's batch of 20 is one chunk);
few large products rather than many small ones also keep a CPU shared with other jobs from
stalling on thread hand-offs (one image per chunk ran 3.8× slower than one chunk of 20 on 2
loaded cores). Memory grows as N²: meant for training grids (41×41, N = 1,681), not for
full-resolution images (use pydensecrf there). Runs in IEEE float32 on any device (TF32
and autocast are switched off inside).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from pipeline.crf import CRFParams

__all__ = ["unary_energy", "separable_gaussian", "smoothness_operator", "pairwise_operator",
           "mean_field", "dense_crf_torch", "colour_sq_distances", "MAX_CELLS",
           "EXPONENT_FLOOR"]

MAX_CELLS = 128 * 128           # N² float32 = 1 GiB per image beyond this: refuse
CPU_CHUNK_BYTES = 256 << 20     # CPU: up to 256 MiB of operators at once (20 images at 41×41)
DEVICE_CHUNK_BYTES = 1 << 30    # accelerators: up to 1 GiB
# Kernel exponents are floored at −50 (values ≥ e^−50 ≈ 2e−22): the sum of what that adds to a
# row is below N·e^−50 < 1e−17, far under float32's resolution of the self term K(u,u) = 1,
# and it keeps exp out of its slow underflow path (10× slower on this CPU) and every operand
# out of the subnormal range (slow on some CPUs).
EXPONENT_FLOOR = -50.0


def unary_energy(probs: torch.Tensor, unary: str) -> torch.Tensor:
    """ψ from probabilities, as :func:`pipeline.crf.dense_crf`: ``'log'`` → −log max(P, 1e-5),
    ``'prob'`` → −max(P, 1e-4) (DSRG's training CRF layer)."""
    if unary == "log":
        return -torch.log(probs.clamp_min(1e-5))
    if unary == "prob":
        return -probs.clamp_min(1e-4)
    raise ValueError(f"unary must be 'log' or 'prob', got {unary!r}")


def separable_gaussian(n: int, sigma: float, device) -> torch.Tensor:
    """(n,n) g(i,j) = exp(−(i−j)²/(2σ²)) along one grid axis (integer positions, float32;
    exponents floored at :data:`EXPONENT_FLOOR`)."""
    i = torch.arange(n, device=device, dtype=torch.float32)
    e = (i[:, None] - i[None, :]).square_().mul_(-0.5 / float(sigma) ** 2)
    return e.clamp_min_(EXPONENT_FLOOR).exp_()


def smoothness_operator(h: int, w: int, sigma: float, device) -> torch.Tensor:
    """(N,N) K̃_s = D^{−½} K_s D^{−½} of the smoothness kernel on an h×w grid (row-major cells).

    K_s = g_y ⊗ g_x (Kronecker product of :func:`separable_gaussian`), so its row sums are
    (g_y·1) ⊗ (g_x·1) and the normalised operator is the product of the normalised factors.
    Entries below e^−50 (products of two floored factors) are set to 0.
    """
    def normalised(g):
        r = g.sum(1).rsqrt()
        return r[:, None] * g * r[None, :]
    k = torch.kron(normalised(separable_gaussian(h, sigma, device)),
                   normalised(separable_gaussian(w, sigma, device)))
    return k.masked_fill_(k < math.exp(EXPONENT_FLOOR), 0.0)


def colour_sq_distances(colours: torch.Tensor) -> torch.Tensor:
    """(B,N,3) integer-valued colours → (B,N,N) |I_u − I_v|² as one product of augmented
    vectors [I_u, |I_u|², 1]·[−2·I_v, 1, |I_v|²]. Every term is an integer below 2²⁴
    (|I|² ≤ 3·255²), so the float32 result is exact (call it with TF32 off)."""
    sq = colours.square().sum(-1, keepdim=True)
    one = torch.ones_like(sq)
    return torch.bmm(torch.cat([colours, sq, one], -1),
                     torch.cat([-2.0 * colours, one, sq], -1).transpose(1, 2).contiguous())


def _position_exponent(h: int, w: int, sigma: float, device) -> torch.Tensor:
    """(N,N) −|p_u − p_v|²/(2σ²) on an h×w grid (row-major cells), from the per-axis terms."""
    def axis(n):
        i = torch.arange(n, device=device, dtype=torch.float32)
        return (i[:, None] - i[None, :]).square_()
    d = axis(h)[:, None, :, None] + axis(w)[None, :, None, :]
    return d.reshape(h * w, h * w).mul_(-0.5 / float(sigma) ** 2)


def pairwise_operator(images: torch.Tensor, params: CRFParams, smooth: torch.Tensor | None = None,
                      position: torch.Tensor | None = None) -> torch.Tensor:
    """(B,h,w,3) uint8 images → (B,N,N) M = bi_w·K̃_b + pos_w·K̃_s (module docstring).

    ``smooth`` (K̃_s, :func:`smoothness_operator`) and ``position`` (the bilateral kernel's
    spatial exponent −|Δp|²/2·bi_xy²) may be passed when the caller reuses them across chunks.
    """
    B, h, w, _ = images.shape
    dev = images.device
    if position is None:
        position = _position_exponent(h, w, params.bi_xy, dev)
    k = colour_sq_distances(images.reshape(B, h * w, 3).float())
    k = torch.add(position, k, alpha=-0.5 / float(params.bi_rgb) ** 2, out=k)
    k.clamp_min_(EXPONENT_FLOOR).exp_()
    r = k.sum(-1).rsqrt_()                                     # D_b^{−½}
    k.mul_(r[:, :, None]).mul_(r[:, None, :] * float(params.bi_w))
    if params.pos_w:
        if smooth is None:
            smooth = smoothness_operator(h, w, params.pos_xy, dev)
        k.add_(smooth, alpha=float(params.pos_w))
    return k


def mean_field(unary: torch.Tensor, operator: torch.Tensor, iterations: int) -> torch.Tensor:
    """Q after ``iterations`` steps of Q ← softmax_c(−ψ + M Q) from Q⁰ = softmax_c(−ψ).

    ``unary`` ψ (B,C,N), ``operator`` M (B,N,N), symmetric → Q (B,C,N). The product is taken
    as Q·Mᵀ (= (M Q)ᵀ, M symmetric), the layout BLAS runs fastest here (C ≪ N)."""
    neg = -unary
    q = torch.softmax(neg, dim=1)
    for _ in range(int(iterations)):
        q = torch.softmax(torch.baddbmm(neg, q, operator.mT), dim=1)
    return q


@contextlib.contextmanager
def _ieee_float32(device: torch.device):
    """No autocast and no TF32 matrix products inside (restored on exit)."""
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    finally:
        torch.set_float32_matmul_precision(old)


def _check(images: torch.Tensor, probs: torch.Tensor, params: CRFParams):
    if probs.ndim != 4:
        raise ValueError(f"probs must be (B,C,h,w), got {tuple(probs.shape)}")
    B, C, h, w = probs.shape
    if tuple(images.shape) != (B, h, w, 3):
        raise ValueError(f"images must be (B,h,w,3) = {(B, h, w, 3)}, got {tuple(images.shape)}")
    if h * w > MAX_CELLS:
        raise ValueError(f"the torch dense CRF builds N×N kernels (N = h·w = {h * w} > {MAX_CELLS});"
                         " use crf backend 'pydensecrf' for grids this large")
    for name in ("bi_xy", "bi_rgb", "pos_xy"):
        if not float(getattr(params, name)) > 0:
            raise ValueError(f"CRF {name} must be > 0, got {getattr(params, name)}")


def _as_uint8_tensor(images, device) -> torch.Tensor:
    """Images as a uint8 tensor on ``device`` (other dtypes rounded and clipped, as pydensecrf's
    uint8 input in :func:`pipeline.crf.as_uint8_image`)."""
    t = images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
    if t.dtype != torch.uint8:
        t = t.float().round().clamp(0, 255).to(torch.uint8)
    return t.to(device)


def dense_crf_torch(images, probs: torch.Tensor, params: CRFParams,
                    max_bytes: int | None = None) -> torch.Tensor:
    """Mean-field dense CRF of a batch, on ``probs``' device.

    ``images`` (B,h,w,3) uint8 (tensor or array), ``probs`` (B,C,h,w) probabilities (tensor or
    array) → Q (B,C,h,w) float32 (a tensor on the same device; Σ_c Q = 1), the counterpart of
    :func:`pipeline.crf_pool.crf_batch` with :func:`pipeline.crf.dense_crf`. ``max_bytes`` bounds
    the operators held at once (default: 256 MiB on the CPU, 1 GiB elsewhere).
    """
    probs = probs if torch.is_tensor(probs) else torch.from_numpy(np.asarray(probs))
    probs = probs.detach()
    dev = probs.device
    images = _as_uint8_tensor(images, dev)
    _check(images, probs, params)
    B, C, h, w = probs.shape
    params = params.for_image(h, w)
    N = h * w
    if max_bytes is None:
        max_bytes = CPU_CHUNK_BYTES if dev.type == "cpu" else DEVICE_CHUNK_BYTES
    chunk = max(1, int(max_bytes) // (N * N * 4))
    out = torch.empty(B, C, h, w, dtype=torch.float32, device=dev)
    with torch.no_grad(), _ieee_float32(dev):
        unary = unary_energy(probs.float(), params.unary).reshape(B, C, N)
        smooth = smoothness_operator(h, w, params.pos_xy, dev) if params.pos_w else None
        position = _position_exponent(h, w, params.bi_xy, dev)
        for s in range(0, B, chunk):
            op = pairwise_operator(images[s:s + chunk], params, smooth, position)
            q = mean_field(unary[s:s + chunk], op, params.iterations)
            out[s:s + chunk] = q.reshape(-1, C, h, w)
            del op
    return out
