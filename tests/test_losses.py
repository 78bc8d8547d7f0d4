"""DSRG seeding and boundary losses against hand computation on tiny inputs."""
import math

import pytest
import torch

from pipeline.losses import balanced_seeding_loss, boundary_loss, stable_softmax_probs


def two_class(p0):
    p0 = torch.tensor(p0, dtype=torch.float64)
    return torch.stack([p0, 1 - p0], dim=1)            # (B,2,H,W)


def test_stable_softmax():
    logits = torch.tensor([[[[50.0]], [[0.0]], [[-50.0]]]])
    p = stable_softmax_probs(logits)
    assert torch.allclose(p.sum(1), torch.ones(1, 1, 1))
    eps = 1e-4
    expect_min = eps / (1 + 3 * eps)
    assert p.min().item() == pytest.approx(expect_min, rel=1e-4)
    sm = torch.softmax(logits, 1)
    assert torch.allclose(p, (sm + eps) / (1 + 3 * eps))


def test_balanced_seeding_loss_hand():
    probs = two_class([[[0.9, 0.2], [0.6, 0.5]], [[0.7, 0.3], [0.4, 0.8]]])
    seeds = torch.zeros(2, 2, 2, 2, dtype=torch.bool)
    seeds[0, 0, 0, 0] = seeds[0, 0, 1, 0] = True          # image 0: bg at (0,0), (1,0)
    seeds[0, 1, 0, 1] = True                              # fg at (0,1)
    seeds[0, 0, 1, 1] = seeds[0, 1, 1, 1] = True          # multi-hot (1,1): counts in both
    seeds[1, 0, 1, 1] = True                              # image 1: no foreground seed
    loss, parts = balanced_seeding_loss(probs, seeds)
    bg0 = -(math.log(0.9) + math.log(0.6) + math.log(0.5)) / 3
    fg0 = -(math.log(0.8) + math.log(0.5)) / 2
    bg1, fg1 = -math.log(0.8), 0.0
    assert parts["bg"].item() == pytest.approx((bg0 + bg1) / 2)
    assert parts["fg"].item() == pytest.approx((fg0 + fg1) / 2)
    assert loss.item() == pytest.approx((bg0 + bg1 + fg0 + fg1) / 2)


def test_seeding_loss_gradient_finite():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    probs = stable_softmax_probs(logits)
    seeds = torch.rand(2, 3, 4, 4) < 0.3
    seeds[1] = False                                       # an image without any seed
    loss, _ = balanced_seeding_loss(probs, seeds)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[1].abs().max() == 0


def test_boundary_loss_hand_and_constant_q():
    probs = two_class([[[0.9, 0.2], [0.6, 0.01]]]).requires_grad_(True)
    q = two_class([[[0.8, 0.0], [0.6, 0.9]]]).requires_grad_(True)

    def kl(a, b):
        return sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)

    P = [(0.9, 0.1), (0.2, 0.8), (0.6, 0.4), (0.01, 0.99)]
    Q = [(0.8, 0.2), (0.0, 1.0), (0.6, 0.4), (0.9, 0.1)]
    expect = sum(kl(a, b) for a, b in zip(Q, P)) / 4
    loss = boundary_loss(probs, q)
    assert loss.item() == pytest.approx(expect)
    loss.backward()
    assert q.grad is None and torch.isfinite(probs.grad).all()


def test_boundary_loss_clip():
    # pixel 0: Q/P = 0.9/0.01 = 90 -> clipped to 20, 0.1/0.99 inside [0.05, 20]
    p = torch.tensor([0.01, 0.99], dtype=torch.float64).view(1, 2, 1, 1).requires_grad_(True)
    q = torch.tensor([0.9, 0.1], dtype=torch.float64).view(1, 2, 1, 1)
    loss = boundary_loss(p, q, clip=(0.05, 20))
    assert loss.item() == pytest.approx(0.9 * math.log(20) + 0.1 * math.log(0.1 / 0.99))
    loss.backward()
    assert p.grad[0, 0].item() == 0                       # clipped ratio: no gradient
    assert p.grad[0, 1].item() == pytest.approx(-0.1 / 0.99)
