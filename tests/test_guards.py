"""Training and model guards: non-finite losses, gradients, parameters and buffers are caught
with the iteration and the config keys; a stalled loss is reported; no NaN model file."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.runtime.guards import (LossStallMonitor, NonFiniteError, check_array_finite,
                                     check_finite, check_model_finite)
from pipeline.runtime.stage import StageError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def _step(net, scale=1.0):
    net.train()
    loss = net(torch.randn(2, 3, 8, 8) * scale).mean()
    loss.backward()
    return {"loss": float(loss.detach()), "acc": 0.5}


def test_a_finite_state_passes(one_thread):
    net = _net()
    check_finite(net, _step(net), it=1, section="classifier")
    check_model_finite(net, "net", "fix")
    check_model_finite(net.state_dict(), "net", "fix")
    check_array_finite(np.zeros(3, np.float32), "a", "fix")
    check_array_finite(np.array([1, 2]), "ints", "fix")
    check_array_finite(None, "absent", "fix")


def test_nonfinite_loss_names_iteration_value_and_keys(one_thread):
    net = _net()
    with pytest.raises(NonFiniteError) as err:
        check_finite(net, {"loss": math.nan, "seed_coverage": 0.3}, it=6, section="classifier",
                     settings={"optimizer.lr": 1e8, "amp": False})
    msg = str(err.value)
    assert isinstance(err.value, StageError)
    assert "iteration 6" in msg and "loss = nan" in msg
    assert "classifier.train.optimizer.lr=1e+08" in msg and "classifier.train.amp=False already" in msg


@pytest.mark.parametrize("where", ["parameter", "gradient", "buffer"])
def test_each_kind_of_nonfinite_tensor_is_found(where, one_thread):
    net = _net()
    losses = _step(net)
    with torch.no_grad():
        if where == "parameter":
            net[0].weight[0, 0, 0, 0] = math.inf
        elif where == "gradient":
            net[3].bias.grad[1] = math.nan
        else:
            net[1].running_var.fill_(math.inf)        # BatchNorm statistics
    with pytest.raises(NonFiniteError, match=where) as err:
        check_finite(net, losses, it=40, section="segmenter")
    name = {"parameter": "0.weight", "gradient": "3.bias", "buffer": "1.running_var"}[where]
    assert name in str(err.value) and "iteration 40" in str(err.value)
    check_finite(net, losses, it=41, tensors=False)               # losses alone are finite
    if where == "gradient":
        check_finite(net, losses, it=41, grads=False)             # AMP: gradients not checked


def test_a_diverging_optimiser_is_caught(one_thread):
    """lr = 1e8 with SGD: the guard stops it within a few iterations."""
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=1e8, momentum=0.9)
    with pytest.raises(NonFiniteError, match="diverged at iteration"):
        for it in range(1, 50):
            opt.zero_grad()
            loss = net(torch.randn(2, 3, 8, 8)).pow(2).mean()
            loss.backward()
            opt.step()
            check_finite(net, {"loss": float(loss.detach())}, it)


def test_model_check_names_the_file_and_fix():
    state = {"w": torch.tensor([1.0, math.nan, math.inf]), "n": torch.tensor([3])}
    with pytest.raises(NonFiniteError, match=r"model.pth has non-finite weights: 1 tensor \(e.g. w = nan \(2 of 3\)\); re-run"):
        check_model_finite(state, "model.pth", "re-run")
    with pytest.raises(NonFiniteError, match="heatmap x.npz holds 1 non-finite value"):
        check_array_finite(torch.tensor([0.0, math.inf]), "heatmap x.npz", "re-run heatmaps")


def test_stalled_loss_warns_once_with_causes():
    mon = LossStallMonitor(patience=30, window=5, section="classifier",
                           causes=("EP normalisation (classifier.model.pooling.normalize)",))
    warnings = [w for w in (mon.update(0.6931 + 1e-5 * (i % 3)) for i in range(100)) if w]
    assert len(warnings) == 1
    assert "classifier.train.optimizer.lr" in warnings[0] and "EP normalisation" in warnings[0]
    assert "frozen layers" in warnings[0] and "after 30 iterations" in warnings[0]
    moving = LossStallMonitor(patience=30, window=5)
    assert not any(moving.update(0.7 * 0.98 ** i) for i in range(100))
    off = LossStallMonitor(patience=0)
    assert not any(off.update(0.7) for _ in range(100))


def _state(net, window, it, opt=None, logs=None):
    from types import SimpleNamespace
    return SimpleNamespace(iteration=it, window=window, net=net, optimizer=opt,
                           log=(logs.append if logs is not None else print))


def test_training_guard_names_the_first_bad_iteration_of_the_window(one_thread):
    from pipeline.runtime.guards import training_guard

    net = _net()
    guard = training_guard({"optimizer": {"type": "SGD", "lr": 1e8}, "amp": False}, "segmenter")
    window = [{"loss": 2.0, "lr": 1e8}, {"loss": math.inf, "lr": 1e8}, {"loss": math.nan, "lr": 1e8}]
    with pytest.raises(NonFiniteError, match=r"iteration 9: loss = inf.*segmenter.train.optimizer.lr=1e\+08"):
        guard(_state(net, window, it=10))


def test_training_guard_finds_nan_in_optimizer_state_and_warns_on_a_stall(one_thread):
    from pipeline.runtime.guards import TrainingGuard

    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    _step(net)
    opt.step()
    logs = []
    guard = TrainingGuard("classifier", stall_iters=20)
    for it in range(10, 60, 10):
        guard(_state(net, [{"loss": 0.7, "lr": 1e-3}] * 10, it, opt, logs))
    assert len(logs) == 1 and logs[0].startswith("warning: the loss has not moved")
    opt.state[net[3].bias]["exp_avg"][0] = math.nan
    with pytest.raises(NonFiniteError, match=r"1 optimizer state \(e.g. 3.bias.exp_avg = nan"):
        guard(_state(net, [{"loss": 0.7, "lr": 1e-3}], 61, opt, logs))
