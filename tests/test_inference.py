"""pipeline.inference: multi-scale + flip inference, CRF post-processing, settings."""
import numpy as np
import pytest
import torch
from torch import nn

from pipeline.crf import CRFParams
from pipeline.inference import (InferenceSettings, crf_from_cfg, crf_postprocess, iter_segmentation,
                                merge_inference_cfg, open_crf_pool, predict_logits, predict_probs)
from pipeline.models.deeplab import DeepLabV2VGG16

C = 3
SCALES = (0.75, 1.0, 1.25)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    m = DeepLabV2VGG16(C, width=0.125, batch_norm=True)
    with torch.no_grad():                       # larger logits so the checks are not trivial
        for br in m.aspp:
            br.fc8.weight.mul_(30)
    return m.eval()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (30, 45, 3), dtype=np.uint8),
            rng.integers(0, 256, (37, 26, 3), dtype=np.uint8)]


class ConstNet(nn.Module):
    """Logits = a fixed (C,) vector at stride 4 (independent of the input)."""

    def __init__(self, vec):
        super().__init__()
        self.vec = torch.tensor(vec, dtype=torch.float32)

    def forward(self, x):
        b, _, h, w = x.shape
        return self.vec.view(1, -1, 1, 1).expand(b, -1, (h + 3) // 4, (w + 3) // 4).clone()


@pytest.mark.parametrize("size", [32, None])
def test_output_is_original_size_and_a_distribution(net, images, size):
    probs = predict_probs(net, images, SCALES, True, size=size, batch_size=2)
    for img, p in zip(images, probs):
        assert p.shape == (C, *img.shape[:2]) and p.dtype == np.float32
        np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)


def test_flip_averaging_is_flip_consistent(net, images):
    flipped = [im[:, ::-1].copy() for im in images]
    for size in (32, None):
        a = predict_logits(net, images, SCALES, True, size=size, batch_size=2)
        b = predict_logits(net, flipped, SCALES, True, size=size, batch_size=2)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.numpy(), y.flip(-1).numpy(), atol=1e-4)
    # without flip averaging the network itself is not flip-equivariant (the check means something)
    a = predict_logits(net, images[:1], SCALES, False, size=32)[0]
    b = predict_logits(net, flipped[:1], SCALES, False, size=32)[0]
    assert (a - b.flip(-1)).abs().max() > 1e-2


def test_scales_are_averaged_and_batching_does_not_matter(net, images):
    both = predict_logits(net, images, (0.75, 1.0), False, size=32, batch_size=2)
    s1 = predict_logits(net, images, (0.75,), False, size=32, batch_size=1)
    s2 = predict_logits(net, images, (1.0,), False, size=32, batch_size=1)
    for z, a, b in zip(both, s1, s2):
        np.testing.assert_allclose(z.numpy(), ((a + b) / 2).numpy(), atol=1e-4)
    # constant logits: average and softmax are exact
    p = predict_probs(ConstNet([0.0, 2.0, 1.0]), images, SCALES, True, size=None)
    ref = np.exp([0.0, 2.0, 1.0]) / np.exp([0.0, 2.0, 1.0]).sum()
    np.testing.assert_allclose(p[1][:, 5, 7], ref, rtol=1e-5)


def test_crf_keeps_a_valid_label_map_and_pool_matches_sequential(net, images):
    probs = predict_probs(net, images, (1.0,), True, size=None)
    params = CRFParams.preset("dsrg_test")
    seq = crf_postprocess(images, probs, params)
    for q, p in zip(seq, probs):
        assert q.shape == p.shape
        np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
        lab = q.argmax(0)
        assert lab.min() >= 0 and lab.max() < C
    settings = InferenceSettings(size=None, scales=(1.0,), flip=True, batch_size=2)
    items = [(f"id{i}", im) for i, im in enumerate(images)] * 2     # 4 items, chunk 3
    plain = list(iter_segmentation(net, items, settings, crf=params, chunk=3))
    pool = open_crf_pool(params, 2)
    try:
        par = crf_postprocess(images, probs, params, pool=pool)
        pooled = list(iter_segmentation(net, items, settings, crf=params, pool=pool, chunk=3))
    finally:
        pool.shutdown()
    for a, b in zip(seq, par):
        assert np.array_equal(a, b)
    assert [s.key for s in pooled] == [k for k, _ in items]
    for a, b in zip(plain, pooled):
        assert np.array_equal(a.label, b.label) and np.array_equal(a.label_crf, b.label_crf)
        assert a.label_crf.dtype == np.uint8 and a.label_crf.shape == a.image.shape[:2]
    assert np.array_equal(plain[0].label_crf, seq[0].argmax(0))


def test_settings_and_merge():
    ev = dict(size=321, scales=(0.75, 1.0, 1.25), flip=True, batch_size=8, amp=True,
              crf=dict(enabled=True, preset="dsrg_test", workers=2), n_overlays=8)
    sub = dict(split="test", size=None, scales=None, flip=None, batch_size=None, amp=None,
               crf=dict(workers=4))
    m = merge_inference_cfg(ev, sub)
    assert m["size"] == 321 and m["scales"] == (0.75, 1.0, 1.25) and m["crf"]["workers"] == 4
    assert m["crf"]["enabled"] is True
    s = InferenceSettings.from_cfg(merge_inference_cfg(ev, dict(size="original", flip=False)))
    assert s.size is None and s.flip is False and s.batch_size == 8
    params, workers = crf_from_cfg(dict(enabled=True, preset="dsrg_test", workers=2, bi_w=5))
    assert workers == 2 and params == CRFParams.preset("dsrg_test", bi_w=5)
    assert crf_from_cfg(dict(enabled=False, workers=2))[0] is None
    assert open_crf_pool(None, 4) is None and open_crf_pool(params, 1) is None
