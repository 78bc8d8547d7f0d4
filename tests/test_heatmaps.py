"""Tests for pipeline.heatmaps: multi-scale/flip aggregation, normalisation, storage."""
import numpy as np
import pytest
import torch

from pipeline.data.files import load_heatmap, save_heatmap
from pipeline.heatmaps import aggregate_heatmaps, class_specific_lambda, normalise_per_class


def _conv_forward():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 3, 3, 3, generator=g)  # not mirror-symmetric

    def fwd(x):
        cam = torch.nn.functional.conv2d(x, w, stride=2, padding=1)
        return {"cam": cam, "lam": torch.sigmoid(cam.sum(1))}
    return fwd


def test_flip_consistency_and_shapes():
    x = torch.randn(2, 3, 21, 30, generator=torch.Generator().manual_seed(1))
    fwd = _conv_forward()
    a = aggregate_heatmaps(fwd, x, scales=(1.0, 0.75, 1.5), flip=True, stride=2)
    b = aggregate_heatmaps(fwd, x.flip(-1), scales=(1.0, 0.75, 1.5), flip=True, stride=2)
    assert a["cam"].shape == (2, 2, 21, 30) and a["lam"].shape == (2, 21, 30)
    torch.testing.assert_close(b["cam"], a["cam"].flip(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["lam"], a["lam"].flip(-1), atol=1e-5, rtol=1e-5)
    # without flip averaging the conv is not flip-equivariant: the test above is meaningful
    c = aggregate_heatmaps(fwd, x, flip=False, stride=2)
    d = aggregate_heatmaps(fwd, x.flip(-1), flip=False, stride=2)
    assert (d["cam"] - c["cam"].flip(-1)).abs().max() > 1e-2


def test_single_scale_no_flip_is_upsampled_output():
    x = torch.randn(1, 3, 16, 16)
    fwd = _conv_forward()
    out = aggregate_heatmaps(fwd, x, scales=(1.0,), flip=False, stride=2)
    cam = fwd(x)["cam"]                   # stride 2, pad 1: cell i sits on pixel 2i
    torch.testing.assert_close(out["cam"][..., ::2, ::2], cam)
    torch.testing.assert_close(out["cam"][..., 1:15:2, ::2], (cam[..., :7, :] + cam[..., 1:, :]) / 2)
    torch.testing.assert_close(out["cam"][..., 15, ::2], cam[..., 7, :])     # beyond the last cell
    no_lam = aggregate_heatmaps(lambda t: {"cam": fwd(t)["cam"]}, x)
    assert no_lam["lam"] is None


def test_normalise_per_class():
    cam = torch.tensor([[[[-1.0, 2.0], [4.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[-3.0, -1.0], [-2.0, -5.0]]]])
    n = normalise_per_class(cam)
    assert n[0, 0].tolist() == [[0.0, 0.5], [1.0, 0.25]]
    assert n[0, 1].abs().sum() == 0 and n[0, 2].abs().sum() == 0
    nn = normalise_per_class(cam[0].numpy())
    np.testing.assert_allclose(nn, n[0].numpy())


def test_class_specific_lambda():
    lam = torch.tensor([[0.5, 1.0]])
    probs = torch.tensor([[[0.2, 0.6]], [[0.8, 0.4]]])
    out = class_specific_lambda(lam, probs)
    torch.testing.assert_close(out, torch.tensor([[[0.1, 0.6]], [[0.4, 0.4]]]))
    np.testing.assert_allclose(class_specific_lambda(lam.numpy(), probs.numpy()), out.numpy())


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    cam = rng.random((2, 7, 9)).astype(np.float32)
    lam = rng.random((7, 9)).astype(np.float32)
    p = tmp_path / "sub" / "2007_000032.npz"
    save_heatmap(p, cam, [3, 15], lam, extra={"scales": [1.0, 0.5], "model": "vgg16-ep"})
    r = load_heatmap(p)
    np.testing.assert_allclose(r["cam"], cam, atol=1e-3)
    np.testing.assert_allclose(r["lam"], lam, atol=1e-3)
    assert r["cam"].dtype == np.float32 and r["classes"] == [3, 15]
    assert r["extra"] == {"scales": [1.0, 0.5], "model": "vgg16-ep"}
    with np.load(p) as z:
        assert z["cam"].dtype == np.float16 and z["lam"].dtype == np.float16
    assert sorted(x.name for x in p.parent.iterdir()) == ["2007_000032.npz"]  # no tmp left
    save_heatmap(p, torch.from_numpy(cam[:1]), [3])
    r = load_heatmap(p)
    assert r["lam"] is None and r["classes"] == [3] and r["extra"] == {}


def test_save_errors(tmp_path):
    with pytest.raises(ValueError):
        save_heatmap(tmp_path / "x.npz", np.zeros((2, 3, 3)), [1])
    with pytest.raises(ValueError):
        save_heatmap(tmp_path / "x.npz", np.full((1, 3, 3), 1e6), [1])
    with pytest.raises(FileNotFoundError):
        load_heatmap(tmp_path / "nope.npz")
    assert not any(tmp_path.iterdir())
