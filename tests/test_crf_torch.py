"""Exact dense CRF in torch: the formula (float64 reference), pydensecrf's conventions (unary,
Potts sign, self term, weights), agreement with pydensecrf, batching/chunking, float32 under
autocast, errors, and the DSRG loss with ``crf.backend="torch"``."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.crf import CRFParams
from pipeline.crf_torch import colour_sq_distances, dense_crf_torch, pairwise_operator

PRESETS = ("dsrg_train", "dsrg_test", "deeplab_vgg16")


def smooth_case(seed=0, B=2, C=4, h=9, w=11, sharp=3.0):
    """Piecewise-constant noisy images and softmax maps of smooth logits that follow them."""
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.interpolate(torch.randn(B, C, 3, 3, generator=g), size=(h, w),
                                        mode="bilinear", align_corners=False)
    palette = torch.randint(0, 256, (B, C, 3), generator=g).float()
    region = z.argmax(1)
    img = torch.stack([palette[b][region[b]] for b in range(B)])
    img = (img + 12 * torch.randn(img.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)
    probs = torch.softmax(sharp * z + torch.randn(z.shape, generator=g), 1)
    return img, probs


def reference_crf(img: torch.Tensor, probs: torch.Tensor, p: CRFParams) -> torch.Tensor:
    """The module docstring's formula, literally, in float64 (one image)."""
    C, h, w = probs.shape
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                          indexing="ij")
    pos = torch.stack([x.flatten(), y.flatten()], 1)
    col = img.reshape(-1, 3).double()
    dp = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    dc = ((col[:, None] - col[None]) ** 2).sum(-1)
    kb = torch.exp(-dp / (2 * p.bi_xy ** 2) - dc / (2 * p.bi_rgb ** 2))
    ks = torch.exp(-dp / (2 * p.pos_xy ** 2))

    def norm(k):
        r = k.sum(1).rsqrt()
        return r[:, None] * k * r[None, :]
    m = p.bi_w * norm(kb) + p.pos_w * norm(ks)
    pr = probs.reshape(C, -1).double()
    unary = -torch.log(pr.clamp_min(1e-5)) if p.unary == "log" else -pr.clamp_min(1e-4)
    q = torch.softmax(-unary, 0)
    for _ in range(p.iterations):
        q = torch.softmax(-unary + q @ m, 0)
    return q.reshape(C, h, w)


@pytest.mark.parametrize("preset", PRESETS)
def test_matches_float64_formula(preset):
    img, probs = smooth_case(1)
    params = CRFParams.preset(preset)
    q = dense_crf_torch(img, probs, params)
    assert q.dtype == torch.float32 and q.shape == probs.shape
    assert torch.allclose(q.sum(1), torch.ones(()), atol=1e-5)
    for b in range(len(img)):
        ref = reference_crf(img[b], probs[b], params)
        assert (q[b].double() - ref).abs().max() < 2e-5


def test_colour_distances_exact_on_extreme_colours():
    colours = torch.tensor([[[0, 0, 0], [255, 255, 255], [255, 0, 128], [1, 254, 3]]]).float()
    d = colour_sq_distances(colours)
    ref = ((colours[0, :, None] - colours[0, None]) ** 2).sum(-1)
    assert torch.equal(d[0], ref)


def test_operator_symmetric_and_narrow_smoothness_near_identity():
    img, _ = smooth_case(2, B=1)
    p = CRFParams.preset("dsrg_train")
    m = pairwise_operator(img, p)[0]
    assert torch.allclose(m, m.T, atol=1e-7)
    only_smooth = pairwise_operator(img, CRFParams.preset("dsrg_train", bi_w=0.0))[0]
    # pos_xy = 0.25 px: the normalised smoothness kernel is the identity up to its 4 e^-8 ≈ 1e-3
    # 4-neighbours (and the self term lowered by as much)
    assert torch.allclose(only_smooth, p.pos_w * torch.eye(len(m)), atol=p.pos_w * 1.5e-3)


def test_chunks_and_batch_equal_one_image_at_a_time():
    img, probs = smooth_case(3, B=3)
    p = CRFParams.preset("dsrg_train")
    whole = dense_crf_torch(img, probs, p, max_bytes=1 << 30)
    one = dense_crf_torch(img, probs, p, max_bytes=1)
    assert torch.allclose(whole, one, atol=1e-6)
    single = dense_crf_torch(img[1:2], probs[1:2], p)
    assert torch.allclose(single[0], whole[1], atol=1e-6)
    arr = dense_crf_torch(img.numpy(), probs.numpy(), p)          # numpy inputs
    assert torch.allclose(arr, whole, atol=1e-6)


def test_float32_under_autocast_and_matmul_precision_restored():
    img, probs = smooth_case(4)
    p = CRFParams.preset("dsrg_test")
    plain = dense_crf_torch(img, probs, p)
    torch.set_float32_matmul_precision("medium")
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = dense_crf_torch(img, probs, p)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")
    assert auto.dtype == torch.float32 and torch.equal(auto, plain)


def test_errors_name_the_problem():
    img, probs = smooth_case(5)
    p = CRFParams.preset("dsrg_train")
    with pytest.raises(ValueError, match="images must be"):
        dense_crf_torch(img[:, :-1], probs, p)
    with pytest.raises(ValueError, match="probs must be"):
        dense_crf_torch(img, probs[0], p)
    with pytest.raises(ValueError, match="pydensecrf"):
        dense_crf_torch(torch.zeros(1, 200, 200, 3, dtype=torch.uint8), torch.ones(1, 2, 200, 200), p)
    with pytest.raises(ValueError, match="bi_rgb"):
        dense_crf_torch(img, probs, CRFParams.preset("dsrg_train", bi_rgb=0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    img, probs = smooth_case(6, B=3, h=41, w=41, C=21)
    p = CRFParams.preset("dsrg_train")
    q = dense_crf_torch(img.cuda(), probs.cuda(), p)
    assert q.is_cuda and torch.allclose(q.cpu(), dense_crf_torch(img, probs, p), atol=1e-5)


# ---------------------------------------------------------------- against pydensecrf

def test_unary_and_smoothness_conventions_equal_pydensecrf():
    """0 iterations: the softmax of −ψ (both unaries). A smoothness kernel this narrow is the
    identity for both (lattice and exact), so 10 iterations then test the Potts sign, the self
    term and the weight scale with nothing left to approximate."""
    pytest.importorskip("pydensecrf.densecrf")
    from pipeline.crf_pool import crf_batch
    img, probs = smooth_case(7, sharp=1.0)
    for unary in ("log", "prob"):
        p0 = CRFParams.preset("dsrg_train", iterations=0, unary=unary)
        assert np.abs(dense_crf_torch(img, probs, p0).numpy() - crf_batch(img.numpy(), probs.numpy(), p0)).max() < 1e-6
    p = CRFParams.preset("dsrg_train", bi_w=0.0, pos_w=3.0, pos_xy=0.1)
    q_t = dense_crf_torch(img, probs, p).numpy()
    q_p = crf_batch(img.numpy(), probs.numpy(), p)
    assert np.abs(q_t - q_p).max() < 1e-4
    assert (q_t.max(1) > probs.numpy().max(1) + 0.05).mean() > 0.5    # Potts sharpens


@pytest.mark.parametrize("preset", PRESETS)
def test_agrees_with_pydensecrf_on_smooth_inputs(preset):
    pytest.importorskip("pydensecrf.densecrf")
    from pipeline.crf_pool import crf_batch
    img, probs = smooth_case(8, B=3, C=5, h=21, w=21, sharp=2.0)
    p = CRFParams.preset(preset)
    q_t = dense_crf_torch(img, probs, p).numpy()
    q_p = crf_batch(img.numpy(), probs.numpy(), p)
    agree = (q_t.argmax(1) == q_p.argmax(1)).mean()
    changed = (q_p.argmax(1) != probs.numpy().argmax(1)).mean()
    # measured: dsrg_train 99.2 % / 0.0029, dsrg_test 99.7 % / 0.0010, deeplab_vgg16 (bi_rgb = 3,
    # where the lattice is coarsest) 96.8 % / 0.012
    low, high = (0.98, 0.005) if preset.startswith("dsrg") else (0.95, 0.02)
    assert agree > low and np.abs(q_t - q_p).mean() < high, (agree, np.abs(q_t - q_p).mean())
    assert changed > 0.1                                  # the CRF did something to compare


# ---------------------------------------------------------------- the DSRG loss with it

def test_dsrg_loss_with_torch_backend_close_to_pydensecrf():
    pytest.importorskip("pydensecrf.densecrf")
    from bench.inputs import reference_dsrg_config, segmenter_batch
    from pipeline.dsrg import dsrg_losses
    batch = segmenter_batch(3, 64, 5, seed=1)
    g = torch.Generator().manual_seed(1)
    z = torch.nn.functional.interpolate(torch.randn(3, 5, 3, 3, generator=g), size=(9, 9), mode="bilinear")
    outs = {}
    for backend in ("pydensecrf", "torch"):
        cfg = dataclasses.replace(reference_dsrg_config(), grow_on="crf", crf_backend=backend)
        assert cfg.crf_backend == backend
        logits = (4 * z).requires_grad_(True)
        out = dsrg_losses(logits, batch["label"], batch["classes"], batch["raw"], cfg, None)
        (out["loss_seed"] + out["loss_boundary"]).backward()
        assert torch.isfinite(logits.grad).all() and out["crf_wait_s"] > 0
        outs[backend] = out
    for k in ("loss_seed", "loss_boundary", "cov_after"):
        assert outs["torch"][k].item() == pytest.approx(outs["pydensecrf"][k].item(), rel=0.05), k


def test_crf_backend_config_is_checked():
    from bench.inputs import reference_dsrg_config
    from stages.common import REPO_ROOT, load_experiment
    from pipeline.settings import ConfigError

    assert reference_dsrg_config().crf_backend == "pydensecrf"
    with pytest.raises(ValueError, match=r"segmenter\.crf\.backend.*'cuda'"):
        dataclasses.replace(reference_dsrg_config(), crf_backend="cuda")
    pytest.importorskip("mmengine")         # the experiment loader (absent on a stock GPU host)
    with pytest.raises(ConfigError, match=r"segmenter\.crf\.backend='cuda' is not allowed"):
        load_experiment(REPO_ROOT / "configs" / "demo_synthetic.py", {"segmenter.crf.backend": "cuda"})


def test_exact_kernel_is_the_one_the_lattice_approximates():
    """pydensecrf's normalised Gaussian kernel, read off its inference (bench.crf_agreement):
    both are the identity at σ = 0.25 px; at σ = 2 px the lattice's column also sums to 1 and
    lies within ~10 % (L1) of the exact one, centred on the same cell."""
    pytest.importorskip("pydensecrf.densecrf")
    from bench.crf_agreement import lattice_columns
    narrow, wide = lattice_columns(sigmas=(0.25, 2.0), size=15)
    assert narrow["l1"] < 0.01 and narrow["self_lattice"] == pytest.approx(1.0, abs=1e-3)
    assert wide["sum_lattice"] == pytest.approx(1.0, abs=0.02) and wide["l1"] < 0.15
    assert wide["self_exact"] == pytest.approx(wide["self_lattice"], rel=0.25)
    assert 1.8 < wide["best_sigma"] < 2.3
