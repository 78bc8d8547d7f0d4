"""Dense CRF wrapper (pydensecrf): distribution, strong unary, pool == sequential, errors."""
import numpy as np
import pytest
import torch

pytest.importorskip("pydensecrf.densecrf")

from pipeline.crf import (CRF_PRESETS, CRFParams, crf_batch, dense_crf,  # noqa: E402
                          downscale_image, make_crf_pool)


def random_case(rng, C=3, H=12, W=10):
    img = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    logits = rng.normal(size=(C, H, W)) * 2
    p = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    return img, p.astype(np.float32)


def two_halves(H=16, W=16, C=3, strong=0.98):
    img = np.zeros((H, W, 3), np.uint8)
    img[:, W // 2:] = 255
    p = np.full((C, H, W), (1 - strong) / (C - 1), np.float32)
    p[:, :, :W // 2] = (1 - strong) / (C - 1)
    p[1, :, :W // 2] = strong
    p[2, :, W // 2:] = strong
    return img, p


def test_presets():
    t = CRF_PRESETS["dsrg_train"]
    assert (t.bi_w, t.bi_rgb, t.pos_w, t.iterations, t.unary) == (10, 13, 3, 10, "prob")
    assert t.bi_xy == pytest.approx(80 / 12) and t.pos_xy == pytest.approx(3 / 12)
    assert CRF_PRESETS["dsrg_test"] == CRFParams(10, 80, 13, 3, 3, 10, "log")
    assert CRFParams.preset("deeplab_resnet") == CRFParams(4, 67, 3, 3, 1, 10, "log")
    assert CRFParams.preset("deeplab_vgg16", iterations=5).iterations == 5
    with pytest.raises(KeyError):
        CRFParams.preset("nope")
    with pytest.raises(ValueError):
        CRFParams(unary="energy")


@pytest.mark.parametrize("preset", sorted(CRF_PRESETS))
def test_output_is_distribution(preset):
    img, p = random_case(np.random.default_rng(0))
    q = dense_crf(img, p, CRF_PRESETS[preset])
    assert q.shape == p.shape and q.dtype == np.float32
    assert (q >= 0).all() and np.allclose(q.sum(0), 1, atol=1e-5)


@pytest.mark.parametrize("preset", ["deeplab_vgg16", "dsrg_test", "dsrg_train"])
def test_strong_unary_kept(preset):
    img, p = two_halves()
    q = dense_crf(img, p, CRF_PRESETS[preset])
    assert np.array_equal(q.argmax(0), p.argmax(0))
    assert q[1, :, :8].min() > 0.5 and q[2, :, 8:].min() > 0.5


def test_size_mismatch():
    img, p = random_case(np.random.default_rng(1))
    with pytest.raises(ValueError):
        dense_crf(img[:-1], p, CRF_PRESETS["deeplab_vgg16"])
    with pytest.raises(ValueError):
        crf_batch(img[None], np.stack([p, p]), CRF_PRESETS["deeplab_vgg16"])


def test_pool_equals_sequential_and_tensors():
    rng = np.random.default_rng(2)
    cases = [random_case(rng, H=9, W=11) for _ in range(3)]
    imgs = np.stack([c[0] for c in cases])
    probs = np.stack([c[1] for c in cases])
    params = CRF_PRESETS["dsrg_train"]
    seq = crf_batch(imgs, probs, params)
    pool = make_crf_pool(2)
    try:
        par = crf_batch(imgs, probs, params, pool=pool)
    finally:
        pool.shutdown()
    assert seq.shape == probs.shape and np.array_equal(seq, par)
    out = crf_batch(torch.from_numpy(imgs), torch.from_numpy(probs), params)
    assert torch.is_tensor(out) and np.array_equal(out.numpy(), seq)


def test_downscale_image():
    img = np.random.default_rng(3).integers(0, 256, size=(321, 300, 3), dtype=np.uint8)
    small = downscale_image(img, 41)
    assert small.shape == (41, 41, 3) and small.dtype == np.uint8
    assert np.array_equal(small[0, 0], img[0, 0]) and np.array_equal(small[-1, -1], img[-1, -1])
    assert (downscale_image(np.full((50, 40, 3), 77, np.uint8), (5, 4)) == 77).all()
