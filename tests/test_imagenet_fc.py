"""ImageNet fc6 / fc7 decimated into the convolutional fc6 / fc7 (DeepLab's "VGG16 20M" init)."""
import pytest
import torch

from pipeline.models.classifier import build_classifier
from pipeline.models.deeplab import DeepLabV2VGG16
from pipeline.models.imagenet import VGG16_CONV_INDICES, VGG16_CONV_NAMES
from stage_helpers import vgg16_layout_state


@pytest.fixture(scope="module")
def tv_file(tmp_path_factory):
    """A random torchvision-layout VGG-16 state dict with fc6 / fc7, on disk."""
    state = vgg16_layout_state(seed=3)
    path = tmp_path_factory.mktemp("tv") / "vgg16_random_fc.pth"
    torch.save(state, path)
    return path, state


def expected_fc(state, filters: int):
    """The decimated slices, indexed element by element: filter 4f (step 4096/F), input
    channel c, taps 3i, 3j of the 7×7 kernel (flattened index c·49 + 7·3i + 3j)."""
    step = 4096 // filters
    rows = torch.arange(filters) * step
    c, i, j = torch.meshgrid(torch.arange(512), torch.arange(3), torch.arange(3), indexing="ij")
    cols = (c * 49 + 7 * 3 * i + 3 * j).reshape(-1)
    w6 = state["classifier.0.weight"][rows][:, cols].reshape(filters, 512, 3, 3)
    w7 = state["classifier.3.weight"][rows][:, rows].reshape(filters, filters, 1, 1)
    return w6, state["classifier.0.bias"][rows], w7, state["classifier.3.bias"][rows]


def test_deeplab_every_branch_gets_the_decimated_fc(tv_file):
    path, state = tv_file
    net = DeepLabV2VGG16(21, fc_channels=1024)
    report = net.load_imagenet(str(path))
    w6, b6, w7, b7 = expected_fc(state, 1024)
    for br in net.aspp:
        assert torch.equal(br.fc6.weight, w6) and torch.equal(br.fc6.bias, b6)
        assert torch.equal(br.fc7.weight, w7) and torch.equal(br.fc7.bias, b7)
    for conv, idx in zip(net.convs, VGG16_CONV_INDICES):
        assert torch.equal(conv.weight, state[f"features.{idx}.weight"])
    assert report.loaded == list(VGG16_CONV_NAMES) + [
        f"aspp.{i}.{k}" for i in range(4) for k in ("fc6", "fc7")]
    assert set(report.new) == {f"aspp.{i}.fc8" for i in range(4)}
    assert len(report.keys) == 26 + 4 and "classifier.0.weight" in report.keys
    assert "aspp.3.fc7" in report.describe()


def test_classifier_fc6_fc7_and_other_widths(tv_file):
    path, state = tv_file
    model = build_classifier(dict(backbone=dict(width=1.0), pretrained=str(path)), num_classes=3)
    w6, b6, w7, b7 = expected_fc(state, 1024)
    bb = model.backbone
    assert torch.equal(bb.fc6[0].weight, w6) and torch.equal(bb.fc6[0].bias, b6)
    assert torch.equal(bb.fc7[0].weight, w7) and torch.equal(bb.fc7[0].bias, b7)
    assert bb.init_report.loaded[-2:] == ["fc6", "fc7"]
    assert set(bb.init_report.new) == {"classifier"}
    # 256 filters: every 16th; 1000 filters do not divide 4096: fc6/fc7 keep their random init
    net = DeepLabV2VGG16(5, fc_channels=256, rates=(6,))
    net.load_imagenet(str(path))
    assert torch.equal(net.aspp[0].fc6.weight, expected_fc(state, 256)[0])
    odd = DeepLabV2VGG16(5, fc_channels=1000, rates=(6,))
    before = odd.aspp[0].fc6.weight.clone()
    report = odd.load_imagenet(str(path))
    assert torch.equal(odd.aspp[0].fc6.weight, before)
    assert "aspp.0.fc6" in report.new and "dividing 4096" in report.new["aspp.0.fc6"]
    assert "aspp.0.fc6" not in report.loaded


def test_without_classifier_keys_only_the_convs_load(tmp_path):
    state = vgg16_layout_state(seed=4, fc=False)
    path = tmp_path / "convs_only.pth"
    torch.save(state, path)
    net = DeepLabV2VGG16(21, fc_channels=64, rates=(6, 12))
    fc6_before = net.aspp[1].fc6.weight.clone()
    report = net.load_imagenet(str(path))
    assert torch.equal(net.convs[12].weight, state["features.28.weight"])
    assert torch.equal(net.aspp[1].fc6.weight, fc6_before)
    assert report.loaded == list(VGG16_CONV_NAMES) and len(report.keys) == 26
    for name in ("aspp.0.fc6", "aspp.0.fc7", "aspp.1.fc6", "aspp.1.fc7"):
        assert "no classifier.0/classifier.3" in report.new[name]
    assert "new (random) layers: aspp.0.fc6 (the file has no" in report.describe()
