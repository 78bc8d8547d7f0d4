"""Training and model guards: no non-finite network is trained on or published (pure torch).

* :func:`check_finite` — every iteration's losses, and every logging interval the parameters,
  their gradients and the floating-point buffers (BatchNorm running statistics included):
  one device-side reduction, one synchronisation; the slow search for the offending tensors
  only runs once something is non-finite. Raises :class:`NonFiniteError` naming the
  iteration, the values and the config keys to look at (learning rate, AMP).
* :func:`check_model_finite` — the same on a finished network or a state dict, before a
  model file is written and when a stage loads one.
* :class:`LossStallMonitor` — a loss that has not moved from its start value after a given
  number of iterations gets one warning naming the likely causes.
* :func:`check_array_finite` — inputs of inference stages (heatmaps, maps read from files).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from pipeline.runtime.stage import StageError

_EXAMPLES = 3


class NonFiniteError(StageError):
    """A loss, gradient, parameter, buffer or input holds NaN or ±inf."""


def _tensors(net: nn.Module, grads: bool,
             optimizer: torch.optim.Optimizer | None = None) -> Iterable[tuple[str, str, torch.Tensor]]:
    for name, p in net.named_parameters():
        yield "parameter", name, p.detach()
        if grads and p.grad is not None:
            yield "gradient", name, p.grad.detach()
        state = optimizer.state.get(p, {}) if optimizer is not None else {}
        for key, t in state.items():      # momentum / Adam moments: where a NaN gradient lands
            if torch.is_tensor(t) and t.is_floating_point() and t.dim() > 0:
                yield "optimizer state", f"{name}.{key}", t.detach()
    for name, b in net.named_buffers():
        if b.is_floating_point():
            yield "buffer", name, b.detach()


def _state_tensors(state: Mapping[str, torch.Tensor]) -> Iterable[tuple[str, str, torch.Tensor]]:
    for name, t in state.items():
        if torch.is_tensor(t) and t.is_floating_point():
            yield "tensor", name, t.detach()


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """One reduction per device and a single host synchronisation."""
    if not tensors:
        return True
    flags = [torch.isfinite(t).all() for t in tensors]
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all())


def _first_bad_value(t: torch.Tensor) -> float:
    bad = t[~torch.isfinite(t)]
    return float(bad.reshape(-1)[0]) if bad.numel() else float("nan")


def nonfinite_report(items: Iterable[tuple[str, str, torch.Tensor]]) -> dict[str, list[str]]:
    """``{kind: ["name = value (n of N)", ...]}`` for the tensors holding NaN/inf; empty when
    all are finite (checked with one synchronisation first)."""
    items = list(items)
    if _all_finite([t for _, _, t in items]):
        return {}
    found: dict[str, list[str]] = {}
    for kind, name, t in items:
        n_bad = int((~torch.isfinite(t)).sum())
        if n_bad:
            found.setdefault(kind, []).append(f"{name} = {_first_bad_value(t)} ({n_bad} of {t.numel()})")
    return found


def _summary(found: dict[str, list[str]]) -> str:
    parts = []
    for kind, entries in found.items():
        label = kind if len(entries) == 1 else (f"{kind} tensors" if kind.endswith("state") else f"{kind}s")
        parts.append(f"{len(entries)} {label} (e.g. {'; '.join(entries[:_EXAMPLES])})")
    return ", ".join(parts)


def _advice(section: str | None, settings: Mapping[str, object] | None) -> str:
    if not section:
        return "lower the learning rate, or switch mixed precision (amp) off"
    settings = settings or {}

    def shown(key: str) -> str:
        value = settings.get(key)
        text = f"{value:g}" if isinstance(value, float) else str(value)
        return f"{section}.train.{key}" + (f"={text}" if key in settings else "")

    if settings.get("amp") is False:
        return f"look at {shown('optimizer.lr')}: lower the learning rate ({shown('amp')} already)"
    return f"look at {shown('optimizer.lr')} and {shown('amp')}: lower the learning rate, or set amp=False"


def check_finite(net: nn.Module, losses: Mapping[str, float], it: int, *, tensors: bool = True,
                 grads: bool = True, optimizer: torch.optim.Optimizer | None = None,
                 section: str | None = None, settings: Mapping[str, object] | None = None) -> None:
    """Raise :class:`NonFiniteError` when a loss value (every call) or, with ``tensors``, a
    parameter, gradient (``grads``; off under AMP, whose scaler skips inf-gradient steps),
    ``optimizer`` state tensor or floating-point buffer of ``net`` is NaN/inf after iteration ``it``.

    ``section`` (e.g. ``"classifier"``) and ``settings`` (``{"optimizer.lr": 1e8, "amp": False}``)
    name the config keys in the message."""
    bad_losses = {k: float(v) for k, v in losses.items()
                  if isinstance(v, (int, float)) and not math.isfinite(float(v))}
    found = nonfinite_report(_tensors(net, grads, optimizer)) if tensors else {}
    if not bad_losses and not found:
        return
    what = ", ".join([f"{k} = {v}" for k, v in bad_losses.items()] + ([_summary(found)] if found else []))
    where = f"{section} training" if section else "training"
    raise NonFiniteError(f"{where} diverged at iteration {it}: {what}; {_advice(section, settings)} "
                         "(no model file is written)")


def check_model_finite(model: nn.Module | Mapping[str, torch.Tensor], what: str,
                       fix: str) -> None:
    """Raise :class:`NonFiniteError` when a network's parameters/buffers (or a state dict's
    floating tensors) hold NaN/inf; ``what`` names the model, ``fix`` says what to re-run."""
    items = _tensors(model, grads=False) if isinstance(model, nn.Module) else _state_tensors(model)
    found = nonfinite_report(items)
    if found:
        raise NonFiniteError(f"{what} has non-finite weights: {_summary(found)}; {fix}")


def check_array_finite(array, what: str, fix: str) -> None:
    """Raise :class:`NonFiniteError` when a numpy array / tensor read as input holds NaN/inf."""
    if torch.is_tensor(array):
        if not array.is_floating_point() or bool(torch.isfinite(array).all()):
            return
        n_bad, size = int((~torch.isfinite(array)).sum()), array.numel()
    else:
        arr = np.asarray(array)
        if not np.issubdtype(arr.dtype, np.floating) or np.isfinite(arr).all():
            return
        n_bad, size = int((~np.isfinite(arr)).sum()), arr.size
    raise NonFiniteError(f"{what} holds {n_bad} non-finite value(s) of {size}; {fix}")


class LossStallMonitor:
    """Warn once when the loss has not moved from its start value.

    The start value is the mean loss over the first ``window`` iterations seen; after
    ``patience`` iterations (0: never), the mean over the latest ``window`` is compared with
    it: ``|latest − start| ≤ tol·|start|`` gives the warning (a heuristic: batch-to-batch
    noise larger than ``tol`` hides a stall, it never causes a false alarm by itself).
    """

    def __init__(self, patience: int, window: int = 10, tol: float = 1e-2, section: str | None = None,
                 causes: tuple[str, ...] = ()):
        self.patience, self.window, self.tol = int(patience), max(1, int(window)), float(tol)
        sec = f"{section}." if section else ""
        self.causes = (f"learning rate too small ({sec}train.optimizer.lr)", *causes,
                       "frozen layers (lr_mult 0, or parameters without gradients)")
        self._first: list[float] = []
        self._recent: list[float] = []
        self._seen = 0
        self.warned = False

    def update(self, loss: float) -> str | None:
        """Record one iteration's loss; returns the warning the first time the stall is seen."""
        self._seen += 1
        if len(self._first) < self.window:
            self._first.append(float(loss))
        self._recent = (self._recent + [float(loss)])[-self.window:]
        if self.warned or self.patience <= 0 or self._seen < max(self.patience, 2 * self.window):
            return None
        start, latest = float(np.mean(self._first)), float(np.mean(self._recent))
        if not (math.isfinite(start) and abs(latest - start) <= self.tol * abs(start)):
            return None
        self.warned = True
        return (f"the loss has not moved from its start value ({start:.4g} → {latest:.4g} after "
                f"{self._seen} iterations); likely causes: {', '.join(self.causes)}")


class TrainingGuard:
    """Interval hook of the training loop (:mod:`pipeline.runtime.training`, ``hook(state)`` every
    ``log_interval`` iterations, before that interval's checkpoint): every iteration's losses of
    the window, then the network's parameters and buffers and the optimizer's state (a NaN
    gradient lands there and in the parameters at its step; gradients themselves are freed by
    then) — :func:`check_finite`; then :class:`LossStallMonitor` on the window's losses.

    ``state`` needs ``iteration``, ``window`` (one dict of floats per iteration), ``net``,
    ``optimizer`` and ``log``."""

    def __init__(self, section: str | None = None, settings: Mapping[str, object] | None = None,
                 stall_iters: int = 500, causes: tuple[str, ...] = ()):
        self.section, self.settings = section, dict(settings or {})
        self.stall = LossStallMonitor(stall_iters, window=max(1, int(stall_iters) // 5),
                                      section=section, causes=causes)

    def __call__(self, state) -> None:
        first = int(state.iteration) - len(state.window) + 1
        for k, rec in enumerate(state.window):
            check_finite(state.net, {n: v for n, v in rec.items() if n != "lr"}, first + k,
                         tensors=False, section=self.section, settings=self.settings)
        check_finite(state.net, {}, int(state.iteration), grads=False, optimizer=state.optimizer,
                     section=self.section, settings=self.settings)
        for rec in state.window:
            warning = self.stall.update(rec["loss"]) if "loss" in rec else None
            if warning:
                state.log(f"warning: {warning}")


DEFAULT_STALL_ITERS = 500


def training_guard(train_section: Mapping, section: str | None = None,
                   causes: tuple[str, ...] = ()) -> TrainingGuard:
    """The :class:`TrainingGuard` of a stage's ``train`` config section: the message names
    ``<section>.train.optimizer.lr`` / ``.amp`` with their values; ``train.stall_iters``
    (default :data:`DEFAULT_STALL_ITERS`, 0 = off) sets the stall warning."""
    opt = train_section.get("optimizer", {}) or {}
    settings = {"optimizer.lr": opt.get("lr"), "amp": train_section.get("amp", False)}
    return TrainingGuard(section, settings, int(train_section.get("stall_iters", DEFAULT_STALL_ITERS)),
                         causes)
