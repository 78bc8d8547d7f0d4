"""Training through mmengine's Runner: checkpoints, auto-resume, logging, TensorBoard, AMP, DDP.

The networks and losses are plain torch (``pipeline.models``, ``pipeline.losses``); this module
wraps them for mmengine. A *loss function* ``loss_fn(net, batch) -> dict`` returns tensors
whose keys contain ``"loss"`` (summed and optimised) plus any other scalars to log (e.g.
seed coverage after growing). Datasets return dicts; they are collated by torch's
``default_collate`` and moved to the device by mmengine's ``BaseDataPreprocessor``.
"""
from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Callable

import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch import nn


class LossModel(BaseModel):
    """mmengine adapter: ``forward(**batch, mode='loss')`` → ``loss_fn(net, batch)``."""

    def __init__(self, net: nn.Module, loss_fn: Callable[[nn.Module, dict], dict]):
        super().__init__()
        self.net = net
        self._loss_fn = loss_fn

    def forward(self, mode: str = "loss", **batch):  # noqa: D401 - mmengine API
        if mode != "loss":
            raise ValueError(f"LossModel only trains (mode='loss'), got mode={mode!r}")
        return self._loss_fn(self.net, batch)


def lr_schedule(schedule: dict, max_iters: int) -> list[dict]:
    """``{"type": "poly", "power": 0.9}`` or ``{"type": "step", "step": 2000, "gamma": 0.1}``."""
    kind = schedule.get("type", "poly")
    if kind == "poly":
        return [dict(type="PolyLR", power=float(schedule.get("power", 0.9)), eta_min=0.0,
                     by_epoch=False, begin=0, end=max_iters)]
    if kind == "step":
        step = int(schedule["step"])
        return [dict(type="MultiStepLR", by_epoch=False, begin=0, end=max_iters,
                     milestones=list(range(step, max_iters, step)), gamma=float(schedule.get("gamma", 0.1)))]
    if kind == "constant":
        return [dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=max_iters)]
    raise ValueError(f"unknown lr schedule type {kind!r} (poly, step, constant)")


def optim_wrapper_cfg(optimizer: dict, lr_mult: dict | None = None, paramwise: dict | None = None,
                      amp: bool = False) -> dict:
    """mmengine ``optim_wrapper`` dict. ``lr_mult``: ``{name substring: float | {"lr_mult",
    "decay_mult"}}`` → ``paramwise_cfg.custom_keys`` (a float means ``{"lr_mult": float}``;
    mmengine applies the longest matching key and then ignores the bias/norm rules for that
    parameter); ``paramwise``: further ``paramwise_cfg`` keys."""
    custom = {}
    for k, v in (lr_mult or {}).items():
        if hasattr(v, "items"):
            unknown = set(v) - {"lr_mult", "decay_mult"}
            if unknown:
                raise ValueError(f"lr_mult[{k!r}]: unknown keys {sorted(unknown)} (lr_mult, decay_mult)")
            custom[k] = {kk: float(vv) for kk, vv in v.items()}
        else:
            custom[k] = dict(lr_mult=float(v))
    pw = dict(paramwise or {})
    if custom:
        pw["custom_keys"] = custom
    return dict(type="AmpOptimWrapper" if amp else "OptimWrapper", optimizer=dict(optimizer),
                **({"paramwise_cfg": pw} if pw else {}))


class IntervalHooks(Hook):
    """mmengine hook running ``hooks`` every ``log_interval`` iterations (before that
    iteration's checkpoint) with ``state.iteration``, ``state.window`` (each iteration's
    scalars), ``state.net``, ``state.optimizer``, ``state.log``: the interval-hook interface
    of the training loop (e.g. :class:`pipeline.guards.TrainingGuard`)."""

    priority = "HIGHEST"

    def __init__(self, hooks, log_interval: int):
        self.hooks, self.log_interval, self.window = list(hooks), max(1, int(log_interval)), []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        from types import SimpleNamespace

        self.window.append({k: float(v.detach()) if hasattr(v, "detach") else float(v)
                            for k, v in (outputs or {}).items()})
        it = runner.iter + 1
        if it % self.log_interval and it != runner.max_iters:
            return
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        state = SimpleNamespace(iteration=it, window=self.window, net=model.net,
                                optimizer=runner.optim_wrapper.optimizer, log=print)
        self.window = []
        for hook in self.hooks:
            hook(state)


def train(net: nn.Module, loss_fn, dataset, *, work_dir: str | Path, max_iters: int,
          batch_size: int, optimizer: dict, schedule: dict, lr_mult: dict | None = None,
          paramwise: dict | None = None, num_workers: int = 0, log_interval: int = 10,
          checkpoint_interval: int = 500, seed: int = 0, amp: bool = False, world_size: int = 1,
          log=print, hooks=()) -> nn.Module:
    """Train ``net`` for ``max_iters`` iterations; resume automatically from ``work_dir``.

    ``optimizer`` is an mmengine optimizer dict (e.g. ``dict(type="SGD", lr=1e-3, momentum=0.9,
    weight_decay=5e-4)``); ``lr_mult`` maps parameter-name substrings to learning-rate
    multipliers (e.g. ``{"fc8.weight": 10, "fc8.bias": 20}``) or to mmengine custom-key dicts
    (e.g. ``{"fc8.bias": {"lr_mult": 20, "decay_mult": 0}}``); ``paramwise`` adds other
    mmengine ``paramwise_cfg`` options (``bias_lr_mult``, ``bias_decay_mult``,
    ``norm_decay_mult``, ...), see :func:`optim_wrapper_cfg`. With ``world_size > 1`` the
    process group must already be initialised (torchrun); mmengine wraps the model in DDP
    and shards the data with its distributed sampler.
    """
    from mmengine.runner import Runner

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    use_amp = bool(amp and cuda)
    runner = Runner(
        model=LossModel(net, loss_fn),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dataset, batch_size=int(batch_size), num_workers=int(num_workers),
            persistent_workers=int(num_workers) > 0, drop_last=len(dataset) >= batch_size * world_size,
            sampler=dict(type="InfiniteSampler", shuffle=True, seed=seed),
            collate_fn=dict(type="default_collate")),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=int(max_iters)),
        optim_wrapper=optim_wrapper_cfg(optimizer, lr_mult, paramwise, use_amp),
        param_scheduler=lr_schedule(dict(schedule), int(max_iters)),
        custom_hooks=[IntervalHooks(hooks, log_interval)] if hooks else None,
        default_hooks=dict(
            checkpoint=dict(type="CheckpointHook", interval=int(checkpoint_interval), by_epoch=False,
                            max_keep_ckpts=2, save_last=True),
            logger=dict(type="LoggerHook", interval=int(log_interval)),
        ),
        visualizer=dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend"),
                                                          dict(type="TensorboardVisBackend")]),
        log_processor=dict(by_epoch=False, window_size=int(log_interval)),
        launcher="pytorch" if world_size > 1 else "none",
        # DDP on CPU (gloo, e.g. torchrun without GPUs): mmengine's default wrapper pins device_ids
        **({"cfg": dict(model_wrapper_cfg=dict(type="MMDistributedDataParallel", device_ids=None,
                                               broadcast_buffers=False))}
           if world_size > 1 and not cuda else {}),
        env_cfg=dict(cudnn_benchmark=cuda, dist_cfg=dict(backend="nccl" if cuda else "gloo")),
        randomness=dict(seed=int(seed)),
        resume=True,
        # mmengine names its logger/visualizer after the start second; two trainings started in
        # the same second in one process would share them: make the name unique.
        experiment_name=f"{work_dir.parent.name}-{time.strftime('%Y%m%d_%H%M%S')}-{uuid.uuid4().hex[:8]}",
        default_scope="mmengine",
        log_level=logging.WARNING if world_size > 1 else logging.INFO,
    )
    runner.train()
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    return model.net


def train_from_section(net: nn.Module, loss_fn, dataset, tr, *, work_dir, seed: int = 0,
                       world_size: int = 1, hooks=()) -> nn.Module:
    """:func:`train` with its arguments read from a stage's ``train`` config section."""
    return train(net, loss_fn, dataset, work_dir=work_dir, max_iters=int(tr["max_iters"]),
                 batch_size=int(tr["batch_size"]), optimizer=dict(tr["optimizer"]),
                 schedule=dict(tr.get("schedule", {"type": "poly"})), lr_mult=dict(tr.get("lr_mult", {})),
                 paramwise=dict(tr.get("paramwise", {})),
                 num_workers=int(tr.get("num_workers", 0)), log_interval=int(tr.get("log_interval", 10)),
                 checkpoint_interval=int(tr.get("checkpoint_interval", 500)), seed=seed,
                 amp=bool(tr.get("amp", False)), world_size=world_size, hooks=hooks)
