"""Loading torchvision-layout VGG-16 weights into the classifier backbone."""
import pytest
import torch

from pipeline.models.classifier import build_classifier
from pipeline.models.imagenet import VGG16_CONV_INDICES
from pipeline.models.vgg import VGG16Backbone
from stage_helpers import vgg16_layout_state


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A random torchvision-layout VGG-16 state dict on disk: the ``features.*`` tensors plus
    one classifier key that is not fc6/fc7 (those stay random then)."""
    state = vgg16_layout_state(seed=0, fc=False)
    kept = {**state, "classifier.6.bias": torch.zeros(1000)}
    path = tmp_path_factory.mktemp("weights") / "vgg16_random.pth"
    torch.save(kept, path)
    return path, kept


def test_all_26_tensors_copied(vgg16_file):
    path, state = vgg16_file
    net = VGG16Backbone(width=1.0)
    fc6_before = net.fc6[0].weight.clone()
    copied = net.load_imagenet(str(path)).keys
    assert len(copied) == 26 and len(set(copied)) == 26
    for conv, index in zip(net.conv_layers(), VGG16_CONV_INDICES):
        assert torch.equal(conv.weight, state[f"features.{index}.weight"])
        assert torch.equal(conv.bias, state[f"features.{index}.bias"])
    assert torch.equal(net.fc6[0].weight, fc6_before)    # no classifier.0/.3 in the file: fc6/fc7 stay


def test_build_classifier_loads_pretrained(vgg16_file):
    path, state = vgg16_file
    model = build_classifier(dict(backbone=dict(width=1.0), pooling="ep", pretrained=str(path)),
                             num_classes=2)
    assert torch.equal(model.backbone.conv_layers()[12].weight, state["features.28.weight"])
    assert VGG16Backbone().load_imagenet(None) is None


def test_not_a_vgg16_file_raises_value_error_naming_it(tmp_path):
    resnet_path = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)},
               resnet_path)           # a ResNet-style state dict
    garbage_path = tmp_path / "garbage.pth"
    garbage_path.write_bytes(b"\x00\x01 this is not a checkpoint \xff" * 10)
    net = VGG16Backbone(width=1.0)
    for path in (resnet_path, garbage_path):
        with pytest.raises(ValueError) as info:
            net.load_imagenet(str(path))
        assert str(path) in str(info.value)


def test_missing_file_raises_file_not_found_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "vgg16.pth"
    with pytest.raises(FileNotFoundError) as info:
        VGG16Backbone(width=1.0).load_imagenet(str(missing))
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("options", [dict(width=0.5), dict(width=1.0, batch_norm=True)])
def test_incompatible_variant_with_imagenet_raises(options, vgg16_file):
    path, _ = vgg16_file
    with pytest.raises(ValueError, match="width=1 and batch_norm=False"):
        VGG16Backbone(**options).load_imagenet(str(path))
    with pytest.raises(ValueError, match="width=1"):
        build_classifier(dict(backbone=dict(width=0.25), pretrained="torchvision"), num_classes=2)
