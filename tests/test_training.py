"""The project's training loop (pipeline.runtime.training, pipeline.runtime.optim, pipeline.runtime.train_state).

Its optimizer groups, lr factors and sampler stream are compared with mmengine's (the Runner
the loop replaced; mmengine stays installed for config loading); resume must repeat an
uninterrupted run bit for bit; logs, checkpoints and interval hooks are checked on a tiny
network; DDP on two CPU processes (gloo) must end with identical weights on both ranks.
"""
from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from pipeline.report.plots import read_scalars
from pipeline.runtime.optim import lr_factor, parameter_multipliers
from pipeline.runtime.train_state import InfiniteSampler, checkpoints
from pipeline.runtime.training import build_optimizer, train, train_step


class TinyNet(nn.Module):
    """Conv + BN + GroupNorm + LayerNorm + dropout: every kind of parameter rule."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 3))
        self.ln = nn.LayerNorm(3)
        self.fc8 = nn.Linear(3, 2)

    def forward(self, x):
        h = self.gn(self.bn(self.conv(x))).mean((2, 3))
        return self.fc8(self.ln(self.head(h)))


class NoisyData(torch.utils.data.Dataset):
    """Fixed inputs plus noise from torch's global generator (like the datasets' augmentation)."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randn(3, 6, 6, generator=g) + 0.1 * torch.randn(3, 6, 6),
                "target": torch.tensor(float(i % 2))}


def loss_fn(net, batch):
    out = net(batch["image"])
    return {"loss_fit": ((out[:, 0] - batch["target"]) ** 2).mean(), "mean_out": out.mean().detach()}


def _groups(opt) -> dict:
    return {id(p): (g["lr"], g.get("weight_decay")) for g in opt.param_groups for p in g["params"]}


CASES = [
    (None, None),
    ({"fc8": 10.0, "fc8.bias": {"lr_mult": 20.0, "decay_mult": 0.0}, "head.1": 3.0, "conv": 2.0}, None),
    ({"fc8.weight": 10.0}, dict(bias_lr_mult=2.0, bias_decay_mult=0.0, norm_decay_mult=0.0)),
    ({"conv.bias": 5.0, "bn": {"decay_mult": 0.5}}, dict(bias_lr_mult=2.0, norm_decay_mult=0.1)),
    (None, dict(bias_decay_mult=0.3)),          # norm biases too (no norm_decay_mult)
]


@pytest.mark.parametrize("lr_mult,paramwise", CASES)
def test_optimizer_groups_match_mmengine_paramwise_rules(lr_mult, paramwise):
    pytest.importorskip("mmengine")
    from mmengine.optim import DefaultOptimWrapperConstructor

    net = TinyNet()
    optim = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=1e-3)
    pw = dict(paramwise or {})
    if lr_mult:
        pw["custom_keys"] = {k: v if isinstance(v, dict) else {"lr_mult": v} for k, v in lr_mult.items()}
    want = DefaultOptimWrapperConstructor(dict(type="OptimWrapper", optimizer=optim), pw or None)(net)
    got = _groups(build_optimizer(net, optim, lr_mult, paramwise))
    assert got.keys() == _groups(want.optimizer).keys()
    for k, v in _groups(want.optimizer).items():
        assert got[k] == pytest.approx(v), k


def test_longest_then_alphabetical_key_wins_and_bad_options_are_named():
    net = TinyNet()
    mult = {name: lr for name, _, lr, _ in parameter_multipliers(net, {"fc8": 2, "fc8.bias": 3, "c8.bias": 4})}
    assert mult["fc8.bias"] == 3 and mult["fc8.weight"] == 2
    mult = {name: lr for name, _, lr, _ in parameter_multipliers(net, {"fc8.b": 5, "fc8.w": 6, "c8.bi": 7})}
    assert mult["fc8.bias"] == 7 and mult["fc8.weight"] == 6            # equal length: 'c8.bi' < 'fc8.b'
    with pytest.raises(ValueError, match="paramwise"):
        build_optimizer(net, dict(type="SGD", lr=1.0), None, {"bias_lr": 2})
    with pytest.raises(ValueError, match="lr_mult"):
        build_optimizer(net, dict(type="SGD", lr=1.0), {"fc8": {"lr": 2}})
    with pytest.raises(ValueError, match="optimizer.type"):
        build_optimizer(net, dict(type="Sgd", lr=1.0))
    with pytest.raises(ValueError, match="schedule.type"):
        lr_factor({"type": "cosine"}, 0, 10)


@pytest.mark.parametrize("schedule,mm", [
    (dict(type="poly", power=0.9), dict(type="PolyLR", power=0.9, eta_min=0.0)),
    (dict(type="step", step=3, gamma=0.5), dict(type="MultiStepLR", milestones=[3, 6, 9], gamma=0.5)),
    (dict(type="constant"), dict(type="ConstantLR", factor=1.0)),
])
def test_lr_factor_matches_mmengine_schedulers(schedule, mm):
    pytest.importorskip("mmengine")
    from mmengine.registry import PARAM_SCHEDULERS

    T = 11
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = PARAM_SCHEDULERS.build(dict(mm, optimizer=opt, by_epoch=False, begin=0, end=T))
    for it in range(T):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(schedule, it, T), abs=1e-12), it
        opt.step()
        sched.step()
    assert lr_factor(schedule, 0, T) == 1.0


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sampler_is_mmengines_stream_and_resumes_where_it_stopped(world_size):
    pytest.importorskip("mmengine")
    from mmengine.dataset import InfiniteSampler as MMSampler

    for rank in range(world_size):
        mm = MMSampler(list(range(7)), seed=5)
        mm.rank, mm.world_size = rank, world_size
        mm.indices = mm._indices_of_rank()
        ours = list(itertools.islice(iter(InfiniteSampler(7, 5, rank, world_size)), 30))
        assert ours == list(itertools.islice(iter(mm), 30))
        later = InfiniteSampler(7, 5, rank, world_size, start=12)
        assert list(itertools.islice(iter(later), 18)) == ours[12:]


def _train(work, max_iters=6, hooks=(), **kw):
    torch.manual_seed(0)
    net = TinyNet()
    opts = dict(max_iters=max_iters, batch_size=4, optimizer=dict(type="Adam", lr=0.01, weight_decay=1e-4),
                schedule=dict(type="poly", power=0.9), log_interval=1, checkpoint_interval=1, seed=3,
                device="cpu", log=lambda s: None)
    return train(net, loss_fn, NoisyData(), work_dir=work, hooks=hooks, **{**opts, **kw})


class Stop(Exception):
    pass


def test_interrupted_run_resumes_bit_for_bit(tmp_path):
    whole = _train(tmp_path / "whole")
    seen = []

    def stop_at_4(state):
        seen.append((state.iteration, len(state.window), sorted(state.means)))
        if state.iteration == 4:
            raise Stop

    with pytest.raises(Stop):
        _train(tmp_path / "cut", hooks=[stop_at_4])
    assert [p.name for p in checkpoints(tmp_path / "cut")] == ["iter_2.pth", "iter_3.pth"]
    assert seen[0] == (1, 1, ["loss", "loss_fit", "lr", "mean_out"])
    resumed = _train(tmp_path / "cut")
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert (tmp_path / "cut" / "last_checkpoint").read_text().strip() == "iter_6.pth"
    ckpt = torch.load(tmp_path / "cut" / "iter_6.pth", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["iter"] == 6 and ckpt["meta"]["samples"] == 24 and ckpt["scaler"] is None
    recs = read_scalars(tmp_path / "cut")
    assert [r["iter"] for r in recs] == [1, 2, 3, 4, 5, 6]      # iteration 4 logged again after resume
    assert recs[0]["lr"] == pytest.approx(0.01) and recs[-1]["lr"] == pytest.approx(0.0)
    assert "train: resumed from" in (tmp_path / "cut" / "train.log").read_text()


def test_batches_carry_the_iteration_also_after_a_resume(tmp_path):
    seen = []

    def recording_loss(net, batch):
        seen.append(batch["iteration"])
        return loss_fn(net, batch)

    def stop_at_3(state):
        if state.iteration == 3:
            raise Stop

    torch.manual_seed(0)
    kw = dict(max_iters=5, batch_size=4, optimizer=dict(type="SGD", lr=0.01), schedule=dict(type="constant"),
              log_interval=1, checkpoint_interval=1, device="cpu", log=lambda s: None)
    with pytest.raises(Stop):
        train(TinyNet(), recording_loss, NoisyData(), work_dir=tmp_path, hooks=[stop_at_3], **kw)
    train(TinyNet(), recording_loss, NoisyData(), work_dir=tmp_path, **kw)
    assert seen == [0, 1, 2, 2, 3, 4]          # iteration 3 (index 2) had no checkpoint: run again


def test_logs_windows_amp_off_the_gpu_and_a_finished_run(tmp_path):
    net = _train(tmp_path, max_iters=5, log_interval=2, checkpoint_interval=4, amp=True)
    lines = [json.loads(s) for s in (tmp_path / "scalars.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines] == [2, 4, 5]
    assert all({"loss", "loss_fit", "mean_out", "lr", "time", "data_time"} <= set(r) for r in lines)
    assert [p.name for p in checkpoints(tmp_path)] == ["iter_4.pth", "iter_5.pth"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    again = _train(tmp_path, max_iters=5)          # already finished: loads, trains nothing
    assert all(torch.equal(before[k], v) for k, v in again.state_dict().items())


def test_train_step_sums_the_loss_keys_and_returns_floats():
    torch.manual_seed(0)
    net = TinyNet()
    opt = build_optimizer(net, dict(type="SGD", lr=0.1))
    batch = {"image": torch.randn(2, 3, 6, 6), "target": torch.ones(2)}

    def two_losses(n, b):
        out = loss_fn(n, b)
        return {**out, "loss_aux": [out["loss_fit"] * 0, torch.ones(3)]}

    s = train_step(net, two_losses, batch, opt)
    assert s["loss"] == pytest.approx(s["loss_fit"] + 1.0) and isinstance(s["mean_out"], float)
    with pytest.raises(ValueError, match="no key containing 'loss'"):
        train_step(net, lambda n, b: {"out": n(b["image"]).sum()}, batch, opt)


def test_two_cpu_processes_end_with_identical_weights(tmp_path):
    """DDP (gloo) on the classifier's and the segmenter's tiny training loops."""
    from stage_helpers import ddp_worker, free_port, spawn_ranks, tiny_ddp_setup

    setup = tiny_ddp_setup(tmp_path)
    spawn_ranks(ddp_worker, (2, free_port(), str(tmp_path), setup))
    for kind in ("classifier", "segmenter"):
        a, b = (torch.load(tmp_path / f"{kind}_rank{r}.pt", weights_only=True) for r in (0, 1))
        init = torch.load(tmp_path / f"{kind}_init.pt", weights_only=True)
        params = [k for k in a if "running" not in k and "num_batches" not in k]
        assert all(torch.equal(a[k], b[k]) for k in params), kind
        assert any(not torch.equal(a[k], init[k]) for k in params), kind


def test_spawn_ranks_fails_instead_of_hanging():
    """A hung rank fails the test within spawn_ranks' timeout and is killed (a hung DDP test
    once held the whole OpenMMLab suite until CI's time ran out)."""
    import time

    from stage_helpers import sleeping_rank, spawn_ranks

    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"sleeping_rank: ranks \[0, 1\] still running after 2 s"):
        spawn_ranks(sleeping_rank, (120.0,), timeout_s=2.0)
    assert time.monotonic() - t0 < 60
