"""Training-free affinity refinement of class maps (pipeline/affinity.py) and its use by the
heatmaps stage's inference (heatmaps.refine)."""
from __future__ import annotations

import pytest
import torch

from pipeline.affinity import feature_affinity_transition, random_walk, refine_cam
from pipeline.heatmaps import infer_batch


def _two_regions(h=6, w=8):
    """Features of two regions (left 3 columns / the rest) with orthogonal vectors."""
    f = torch.zeros(1, 4, h, w)
    f[0, 0, :, :3] = 1.0
    f[0, 1, :, 3:] = 1.0
    return f


def test_transition_is_row_stochastic_local_and_follows_feature_edges():
    f = _two_regions()
    T = feature_affinity_transition(f, beta=4.0, radius=2)
    assert T.shape == (1, 48, 48) and torch.allclose(T.sum(-1), torch.ones(1, 48))
    left, right, far = 0 * 8 + 1, 0 * 8 + 4, 5 * 8 + 1    # (0,1) | (0,4) | (5,1)
    assert T[0, left, right] == 0                          # orthogonal features: no affinity
    assert T[0, left, far] == 0                            # farther than the radius
    assert T[0, left, 1 * 8 + 2] > 0                       # same region, inside the radius
    with pytest.raises(ValueError):
        feature_affinity_transition(f, beta=0, radius=2)


def test_random_walk_spreads_inside_a_region_and_not_across():
    f = _two_regions()
    cam = torch.zeros(1, 1, 6, 8)
    cam[0, 0, 2, 1] = 9.0                                  # one peak in the left region
    out = refine_cam(cam, f, beta=8.0, radius=3, iterations=6)
    assert out[0, 0, :, :3].min() > 0                      # reached the whole left region
    assert out[0, 0, :, 3:].abs().max() == 0               # nothing crossed the feature edge
    assert out.max() <= cam.max()                          # each step is a weighted mean
    # iterations=0 is ReLU(cam); the walk is T applied t times
    neg = cam - 1.0
    assert torch.equal(refine_cam(neg, f, 8.0, 3, 0), neg.clamp_min(0))
    T = feature_affinity_transition(f, 8.0, 3)
    two = random_walk(cam, T, 2)
    assert torch.allclose(two.flatten(), T[0] @ (T[0] @ cam.flatten()))


def test_infer_batch_refines_each_view_when_asked():
    class Net(torch.nn.Module):
        num_classes = 1

        def forward(self, x):
            feats = torch.zeros(x.shape[0], 2, 5, 5)
            feats[:, 0, :, :2], feats[:, 1, :, 2:] = 1.0, 1.0
            cam = torch.zeros(x.shape[0], 1, 5, 5)
            cam[:, 0, 2, 0] = 5.0
            return {"logits": torch.zeros(x.shape[0], 1), "cam": cam, "lam": torch.ones(x.shape[0], 5, 5),
                    "features": feats}

    x = torch.zeros(1, 3, 33, 33)
    plain = infer_batch(Net(), x, (1.0,), False, False, False)
    off = infer_batch(Net(), x, (1.0,), False, False, False, dict(iterations=0, beta=8.0, radius=3))
    on = infer_batch(Net(), x, (1.0,), False, False, False, dict(iterations=5, beta=8.0, radius=3))
    assert torch.equal(plain["cam"], off["cam"])
    # spread along the left columns (input pixels 0..8 map to cells 0..1), not to the right
    assert on["cam"][0, 0, 32, 0] > 0 == plain["cam"][0, 0, 32, 0]
    assert on["cam"][0, 0, 16, 32] == 0


def test_refine_is_a_classifier_source_option():
    from pipeline.settings import ConfigError
    from stages.common import load_experiment
    with pytest.raises(ConfigError, match="heatmaps.refine.iterations"):
        load_experiment("configs/demo_synthetic.py", {"heatmaps.source": "rib", "heatmaps.refine.iterations": 3})
    cfg = load_experiment("configs/demo_synthetic.py", {"heatmaps.refine.iterations": 3})
    assert cfg.heatmaps.refine.iterations == 3
