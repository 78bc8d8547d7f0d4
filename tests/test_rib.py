"""RIB per-image fine-tuning (pipeline/rib.py): exact restoration, changed heatmaps, early stops."""
from __future__ import annotations

import pytest
import torch

from pathlib import Path

from mmengine.config import Config

from pipeline.models.classifier import build_classifier
from pipeline.rib import RIB_OPTIONS, pick_negatives, plain_cam, rib_heatmaps
from pipeline.settings.cues import RIBSettings

pytestmark = pytest.mark.usefixtures("one_thread")

K = 3
# the reference RIB options of configs/_base_/cues.py (heatmaps.rib + the heatmaps views)
BASE = Config.fromfile(str(Path(__file__).resolve().parent.parent / "configs/_base_/cues.py"))
REFERENCE = {**RIBSettings.from_dict(BASE.heatmaps.rib.to_dict(), "heatmaps.rib").algorithm_options(),
             "scales": BASE.heatmaps.scales, "flip": BASE.heatmaps.flip}
FAST = {**REFERENCE, **dict(steps=3, lr=5e-3, scales=(1.0, 0.5), flip=True, max_logit=1e6,
                            explode_ratio=1.1, neg_batch=2)}


def _net(pooling="ep", bn=True):
    torch.manual_seed(0)
    net = build_classifier(dict(backbone=dict(width=0.125, batch_norm=bn), pooling=pooling,
                                pretrained=None), K)
    torch.nn.init.normal_(net.classifier.weight, std=0.3)
    return net


def _inputs():
    g = torch.Generator().manual_seed(1)
    image = torch.randn(3, 32, 32, generator=g)
    labels = torch.tensor([1.0, 0.0, 1.0])
    negatives = torch.randn(3, 3, 24, 24, generator=g)
    neg_labels = torch.tensor([[0.0, 1.0, 0.0]] * 3)
    return image, labels, negatives, neg_labels


def _snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("train_mode_before", [False, True])
def test_restores_weights_and_changes_heatmap(train_mode_before):
    net = _net()
    net.train(train_mode_before)
    image, labels, negatives, neg_labels = _inputs()
    before = _snapshot(net)
    flags = [p.requires_grad for p in net.parameters()]
    plain = plain_cam(net, image, labels, scales=FAST["scales"], flip=True)
    assert net.training == train_mode_before
    cams = []
    for _ in range(2):                                   # two "images" in a row
        cam, info = rib_heatmaps(net, image, labels, negatives, FAST, negative_labels=neg_labels,
                                 return_info=True)
        assert _same(before, _snapshot(net))            # weights AND BN buffers, bit-exact
        assert net.pooling_name == "ep" and net.pooling_cfg["type"] == "ep"
        assert net.training == train_mode_before
        assert all(m.training == train_mode_before for m in net.modules())
        assert [p.requires_grad for p in net.parameters()] == flags
        assert all(p.grad is None for p in net.parameters())
        assert info["updates"] == 3 and info["steps"] == 3 and info["stop"] == "steps"
        cams.append(cam)
    assert torch.equal(cams[0], cams[1])                # the second run starts from the same weights
    cam = cams[0]
    assert cam.shape == (K, 32, 32)
    assert torch.all(cam[1] == 0) and cam[[0, 2]].amax(dim=(1, 2)).allclose(torch.ones(2))
    assert (cam - plain).abs().max() > 1e-3              # fine-tuning changed the target's maps


def test_forced_explosion_stops_at_the_first_step():
    net = _net()
    image, labels, negatives, neg_labels = _inputs()
    before = _snapshot(net)
    cfg = {**FAST, "max_logit": -1e9}                    # any logit "explodes"
    cam, info = rib_heatmaps(net, image, labels, negatives, cfg, negative_labels=neg_labels,
                             return_info=True)
    assert info["stop"] == "logit" and info["steps"] == 1 and info["updates"] == 0
    assert _same(before, _snapshot(net))
    plain = plain_cam(net, image, labels, scales=FAST["scales"], flip=True)
    assert torch.allclose(cam, plain, atol=1e-5)        # only the untouched step-0 CAM


def test_coverage_stop_and_no_labels():
    net = _net()
    image, labels, negatives, neg_labels = _inputs()
    cfg = {**FAST, "explode_ratio": -1.0}                # any coverage counts as exploded
    _, info = rib_heatmaps(net, image, labels, negatives, cfg, negative_labels=neg_labels,
                           return_info=True)
    assert info["stop"] == "coverage" and info["steps"] == 1 and info["updates"] == 1
    cam, info = rib_heatmaps(net, image, torch.zeros(K), negatives, FAST, return_info=True)
    assert info["stop"] == "no_labels" and torch.all(cam == 0)
    with pytest.raises(ValueError):
        rib_heatmaps(net, image, labels, negatives, {"stepz": 3})


def test_caller_optimizer_state_is_restored():
    net = _net(bn=False)
    image, labels, negatives, neg_labels = _inputs()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(image[None])["logits"].sum().backward()
    opt.step()                                           # give Adam some state
    opt.zero_grad(set_to_none=True)
    before_w = _snapshot(net)
    before_opt = opt.state_dict()
    before_opt = {"param_groups": [dict(g) for g in before_opt["param_groups"]],
                  "state": {k: {n: (t.clone() if torch.is_tensor(t) else t) for n, t in v.items()}
                            for k, v in before_opt["state"].items()}}
    cam = rib_heatmaps(net, image, labels, None, {**FAST, "steps": 2}, optimizer=opt)
    assert cam.shape == (K, 32, 32)
    assert _same(before_w, _snapshot(net))
    after = opt.state_dict()
    assert after["param_groups"] == before_opt["param_groups"]
    for k, v in before_opt["state"].items():
        for n, t in v.items():
            assert torch.equal(after["state"][k][n], t) if torch.is_tensor(t) else after["state"][k][n] == t


def test_defaults_and_pick_negatives():
    # RIB's VOC settings (NeurIPS 2021): 10 steps, lr 8e-6, GNDRP tau 0.4
    assert REFERENCE["steps"] == 10 and REFERENCE["lr"] == 8e-6 and REFERENCE["tau"] == 0.4
    assert sorted(REFERENCE) == sorted(RIB_OPTIONS)
    labels = {"a": [1], "b": [2], "c": [1, 3], "d": [3], "e": []}
    negs = pick_negatives(labels, [1], 5)
    assert sorted(negs) == ["b", "d"]
    assert sorted(pick_negatives(labels, [3], 5)) == ["a", "b"]
    assert pick_negatives(labels, [3], 5, exclude=["b"]) == ["a"]
    assert len(pick_negatives(labels, [3], 1)) == 1
    assert pick_negatives(labels, [1, 2, 3], 5) == []
