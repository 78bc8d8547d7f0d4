"""Entropy weights, pooling heads (GAP/EP/GNDRP), BEW, SGE and LIP on tiny tensors."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.bew import BranchedEntropyWeighting
from pipeline.models.lip import LocalImportancePooling, lip_pool
from pipeline.models.pooling import (POOLING_HEADS, EntropyPoolingHead, GAPHead, GNDRPHead,
                                     build_pooling, entropy_weights)
from pipeline.models.sge import SpatialGroupEnhance


def naive_entropy(scores):
    """Shannon entropy of softmax(scores), plain python."""
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return -sum(e / total * math.log(e / total) for e in exps if e > 0)


def naive_lambda(cam):
    """λ_i = 1 - H_i / max_j H_j for a (K, h, w) tensor, by loops."""
    k, h, w = cam.shape
    ent = [[naive_entropy([float(cam[c, y, x]) for c in range(k)]) for x in range(w)] for y in range(h)]
    top = max(max(row) for row in ent)
    return torch.tensor([[1 - e / top for e in row] for row in ent], dtype=torch.float64)


def conv1x1(weight, bias=None):
    k, c = weight.shape
    conv = nn.Conv2d(c, k, 1, bias=bias is not None).double()
    with torch.no_grad():
        conv.weight.copy_(weight.view(k, c, 1, 1))
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def test_ep_matches_hand_computation():
    # v_i at the 4 locations of a 1x2x2x2 map; W = diag(2, 1), b = (0.5, -0.5)
    vectors = [(0.0, 1.0), (1.0, 0.0), (2.0, 1.0), (0.0, 3.0)]
    features = torch.tensor(vectors, dtype=torch.float64).t().reshape(1, 2, 2, 2)
    weight = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    bias = torch.tensor([0.5, -0.5], dtype=torch.float64)
    scores = [(2 * a + 0.5, b - 0.5) for a, b in vectors]          # location 0: (0.5, 0.5) uniform
    entropies = [naive_entropy(s) for s in scores]
    assert entropies[0] == pytest.approx(math.log(2))
    lam = [1 - e / max(entropies) for e in entropies]
    pooled = [sum(l * v[c] for l, v in zip(lam, vectors)) / 4 for c in range(2)]
    expected = [2 * pooled[0] + 0.5, pooled[1] - 0.5]

    out = EntropyPoolingHead()(features, conv1x1(weight, bias))
    assert out["lam"].shape == (1, 2, 2)
    assert out["lam"][0, 0, 0].item() == 0.0                        # max-entropy location
    assert torch.allclose(out["lam"].flatten(), torch.tensor(lam, dtype=torch.float64))
    assert torch.allclose(out["logits"][0], torch.tensor(expected, dtype=torch.float64))
    assert torch.allclose(out["cam"].flatten(2)[0].t(), torch.tensor(scores, dtype=torch.float64))
    # a Linear classifier gives the same result; GAP differs
    linear = nn.Linear(2, 2).double()
    with torch.no_grad():
        linear.weight.copy_(weight), linear.bias.copy_(bias)
    assert torch.allclose(EntropyPoolingHead()(features, linear)["logits"], out["logits"])
    gap = GAPHead()(features, linear)["logits"]
    assert torch.allclose(gap, features.mean((2, 3)) @ weight.t() + bias)
    assert not torch.allclose(gap, out["logits"])


def test_entropy_weights_match_naive_and_max_is_zero_per_image():
    cam = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    lam = entropy_weights(cam)
    for b in range(2):
        assert torch.allclose(lam[b], naive_lambda(cam[b]))
        assert lam[b].min().item() == pytest.approx(0.0, abs=1e-12)
    assert (lam >= 0).all() and (lam <= 1).all()


def test_uniform_predictions_everywhere_give_zero_weights():
    features = torch.randn(2, 3, 4, 4)
    same_rows = torch.ones(4, 3) * torch.randn(1, 3)                 # every class scores equally
    head = EntropyPoolingHead()
    out = head(features, conv1x1(same_rows).float())
    assert torch.isfinite(out["lam"]).all() and torch.isfinite(out["logits"]).all()
    assert torch.allclose(out["lam"], torch.zeros(2, 4, 4))
    assert torch.allclose(out["logits"], torch.zeros(2, 4))           # no bias: all features weighted 0


@pytest.mark.parametrize("scale", [1e3, 1e6])
def test_one_hot_logits_give_unit_weights_and_finite_gradients(scale):
    cam = torch.zeros(1, 3, 2, 2)
    cam[0, 0, 0, 0] = cam[0, 1, 0, 1] = cam[0, 2, 1, 0] = cam[0, 0, 1, 1] = scale
    cam.requires_grad_(True)
    lam = entropy_weights(cam)
    assert torch.isfinite(lam).all()
    assert torch.allclose(lam, torch.ones(1, 2, 2))
    lam.sum().backward()
    assert torch.isfinite(cam.grad).all()
    minus_inf = torch.tensor([[[[0.0]], [[-float("inf")]]]], requires_grad=True)
    lam = entropy_weights(minus_inf)
    lam.sum().backward()
    assert lam.item() == 1.0 and torch.isfinite(minus_inf.grad).all()


def test_entropy_weights_gradcheck_and_detach():
    cam = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(entropy_weights, (cam,))
    assert not entropy_weights(cam, detach=True).requires_grad


@pytest.mark.parametrize("detach", [False, True])
def test_ep_gradients_are_finite_and_reach_features_and_weights(detach):
    features = torch.randn(2, 4, 3, 3, requires_grad=True)
    classifier = nn.Conv2d(4, 3, 1)
    out = EntropyPoolingHead(detach_lambda=detach)(features, classifier)
    out["logits"].sum().backward()
    for grad in (features.grad, classifier.weight.grad, classifier.bias.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gndrp_hand_computation_and_gradients():
    cam0 = [[1.0, 0.3], [0.2, -0.1]]     # normalised (clamped): 1, .3, .2, 0 -> drop the 1.0
    cam1 = [[0.5, 2.0], [0.0, 1.0]]
    features = torch.tensor([[cam0, cam1]], requires_grad=True)
    identity = conv1x1(torch.eye(2)).float()
    head = GNDRPHead(tau=0.4)
    out = head(features, identity, labels=torch.tensor([[1.0, 0.0]]))
    assert out["logits"].shape == (1, 2) and out["lam"].shape == (1, 2, 2)
    assert out["logits"][0, 0].item() == pytest.approx((0.3 + 0.2 - 0.1) / 4)
    assert out["logits"][0, 1].item() == pytest.approx(3.5 / 4)          # absent -> GAP
    both = head(features, identity, labels=torch.tensor([[1.0, 1.0]]))["logits"]
    assert both[0, 1].item() == pytest.approx((0.5 + 0.0) / 4)           # 2.0 and 1.0 are dominant
    inference = head(features, identity)["logits"]
    assert torch.allclose(inference, features.mean((2, 3)))
    out["logits"][0, 0].backward()
    assert features.grad[0, 0, 0, 0].item() == 0.0                      # dominant pixel: no gradient
    assert features.grad[0, 0, 0, 1].item() == pytest.approx(0.25)


def test_registry_and_build():
    assert set(POOLING_HEADS) == {"gap", "ep", "gndrp"}
    head = build_pooling(dict(type="gndrp", tau=0.3, detach_lambda=True))
    assert isinstance(head, GNDRPHead) and head.tau == 0.3 and head.detach_lambda
    assert isinstance(build_pooling(dict(type="ep", tau=0.3)), EntropyPoolingHead)
    assert sum(p.numel() for p in head.parameters()) == 0
    with pytest.raises(ValueError, match="unknown pooling"):
        build_pooling("max")


@pytest.mark.parametrize("detach", [False, True])
def test_bew_formula_shapes_and_gradients(detach):
    torch.manual_seed(0)
    bew = BranchedEntropyWeighting(6, num_classes=4, detach_lambda=detach).double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    out, branch = bew(x)
    assert out.shape == x.shape and branch["logits"].shape == (2, 4)
    assert branch["cam"].shape == (2, 4, 3, 4) and branch["lam"].shape == (2, 3, 4)
    assert bew.bottleneck.out_channels == 3
    hidden = F.relu(F.conv2d(x, bew.bottleneck.weight, bew.bottleneck.bias))
    cam = F.conv2d(hidden, bew.classifier.weight, bew.classifier.bias)
    for b in range(2):
        lam = naive_lambda(cam[b].detach())
        assert torch.allclose(out[b], x[b] * lam)
        pooled = (hidden[b] * lam).mean((1, 2))
        expected = bew.classifier.weight.flatten(1) @ pooled + bew.classifier.bias
        assert torch.allclose(branch["logits"][b], expected)
    (out.sum() + branch["logits"].sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for p in bew.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    if detach:     # λ detached: the main path alone does not train the branch
        bew.zero_grad()
        bew(x)[0].sum().backward()
        assert bew.classifier.weight.grad is None or bew.classifier.weight.grad.abs().sum() == 0


def naive_sge(x, weight, bias, groups, eps=1e-5):
    b, c, h, w = x.shape
    out = torch.empty_like(x)
    per = c // groups
    for n in range(b):
        for g in range(groups):
            part = x[n, g * per:(g + 1) * per]                      # (per, h, w)
            descriptor = part.mean(dim=(1, 2))
            score = torch.stack([torch.stack([part[:, i, j] @ descriptor for j in range(w)])
                                 for i in range(h)])
            flat = score.flatten()
            mean = flat.sum() / flat.numel()
            std = math.sqrt(float(((flat - mean) ** 2).sum()) / (flat.numel() - 1))
            gate = torch.sigmoid((score - mean) / (std + eps) * weight[g] + bias[g])
            out[n, g * per:(g + 1) * per] = part * gate
    return out


def test_sge_init_equals_x_times_sigmoid_one_and_formula():
    torch.manual_seed(0)
    sge = SpatialGroupEnhance(8, groups=4).double()
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(sge(x), x * torch.sigmoid(torch.tensor(1.0, dtype=torch.float64)))
    with torch.no_grad():
        sge.weight.copy_(torch.tensor([0.5, -1.0, 2.0, 0.3]).view(1, 4, 1, 1))
        sge.bias.copy_(torch.tensor([0.1, 0.0, -0.4, 1.0]).view(1, 4, 1, 1))
    out = sge(x)
    assert out.shape == x.shape
    assert torch.allclose(out, naive_sge(x.detach(), sge.weight.flatten(), sge.bias.flatten(), 4))
    out.sum().backward()
    for grad in (x.grad, sge.weight.grad, sge.bias.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_sge_reduces_groups_to_a_divisor():
    assert SpatialGroupEnhance(12, groups=8).groups == 6
    assert SpatialGroupEnhance(8, groups=32).groups == 8
    assert SpatialGroupEnhance(7, groups=4).groups == 1
    assert SpatialGroupEnhance(12, groups=8)(torch.randn(1, 12, 4, 4)).shape == (1, 12, 4, 4)


def naive_weighted_pool(x, logit, stride):
    """Σ x e^l / Σ e^l over each 3x3 window (pad 1) by loops; ceil-mode output size."""
    _, _, h, w = x.shape
    out_h, out_w = math.ceil((h - 1) / stride) + 1, math.ceil((w - 1) / stride) + 1
    out = torch.zeros(x.shape[0], x.shape[1], out_h, out_w, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            rows = range(max(0, i * stride - 1), min(h, i * stride + 2))
            cols = range(max(0, j * stride - 1), min(w, j * stride + 2))
            num = sum(x[:, :, r, c] * logit[:, :, r, c].exp() for r in rows for c in cols)
            den = sum(logit[:, :, r, c].exp() for r in rows for c in cols)
            out[:, :, i, j] = num / den
    return out


@pytest.mark.parametrize("stride,size", [(2, 6), (2, 7), (1, 5)])
def test_lip_formula_and_zero_logit_average(stride, size):
    x = torch.randn(1, 2, size, size, dtype=torch.float64)
    logit = torch.randn(1, 2, size, size, dtype=torch.float64)
    assert torch.allclose(lip_pool(x, logit, stride=stride), naive_weighted_pool(x, logit, stride))
    average = F.avg_pool2d(x, 3, stride, 1, ceil_mode=True, count_include_pad=False)
    assert torch.allclose(lip_pool(x, torch.zeros_like(x), stride=stride), average)
    module = LocalImportancePooling(2, stride=stride).double()     # zero-init: constant logit 6
    assert torch.allclose(module(x), average)


def test_lip_module_shapes_and_gradients():
    torch.manual_seed(0)
    lip = LocalImportancePooling(8, stride=2)
    assert lip.logit[0].out_channels == 8                          # hidden scaled to min(128, C)
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    out = lip(x)
    assert out.shape == (2, 8, 5, 5)
    out.pow(2).sum().backward()
    assert x.grad.abs().sum() > 0 and lip.logit[6].weight.grad.abs().sum() > 0
    nn.init.normal_(lip.logit[6].weight, std=0.5)                  # away from the zero init
    lip.zero_grad()
    lip(x).pow(2).sum().backward()
    for name, p in lip.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert LocalImportancePooling(8, stride=1)(x).shape == (2, 8, 9, 9)


def test_ep_lambda_normalisation_is_the_lambda_weighted_mean():
    import torch
    from torch import nn

    from pipeline.models.pooling import build_pooling

    torch.manual_seed(0)
    feats = torch.randn(2, 4, 3, 3)
    clf = nn.Conv2d(4, 3, 1)
    hw = build_pooling({"type": "ep"})(feats, clf)
    lam = build_pooling({"type": "ep", "normalize": "lambda"})(feats, clf)
    w, b = clf.weight.view(3, 4), clf.bias
    weights = hw["lam"]
    mean = (feats * weights[:, None]).sum((2, 3)) / weights.sum((1, 2))[:, None]
    assert torch.allclose(lam["logits"], mean @ w.T + b, atol=1e-5)
    # Eq. 4 divides by hw instead: the two differ by the factor hw / Σλ before the bias
    ratio = (hw["logits"] - b) / (lam["logits"] - b)
    assert torch.allclose(ratio, (weights.sum((1, 2)) / 9)[:, None].expand_as(ratio), atol=1e-4)
    assert torch.equal(hw["cam"], lam["cam"])
    with pytest.raises(ValueError, match="normalize"):
        build_pooling({"type": "ep", "normalize": "sum"})
