"""VGG-16 backbone shapes and options; WSSSClassifier forward, pooling swap and losses."""
import pytest
import torch

from pipeline.models.classifier import WSSSClassifier, build_classifier, multilabel_loss
from pipeline.models.lip import LocalImportancePooling
from pipeline.models.sge import SpatialGroupEnhance
from pipeline.models.vgg import VGG16Backbone

SMALL = dict(width=0.125, batch_norm=False, dropout=0.5, fc6_dilation=1)


def small_cfg(pooling="ep", **backbone):
    return dict(backbone={**SMALL, **backbone}, pooling=dict(type=pooling, detach_lambda=False, tau=0.4),
                pretrained=None, bew_loss_weight=0.5)


@pytest.mark.parametrize("options", [
    dict(),
    dict(batch_norm=True),
    dict(sge_after=("conv3", "conv4", "conv5"), lip_pools=("pool1", "pool2", "pool3", "pool4", "pool5"),
         bew_before=("pool4", "pool5")),
])
def test_vgg_321_gives_41(options):
    torch.manual_seed(0)
    net = VGG16Backbone(**{**SMALL, **options}, num_classes=3).eval()
    assert len(net.conv_layers()) == 13
    assert [c.out_channels for c in net.conv_layers()] == [8, 8, 16, 16] + [32] * 3 + [64] * 6
    assert [c.dilation for c in net.conv_layers()[-3:]] == [(2, 2)] * 3
    with torch.no_grad():
        features, bew = net(torch.randn(1, 3, 321, 321))
    assert features.shape == (1, 128, 41, 41) and net.out_channels == 128
    assert len(bew) == len(options.get("bew_before", ()))
    for branch in bew:
        assert branch["logits"].shape == (1, 3) and branch["lam"].shape == (1, 41, 41)
    assert torch.isfinite(features).all()


def test_vgg_options_build_the_right_modules():
    net = VGG16Backbone(**{**SMALL, "batch_norm": True}, sge_after=["conv2"], sge_groups=32,
                        lip_pools=["pool2", "pool5"], bew_before=["pool5"], num_classes=2)
    assert isinstance(net.sge["conv2"], SpatialGroupEnhance) and net.sge["conv2"].groups == 16
    assert isinstance(net.pools["pool2"], LocalImportancePooling) and net.pools["pool2"].stride == 2
    assert net.pools["pool5"].stride == 1 and list(net.bew) == ["pool5"]
    assert isinstance(net.blocks["conv1"][0][1], torch.nn.BatchNorm2d)
    with pytest.raises(ValueError, match="sge_after"):
        VGG16Backbone(**SMALL, sge_after=("conv6",))
    with pytest.raises(ValueError, match="num_classes"):
        VGG16Backbone(**SMALL, bew_before=("pool4",))
    with pytest.raises(ValueError, match="bew_before"):
        VGG16Backbone(**SMALL, bew_before=("pool3",), num_classes=2)
    dilated = VGG16Backbone(**{**SMALL, "fc6_dilation": 4})
    assert dilated.fc6[0].dilation == (4, 4) and dilated.fc6[0].padding == (4, 4)


def test_classifier_forward_shapes_and_gradients():
    torch.manual_seed(0)
    model = build_classifier(small_cfg("ep", bew_before=("pool4", "pool5")), num_classes=3)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    out = model(images, labels)
    assert out["logits"].shape == (2, 3) and out["cam"].shape == (2, 3, 5, 5)
    assert out["lam"].shape == (2, 5, 5) and [a.shape for a in out["aux_logits"]] == [(2, 3)] * 2
    total, parts = model.classification_loss(out, labels)
    assert set(parts) == {"cls", "bew_0", "bew_1", "total"}
    expected = parts["cls"] + 0.5 * (parts["bew_0"] + parts["bew_1"])
    assert torch.allclose(total.detach(), expected)
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.backbone.bew["pool4"].classifier.weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() > 0


def test_ep_adds_no_parameters_and_ep_inference_only_changes_pooling():
    torch.manual_seed(0)
    gap = build_classifier(small_cfg("gap"), num_classes=4).eval()
    ep = build_classifier(small_cfg("ep"), num_classes=4)
    count = lambda m: sum(p.numel() for p in m.parameters())     # noqa: E731
    assert count(gap) == count(ep) and gap.state_dict().keys() == ep.state_dict().keys()
    images = torch.randn(2, 3, 32, 32)
    before = {k: v.clone() for k, v in gap.state_dict().items()}
    with torch.no_grad():
        out_gap = gap(images)
        gap.set_pooling("ep")
        out_ep = gap(images)
    assert gap.pooling_name == "ep"
    after = gap.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(out_gap["cam"], out_ep["cam"]) and torch.equal(out_gap["lam"], out_ep["lam"])
    assert not torch.allclose(out_gap["logits"], out_ep["logits"])
    assert torch.allclose(out_gap["logits"], out_gap["cam"].mean((2, 3)), atol=1e-6)


def test_gndrp_model_uses_labels_only_in_training():
    torch.manual_seed(0)
    model = build_classifier(small_cfg("gndrp"), num_classes=2).eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        plain = model(images)
        labelled = model(images, torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(plain["logits"], plain["cam"].mean((2, 3)), atol=1e-6)
    assert torch.allclose(labelled["logits"][:, 1], plain["logits"][:, 1])
    assert not torch.allclose(labelled["logits"][:, 0], plain["logits"][:, 0])


def test_losses():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    raw = multilabel_loss(logits, targets, "raw_logit")
    assert raw.item() == pytest.approx(-((2.0 + 0.5) / 2 + 0.0) / 2)
    soft = multilabel_loss(logits, targets, "multilabel_soft_margin")
    by_hand = -(targets * torch.sigmoid(logits).log() + (1 - targets) * torch.sigmoid(-logits).log()).mean()
    assert soft.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert multilabel_loss(logits, targets, "bce").item() == pytest.approx(soft.item(), rel=1e-6)
    with pytest.raises(ValueError, match="loss_type"):
        multilabel_loss(logits, targets, "hinge")
    model = build_classifier(small_cfg("gap"), num_classes=3)
    out = dict(logits=logits, aux_logits=[logits * 2])
    total, parts = model.classification_loss(out, targets, "raw_logit", bew_loss_weight=0.25)
    assert total.item() == pytest.approx(raw.item() * 1.5)


def test_build_classifier_config_handling():
    model = build_classifier(dict(backbone=SMALL, pooling="gap"), num_classes=5)
    assert isinstance(model, WSSSClassifier) and model.pooling_name == "gap"
    assert model.classifier.out_channels == 5 and model.classifier.bias is not None
    no_bias = build_classifier(dict(backbone=SMALL, classifier_bias=False), num_classes=2)
    assert no_bias.classifier.bias is None and no_bias.pooling_name == "ep"
    no_bias.set_pooling("gndrp", tau=0.2)
    assert no_bias.pooling.tau == 0.2
    with pytest.raises(ValueError, match="unknown model config"):
        build_classifier(dict(backbone=SMALL, pool="ep"), num_classes=2)
