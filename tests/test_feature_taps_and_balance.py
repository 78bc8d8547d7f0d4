"""Options for frozen-feature segmenters on real photos: multi-level frozen features
(``backbone.taps``), a 1×1 projection before ASPP (``segmenter.model.reduce``) and per-class loss
weights (``segmenter.class_balance``: pipeline.losses.class_balance_weights in the DSRG seeding
loss and in cross-entropy)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.files import label_pixel_counts, write_label_png
from pipeline.dsrg import ce_loss
from pipeline.losses import balanced_seeding_loss, class_balance_weights
from pipeline.models.deeplab import build_segmenter
from pipeline.models.efficientnet_lite import EfficientNetLite
from pipeline.settings import ConfigError
from stage_helpers import randomise_weights




def test_taps_concatenate_the_named_frozen_layers():
    ref = randomise_weights(EfficientNetLite(0, frozen_blocks=16, head=True)).eval()
    net = EfficientNetLite(0, frozen_blocks=16, head=False, taps=(10, 15, "head")).eval()
    net.load_state_dict(ref.state_dict())
    assert net.out_channels == 112 + 320 + 1280
    x = torch.randn(2, 3, 49, 49)
    with torch.no_grad():
        feats, blocks = [], {}
        h = ref.act(ref.stem_bn(ref.stem_conv(x)))
        for i, block in enumerate(ref.blocks):
            h = block(h)
            blocks[i] = h
        head, _ = ref(x)
        want = torch.cat([blocks[10], blocks[15], head], 1)
        got, bew = net(x)
        again, _ = net(net.trunk(x), from_trunk=True)
    assert bew == [] and torch.allclose(got, want) and torch.equal(got, again)
    assert got.shape[-1] == EfficientNetLite.output_size(49)
    # nothing of the trunk trains, the head conv included
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.head_bn.training and not net.blocks[15].bn1.training


@pytest.mark.parametrize("kwargs, match", [
    (dict(frozen_blocks=12, head=False, taps=(10,)), "whole trunk frozen"),
    (dict(frozen_blocks=16, head=True, taps=(10,)), "whole trunk frozen"),
    (dict(frozen_blocks=16, head=False, taps=(2,)), "not on the stride-8 grid"),
    (dict(frozen_blocks=16, head=False, taps=(10, 10)), "twice"),
])
def test_taps_refuse_what_is_not_a_frozen_layer_on_the_grid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EfficientNetLite(0, **kwargs)


def test_reduce_projects_before_the_aspp_branches():
    cfg = dict(type="DeepLabV2VGG16", fc_channels=8, rates=(1, 2), dropout=0.0, reduce=16,
               backbone=dict(type="efficientnet_lite0", frozen_blocks=16, head=False, taps=(15, "head")))
    net = build_segmenter({**cfg, "pretrained": None}, 5).eval()
    assert net.reduce[0].in_channels == 1600 and net.reduce[0].out_channels == 16
    assert all(br.fc6.in_channels == 16 for br in net.aspp)
    with torch.no_grad():
        out = net(torch.randn(1, 3, 33, 33))
    assert out.shape == (1, 5, 5, 5)
    trainable = {n.split(".")[0] for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"reduce", "aspp"}
    with pytest.raises(ValueError, match="reduce is an EfficientNet setting"):
        build_segmenter(dict(type="DeepLabV2VGG16", fc_channels=8, rates=(1,), width=0.125,
                             reduce=4, pretrained=None), 5)


def test_config_checks_name_the_taps_and_reduce_keys():
    from stages.common import load_experiment
    with pytest.raises(ConfigError, match="segmenter.model.backbone.taps"):
        load_experiment("configs/demo_synthetic.py", {"segmenter.model.backbone.taps": (10,)})
    with pytest.raises(ConfigError, match="segmenter.model.reduce"):
        load_experiment("configs/demo_synthetic.py", {"segmenter.model.reduce": 64})
    with pytest.raises(ConfigError, match="taps"):
        load_experiment("configs/realphoto_cpu.py", {"segmenter.model.backbone.taps": (10,),
                                                     "segmenter.model.backbone.frozen_blocks": 12})
    with pytest.raises(ConfigError, match="segmenter.class_balance.power"):
        load_experiment("configs/demo_synthetic.py", {"segmenter.class_balance.power": -1})


def test_class_balance_weights_formula():
    w = class_balance_weights([1000, 10, 0, 250], power=0.5, max_weight=50)
    assert torch.allclose(w, torch.tensor([1.0, 10.0, 1.0, 2.0]))
    assert torch.equal(class_balance_weights([1000, 10, 0, 250], power=0.0, max_weight=50), torch.ones(4))
    assert class_balance_weights([10 ** 6, 1], power=1.0, max_weight=50)[1] == 50
    with pytest.raises(ValueError):
        class_balance_weights([5, -1], 0.5, 50)


def test_weighted_seeding_loss_reweights_only_the_foreground_classes():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, 3, 6, 6, generator=g), 1)
    seeds = torch.zeros(2, 3, 6, 6, dtype=torch.bool)
    seeds[:, 0, :2] = True
    seeds[:, 1, 2:5] = True          # a frequent class
    seeds[:, 2, 5, :2] = True        # a rare class
    ref, parts = balanced_seeding_loss(probs, seeds)
    same, _ = balanced_seeding_loss(probs, seeds, class_weights=torch.ones(3))
    assert torch.allclose(ref, same)
    _, heavy = balanced_seeding_loss(probs, seeds, class_weights=torch.tensor([7.0, 1.0, 5.0]))
    logp = probs.log()
    want = -((logp[:, 1] * seeds[:, 1]).flatten(1).sum(1) + 5 * (logp[:, 2] * seeds[:, 2]).flatten(1).sum(1)) \
        / (seeds[:, 1].flatten(1).sum(1) + 5 * seeds[:, 2].flatten(1).sum(1))
    assert torch.allclose(heavy["fg"], want.mean()) and torch.allclose(heavy["bg"], parts["bg"])


def test_weighted_cross_entropy_is_the_weighted_mean():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    labels = torch.randint(0, 3, (2, 4, 4), generator=g)
    labels[0, 0] = 255
    w = torch.tensor([1.0, 3.0, 0.5])
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    valid = labels != 255
    wy = w[labels.clamp(max=2)] * valid
    assert torch.allclose(ce_loss(logits, labels, "input", w), (per_pixel * wy).sum() / wy.sum())
    assert torch.allclose(ce_loss(logits, labels, "input"), per_pixel[valid].mean())


def test_label_pixel_counts_skip_ignored_pixels(tmp_path):
    a = np.array([[0, 0, 1], [255, 2, 2]], dtype=np.uint8)
    b = np.array([[1, 1, 1], [255, 255, 0]], dtype=np.uint8)
    write_label_png(tmp_path / "a.png", a)
    write_label_png(tmp_path / "b.png", b)
    assert label_pixel_counts([tmp_path / "a.png", tmp_path / "b.png"], 3).tolist() == [3, 4, 2]


def test_the_trunk_cache_keeps_tapped_features_apart(tmp_path):
    from pipeline.runtime.trunk_cache import trunk_cache_dir
    plain = dict(type="efficientnet_lite0", frozen_blocks=16)
    a = trunk_cache_dir(tmp_path, plain, None, 225)
    b = trunk_cache_dir(tmp_path, {**plain, "taps": (10, 15, "head")}, None, 225)
    assert a != b and a == trunk_cache_dir(tmp_path, {**plain, "taps": ()}, None, 225)
