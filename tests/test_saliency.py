"""Tests for pipeline.saliency: map import, RBD saliency, MAE / max-F."""
import numpy as np
import pytest
from PIL import Image

from pipeline.data.files import import_saliency, read_saliency
from pipeline.saliency import SaliencyQuality


def test_import_resizes_and_scales(tmp_path):
    Image.fromarray(np.full((10, 20), 128, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((30, 30, 3), 255, np.uint8)).save(tmp_path / "b.jpg")
    out = dict(import_saliency(tmp_path, ["a", "b"], [(20, 40), (30, 30)]))
    assert out["a"].shape == (20, 40) and out["a"].dtype == np.float32
    np.testing.assert_allclose(out["a"], 128 / 255, atol=1e-6)
    assert out["b"].shape == (30, 30) and out["b"].min() > 0.98
    out = dict(import_saliency(tmp_path, ["a"], {"a": (5, 10)}))
    assert out["a"].shape == (5, 10)


def test_import_resize_is_bilinear(tmp_path):
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "g.png")
    m = read_saliency(tmp_path / "g.png", (1, 4))
    assert m[0, 0] == pytest.approx(0.0, abs=1e-6) and m[0, 3] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < m[0, 1] < m[0, 2] < 1.0


def test_import_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_id"):
        list(import_saliency(tmp_path, ["missing_id"], [(4, 4)]))
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="broken.png"):
        list(import_saliency(tmp_path, ["broken"], [(4, 4)]))


def test_normalise_option(tmp_path):
    Image.fromarray(np.array([[50, 150]], np.uint8)).save(tmp_path / "n.png")
    m = read_saliency(tmp_path / "n.png", normalise=True)
    assert m.tolist() == [[0.0, 1.0]]


def test_rbd_bright_square():
    from pipeline.saliency import rbd_saliency
    rng = np.random.default_rng(0)
    img = np.full((64, 80, 3), 110, np.uint8)
    img[20:44, 30:54] = (230, 200, 60)
    img = np.clip(img + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    sal = rbd_saliency(img, n_segments=120)
    assert sal.shape == (64, 80) and sal.dtype == np.float32
    assert 0.0 <= sal.min() and sal.max() <= 1.0
    inside = np.zeros((64, 80), bool)
    inside[20:44, 30:54] = True
    assert sal[inside].mean() > sal[~inside].mean() + 0.4


def test_mae_and_max_f_hand_example():
    sal = np.array([[0.9, 0.6], [0.3, 0.0]])
    gt = np.array([[1, 0], [1, 0]], bool)
    q = SaliencyQuality()
    q.update(sal, gt)
    r = q.summary()
    assert r["MAE"] == pytest.approx((0.1 + 0.6 + 0.7 + 0.0) / 4)
    # thresholds in (0.6, 0.9]: P = 1, R = 1/2 -> F = 1.3 * 0.5 / (0.3 + 0.5)
    assert r["maxF"] == pytest.approx(1.3 * 0.5 / 0.8)
    assert 0.6 < r["best_threshold"] <= 0.9


def test_quality_accumulates_over_images():
    q = SaliencyQuality()
    q.update(np.array([[1.0, 0.0]]), np.array([[1, 0]]))          # perfect: P = R = 1 up to t = 1
    q.update(np.array([[1.0, 1.0]]), np.array([[0, 1]]))          # P = 1/2, R = 1 at every t
    q.update(np.array([[0.5, 0.5]]), np.array([[0, 0]]))          # no foreground: MAE only
    r = q.summary()
    assert r["MAE"] == pytest.approx((0 + 0.5 + 0.5) / 3)
    p, rec = (1 + 0.5) / 2, 1.0
    assert r["maxF"] == pytest.approx(1.3 * p * rec / (0.3 * p + rec))
    assert r["images"] == 3
