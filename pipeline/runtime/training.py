"""The training loop of every training stage: iterations, checkpoints, resume, logs, AMP, DDP.

Torch and numpy only (no OpenMMLab), so a stock PyTorch install can run it. A *loss function*
``loss_fn(net, batch) -> dict`` returns tensors: the keys containing ``"loss"`` are averaged
and summed into the optimised loss; the other keys are logged (e.g. seed coverage after
growing). Datasets return dicts, collated by torch's ``default_collate``; the loop adds
``batch["iteration"]`` (int, 0-based index of the iteration being run, also after a resume)
so that a loss can follow a schedule (e.g. DSRG's ``grow_start``).

:func:`train` runs ``max_iters`` iterations: batches from :class:`~pipeline.runtime.train_state.
InfiniteSampler` (seeded; under DDP each rank takes its share), the learning rate
``optimizer.lr × lr_mult × lr_factor(schedule, it)`` set before every iteration
(:mod:`pipeline.runtime.optim`), AMP (autocast float16 + GradScaler) only on CUDA, DDP through
``torch.nn.parallel.DistributedDataParallel`` when ``world_size > 1`` (gloo on CPU, nccl on
CUDA: the caller initialises the process group). Every ``log_interval`` iterations the
window's scalars are checked by the interval hooks (:data:`INTERVAL_HOOKS` and the ``hooks``
argument), written to ``work_dir/train.log`` (text), ``work_dir/scalars.jsonl`` (one JSON object
per line: ``iter``, ``lr``, each loss and logged scalar averaged over the window, ``time`` and
``data_time`` in s/iteration) and to TensorBoard events in ``work_dir/tensorboard`` when
tensorboard is installed. Checkpoints and resume: :mod:`pipeline.runtime.train_state`.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from pipeline.runtime.optim import build_optimizer, lr_factor, set_lr
from pipeline.runtime.train_state import (InfiniteSampler, resume_from_newest, save_checkpoint,
                                          seed_everything, set_rng_state, worker_seeder)

__all__ = ["build_optimizer", "lr_factor", "train_step", "train", "train_from_section",
           "IntervalState", "INTERVAL_HOOKS"]


@dataclass
class IntervalState:
    """What an interval hook sees: the last ``log_interval`` iterations' scalars (one dict per
    iteration, ``window``) and their means, the network (unwrapped), the optimizer."""
    iteration: int
    max_iters: int
    window: list[dict]
    means: dict
    net: nn.Module
    optimizer: torch.optim.Optimizer
    log: Callable = print


# hooks run every log interval of every training (``hook(state: IntervalState)``); raising
# stops the training before the interval's checkpoint is written
INTERVAL_HOOKS: list[Callable[[IntervalState], None]] = []


def total_loss(out: dict) -> torch.Tensor:
    """Sum over the keys containing ``"loss"`` of their means (lists: sum of the means)."""
    parts = [_mean(v) for k, v in out.items() if "loss" in k]
    if not parts:
        raise ValueError(f"the loss function returned no key containing 'loss' (keys: {sorted(out)})")
    return sum(parts)


def _mean(v):
    if isinstance(v, (list, tuple)):
        return sum(x.mean() for x in v)
    return v.mean() if isinstance(v, torch.Tensor) else torch.as_tensor(float(v))


def train_step(net, loss_fn, batch, optimizer, scaler=None, amp: bool = False) -> dict[str, float]:
    """One iteration: ``loss_fn(net, batch)`` (under float16 autocast on CUDA when ``amp``),
    backward of :func:`total_loss` (through ``scaler`` when given), ``optimizer.step()``,
    ``zero_grad``. Returns every scalar of the loss function's output as float, plus ``loss``."""
    with torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext():
        out = loss_fn(net, batch)
    loss = total_loss(out)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    optimizer.zero_grad()
    return {"loss": float(loss.detach()), **{k: float(_mean(v).detach()) for k, v in out.items() if k != "loss"}}


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(net, batch)``: what DDP wraps, so that the whole loss function
    (which may call methods of ``net``) runs inside DDP's forward."""

    def __init__(self, net: nn.Module, loss_fn):
        super().__init__()
        self.net, self._loss_fn = net, loss_fn

    def forward(self, batch):
        return self._loss_fn(self.net, batch)


def _call(module, batch):
    return module(batch)


def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


class _Logger:
    """Text log, JSON-lines scalars and (when importable) TensorBoard events of one rank-0 run."""

    def __init__(self, work_dir: Path, log, enabled: bool):
        self.work_dir, self.print, self.enabled, self.tb = work_dir, log, enabled, None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(work_dir / "tensorboard"))
            except ImportError:
                self.tb = None

    def line(self, text: str) -> None:
        if self.enabled:
            self.print(text)
            with open(self.work_dir / "train.log", "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def scalars(self, it: int, rec: dict) -> None:
        if not self.enabled:
            return
        with open(self.work_dir / "scalars.jsonl", "a") as f:
            f.write(json.dumps({"iter": it, **rec}) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                self.tb.add_scalar(f"train/{k}", v, it)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _window_means(window: list[dict]) -> dict:
    """Mean of every scalar over the window; ``lr``: its value at the window's last iteration."""
    keys = {k for rec in window for k in rec} - {"lr"}
    means = {k: sum(r[k] for r in window if k in r) / sum(1 for r in window if k in r) for k in sorted(keys)}
    return {"lr": window[-1]["lr"], **means}


def _format(it: int, max_iters: int, means: dict, times: tuple[float, float]) -> str:
    eta = (max_iters - it) * times[0]
    parts = " ".join(f"{k} {v:.4g}" for k, v in means.items() if k != "lr")
    return (f"train: iter {it}/{max_iters} lr {means.get('lr', 0):.3g} {parts} "
            f"time {times[0]:.3f}s/it (data {times[1]:.3f}) eta {eta / 60:.1f} min")


def _resume(work_dir: Path, net, optimizer, scaler, log) -> tuple[int, int, dict | None]:
    """(start iteration, samples drawn per rank, RNG states) from the newest readable checkpoint
    in ``work_dir`` (:func:`pipeline.runtime.train_state.resume_from_newest`), or (0, 0, None)."""
    found = resume_from_newest(work_dir, net, optimizer, scaler, log)
    if found is None:
        return 0, 0, None
    path, meta, rng = found
    log(f"train: resumed from {path} (iteration {meta['iter']})")
    return int(meta["iter"]), int(meta["samples"]), rng


def _loader(dataset, batch_size, num_workers, seed, rank, world_size, start_iter, samples, pin):
    sampler = InfiniteSampler(len(dataset), seed, rank, world_size, start=samples)
    return DataLoader(dataset, batch_size=int(batch_size), sampler=sampler, num_workers=int(num_workers),
                      collate_fn=default_collate, pin_memory=pin, drop_last=True,   # the stream never ends
                      persistent_workers=int(num_workers) > 0,
                      worker_init_fn=worker_seeder(seed, rank, start_iter) if num_workers else None)


def _wrap(net, loss_fn, world_size: int, device: torch.device) -> nn.Module:
    module = _LossModule(net, loss_fn)
    if world_size <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def train(net: nn.Module, loss_fn, dataset, *, work_dir: str | Path, max_iters: int,
          batch_size: int, optimizer: dict, schedule: dict, lr_mult: dict | None = None,
          paramwise: dict | None = None, num_workers: int = 0, log_interval: int = 10,
          checkpoint_interval: int = 500, seed: int = 0, amp: bool = False, world_size: int = 1,
          log=print, device=None, hooks: Sequence[Callable] = ()) -> nn.Module:
    """Train ``net`` for ``max_iters`` iterations, resuming from the newest checkpoint in
    ``work_dir``; returns the (unwrapped) network on ``device`` (default: this rank's CUDA
    device, else the CPU). ``optimizer`` / ``lr_mult`` / ``paramwise``: :func:`pipeline.runtime.optim.
    build_optimizer`; ``schedule``: :func:`pipeline.runtime.optim.lr_factor`; ``hooks``: run with
    :data:`INTERVAL_HOOKS` every ``log_interval`` iterations."""
    if int(batch_size) <= 0 or int(max_iters) < 0:
        raise ValueError(f"train.batch_size must be > 0 and train.max_iters >= 0 (got {batch_size}, {max_iters})")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device) if device is not None else default_device()
    rank = torch.distributed.get_rank() if world_size > 1 else 0
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda
    seed_everything(int(seed))
    net = net.to(device)
    opt = build_optimizer(net, optimizer, lr_mult, paramwise)
    scaler = torch.amp.GradScaler("cuda") if (amp and cuda) else None
    logger = _Logger(work_dir, log, rank == 0)
    start, samples, rng = _resume(work_dir, net, opt, scaler, logger.line)
    model = _wrap(net, loss_fn, world_size, device)
    batches = iter(_loader(dataset, batch_size, num_workers, seed, rank, world_size, start, samples, cuda))
    if rng is not None:             # after the loader's first draw, as in the uninterrupted run
        set_rng_state(rng)
    try:
        _run(model, net, batches, opt, scaler, logger, work_dir, start, samples, seed=int(seed),
             max_iters=int(max_iters), schedule=dict(schedule), base_lr=float(optimizer["lr"]),
             log_interval=max(1, int(log_interval)), checkpoint_interval=max(1, int(checkpoint_interval)),
             batch_size=int(batch_size), device=device, hooks=[*INTERVAL_HOOKS, *hooks])
    finally:
        logger.close()
    return net


def end_spawned_rank() -> None:
    """End a rank started by ``torch.multiprocessing.spawn`` once its work is done and written,
    skipping the interpreter's teardown: after a gloo run that used DDP, torch 2.13's C++ teardown
    at exit aborts now and then ("terminate called without an active exception", SIGABRT; about 1
    run in 10 on this CPU, also after ``destroy_process_group``), which ``spawn`` reports as a
    failed rank. Call it instead of ``destroy_process_group`` on gloo: under torch 2.5.1 that call
    deadlocks now and then, its main thread joining gloo's worker thread while holding the GIL,
    which the worker thread waits for to free the last collective's tensor (seen in the suite's
    DDP eval test under `make test-mm`; the rank never ends)."""
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _run(model, net, batches, opt, scaler, logger, work_dir, it, samples, *, seed, max_iters,
         schedule, base_lr, log_interval, checkpoint_interval, batch_size, device, hooks):
    window, t_iter, t_data = [], [], []
    net.train()
    while it < max_iters:
        t0 = time.perf_counter()
        batch = to_device(next(batches), device)
        if isinstance(batch, dict):
            batch["iteration"] = it
        t1 = time.perf_counter()
        factor = lr_factor(schedule, it, max_iters)
        set_lr(opt, factor)
        scalars = train_step(model, _call, batch, opt, scaler, amp=scaler is not None)
        it, samples = it + 1, samples + batch_size
        window.append({**scalars, "lr": base_lr * factor})
        t_iter.append(time.perf_counter() - t0)
        t_data.append(t1 - t0)
        if it % log_interval == 0 or it == max_iters:
            means = _window_means(window)
            state = IntervalState(it, max_iters, window, means, net, opt, logger.line)
            for hook in hooks:
                hook(state)
            times = (sum(t_iter) / len(t_iter), sum(t_data) / len(t_data))
            logger.line(_format(it, max_iters, means, times))
            logger.scalars(it, {**means, "time": times[0], "data_time": times[1]})
            window, t_iter, t_data = [], [], []
        if logger.enabled and (it % checkpoint_interval == 0 or it == max_iters):   # rank 0
            save_checkpoint(work_dir, it, net, opt, scaler, seed, samples)


def train_from_section(net: nn.Module, loss_fn, dataset, tr, *, work_dir, seed: int = 0,
                       world_size: int = 1, device=None, log=print, hooks: Sequence[Callable] = ()) -> nn.Module:
    """:func:`train` with its arguments read from a stage's checked ``train`` section (a mapping
    of the config's keys, pipeline.settings.train.TrainSettings; ``paramwise`` may be unset)."""
    return train(net, loss_fn, dataset, work_dir=work_dir, max_iters=int(tr["max_iters"]),
                 batch_size=int(tr["batch_size"]), optimizer=dict(tr["optimizer"]),
                 schedule=dict(tr["schedule"]), lr_mult=dict(tr["lr_mult"]),
                 paramwise=dict(tr.get("paramwise") or {}),
                 num_workers=int(tr["num_workers"]), log_interval=int(tr["log_interval"]),
                 checkpoint_interval=int(tr["checkpoint_interval"]), seed=seed,
                 amp=bool(tr["amp"]), world_size=world_size, device=device, log=log, hooks=hooks)
