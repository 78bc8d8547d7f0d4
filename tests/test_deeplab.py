"""DeepLab v2 VGG-16: output size, ImageNet conv loading, parameter groups."""
import pytest
import torch

from pipeline.models.deeplab import DeepLabV2VGG16
from pipeline.models.imagenet import VGG16_CONV_INDICES
from stage_helpers import vgg16_layout_state


def test_output_41_for_321_small_width():
    torch.manual_seed(0)
    net = DeepLabV2VGG16(5, width=1 / 16).eval()
    assert min(c.out_channels for c in net.convs) == 8
    with torch.no_grad():
        out = net(torch.randn(1, 3, 321, 321))
    assert out.shape == (1, 5, 41, 41)
    assert DeepLabV2VGG16.output_size(321) == 41 and DeepLabV2VGG16.output_size(320) == 41


def test_batch_norm_forward_and_rates():
    net = DeepLabV2VGG16(3, width=1 / 16, batch_norm=True, rates=(1, 2)).train()
    out = net(torch.randn(2, 3, 41, 41))
    assert out.shape == (2, 3, DeepLabV2VGG16.output_size(41), DeepLabV2VGG16.output_size(41))
    out.mean().backward()
    assert len(net.aspp) == 2 and net.aspp[1].fc6.dilation == (2, 2)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    state = vgg16_layout_state(seed=1, fc=False)      # the 13 convolutions only
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random.pth"
    torch.save(state, path)
    return path, state


def test_load_imagenet_values_equal(vgg_file):
    path, state = vgg_file
    net = DeepLabV2VGG16(21, fc_channels=16)
    keys = net.load_imagenet(str(path)).keys
    assert len(keys) == 26
    for conv, idx in zip(net.convs, VGG16_CONV_INDICES):
        assert torch.equal(conv.weight, state[f"features.{idx}.weight"])
        assert torch.equal(conv.bias, state[f"features.{idx}.bias"])
    assert net.load_imagenet(None) is None


def test_load_imagenet_rejects_width_and_bn(vgg_file):
    path, _ = vgg_file
    with pytest.raises(ValueError, match="width"):
        DeepLabV2VGG16(21, fc_channels=16, width=0.5).load_imagenet(str(path))
    with pytest.raises(ValueError, match="batch_norm"):
        DeepLabV2VGG16(21, fc_channels=16, batch_norm=True).load_imagenet(str(path))
    with pytest.raises(FileNotFoundError):
        DeepLabV2VGG16(21, fc_channels=16).load_imagenet(str(path) + ".missing")


@pytest.mark.parametrize("bn", [False, True])
def test_param_groups(bn):
    net = DeepLabV2VGG16(4, width=1 / 16, batch_norm=bn)
    groups = net.param_groups(1e-3, weight_decay=5e-4)
    seen = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in net.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable) and len(seen) == len(set(seen))
    by = {g["name"]: g for g in groups}
    assert set(by) == ({"weight", "bias", "fc8_weight", "fc8_bias"} | ({"norm"} if bn else set()))
    fc8_w = {id(br.fc8.weight) for br in net.aspp}
    fc8_b = {id(br.fc8.bias) for br in net.aspp}
    assert {id(p) for p in by["fc8_weight"]["params"]} == fc8_w
    assert {id(p) for p in by["fc8_bias"]["params"]} == fc8_b
    assert by["fc8_weight"]["lr"] == pytest.approx(1e-2)
    assert by["fc8_bias"]["lr"] == pytest.approx(2e-2) and by["fc8_bias"]["weight_decay"] == 0
    assert by["weight"]["lr"] == pytest.approx(1e-3)
    assert by["weight"]["weight_decay"] == pytest.approx(5e-4)
    assert by["bias"]["lr"] == pytest.approx(2e-3) and by["bias"]["weight_decay"] == 0
    assert id(net.convs[0].weight) in {id(p) for p in by["weight"]["params"]}
    assert id(net.aspp[0].fc6.bias) in {id(p) for p in by["bias"]["params"]}
    torch.optim.SGD(groups, lr=1e-3, momentum=0.9)       # accepted by an optimizer


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda_forward():
    net = DeepLabV2VGG16(3, width=1 / 16).cuda().eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 321, 321, device="cuda")).shape == (1, 3, 41, 41)
