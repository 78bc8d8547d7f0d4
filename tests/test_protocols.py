"""Test protocols (DSRG's test-ms-f.py / test-ms.py, resized-square): passes and fusion by hand."""
import numpy as np
import pytest
import torch
from torch import nn

from pipeline.inference import (DSRG_PROB_FLOOR, InferenceSettings, iter_segmentation,
                                merge_inference_cfg, settings_probs)


class SizeAndSideNet(nn.Module):
    """Fixed weights, logits constant over a stride-8 grid: class 0 = -40, class 1 = input height
    / 100, class 2 = +1 when the left half of the input is brighter than the right half, else -1.
    Records the input sizes it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        b, _, h, w = x.shape
        self.seen.append((b, h, w))
        side = torch.sign(x[..., : w // 2].mean((1, 2, 3)) - x[..., w - w // 2:].mean((1, 2, 3)))
        z = torch.stack([torch.full((b,), -40.0), torch.full((b,), h / 100.0), side], 1)
        return z[:, :, None, None].expand(b, 3, (h + 7) // 8, (w + 7) // 8).clone()


def softmax(z):
    e = np.exp(np.asarray(z, np.float64) - max(z))
    return e / e.sum()


@pytest.fixture()
def image():
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :30] = 200                       # bright left half
    return img


def run(cfg, image):
    net = SizeAndSideNet()
    settings = InferenceSettings.from_cfg(cfg)
    probs = settings_probs(net, [image], settings)[0]
    assert probs.shape == (3, 40, 60)
    return settings, net.seen, probs


def test_test_ms_f_sums_scales_of_the_original_without_flip(image):
    settings, seen, probs = run(dict(protocol="test-ms-f"), image)
    assert seen == [(1, 30, 45), (1, 40, 60), (1, 50, 75)]      # 0.75 / 1 / 1.25 of 40x60
    z = [-120.0, (30 + 40 + 50) / 100, 3.0]                        # summed, not averaged
    ref = np.maximum(softmax(z), DSRG_PROB_FLOOR)                  # floored, not renormalised
    np.testing.assert_allclose(probs[:, 7, 11], ref, rtol=1e-5)
    assert probs[0].min() == np.float32(DSRG_PROB_FLOOR)
    assert settings.describe() == {"protocol": "test-ms-f", "size": None, "scales": [0.75, 1.0, 1.25],
                                   "sizes": None, "flip": False, "fusion": "sum"}


def test_test_ms_uses_fixed_squares(image):
    settings, seen, probs = run(dict(protocol="test-ms", batch_size=4), image)
    assert seen == [(1, 241, 241), (1, 321, 321), (1, 401, 401)]
    ref = np.maximum(softmax([-120.0, 9.63, 3.0]), DSRG_PROB_FLOOR)
    np.testing.assert_allclose(probs[:, 0, 59], ref, rtol=1e-5)
    assert settings.protocol == "test-ms"


def test_resized_square_averages_flips_and_scales(image):
    settings, seen, probs = run(dict(protocol="resized-square", size=32), image)
    assert seen == [(2, 24, 24), (2, 32, 32), (2, 40, 40)]      # image + its mirror per scale
    z = [-40.0, (24 + 32 + 40) / 300, (3 - 3) / 6]                 # the flips cancel class 2
    np.testing.assert_allclose(probs[:, 20, 30], softmax(z), rtol=1e-5)
    assert probs[0].max() < 1e-15                                  # no floor
    assert settings.protocol == "resized-square+size"


def test_protocol_overrides_merge_and_errors(image):
    s = InferenceSettings.from_cfg(merge_inference_cfg(dict(protocol="test-ms-f", batch_size=8),
                                                       dict(flip=True, size=None)))
    assert s.flip is True and s.fusion == "sum" and s.batch_size == 8
    assert s.protocol == "test-ms-f+flip"
    assert InferenceSettings.from_cfg(dict(size=None, scales=(1.0,))).protocol == "custom"
    with pytest.raises(ValueError, match="protocol"):
        InferenceSettings.from_cfg(dict(protocol="test-ms-g"))
    with pytest.raises(ValueError, match="fusion"):
        InferenceSettings.from_cfg(dict(protocol="test-ms", fusion="max"))
    segs = list(iter_segmentation(SizeAndSideNet(), [("a", image)],
                                  InferenceSettings.from_cfg(dict(protocol="test-ms-f"))))
    assert segs[0].label.shape == (40, 60) and (segs[0].label == 2).all()


def test_full_resolution_logits_with_output_stride_1(image):
    """A network whose logits are already on the input's pixels (output_stride = 1, as the
    mmseg wrapper) is not stretched by the stride-8 geometry."""
    from pipeline.inference import predict_logits

    class PerPixel(nn.Module):
        output_stride = 1

        def forward(self, x):
            return torch.cat([x[:, :1], -x[:, :1]], 1)

    img = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    z = predict_logits(PerPixel(), [img], (1.0,), False, size=None)[0]
    ref = (img[..., 0].astype(np.float32) - 0.485 * 255) / (0.229 * 255)
    np.testing.assert_allclose(z[0].numpy(), ref, rtol=1e-5, atol=1e-5)
