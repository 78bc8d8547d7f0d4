"""Optimizer with per-parameter multipliers and the per-iteration learning-rate factor.

Torch only (no OpenMMLab), used by :mod:`pipeline.runtime.training`. The multiplier options keep the
meaning of mmengine's ``DefaultOptimWrapperConstructor`` (``paramwise_cfg``), which the
configs were written for:

* ``lr_mult = {name substring: float | {"lr_mult": a, "decay_mult": b}}`` (a float means
  ``{"lr_mult": float}``): a parameter whose full name contains a key gets ``lr·a`` and
  ``weight_decay·b``; when several keys match, the longest wins (equal lengths: the
  alphabetically first), and the bias / norm rules below are then ignored for it;
* ``paramwise = {"bias_lr_mult", "bias_decay_mult", "norm_decay_mult"}``: every other
  parameter named ``bias`` gets ``lr·bias_lr_mult`` (not the biases of normalisation layers),
  parameters of normalisation layers (BatchNorm, GroupNorm, LayerNorm, InstanceNorm) get
  ``weight_decay·norm_decay_mult``, other biases ``weight_decay·bias_decay_mult``.

Parameters with equal settings share one optimizer group (in model order).
"""
from __future__ import annotations

import torch
from torch import nn

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
               nn.GroupNorm, nn.LayerNorm)
PARAMWISE_KEYS = ("bias_lr_mult", "bias_decay_mult", "norm_decay_mult")
SCHEDULES = ("poly", "step", "constant")


def custom_keys(lr_mult: dict | None) -> dict[str, dict[str, float]]:
    """``lr_mult`` with every value as ``{"lr_mult": a, "decay_mult": b}`` (missing = 1)."""
    out = {}
    for key, value in (lr_mult or {}).items():
        if hasattr(value, "items"):
            unknown = set(value) - {"lr_mult", "decay_mult"}
            if unknown:
                raise ValueError(f"lr_mult[{key!r}]: unknown keys {sorted(unknown)} "
                                 "(allowed: lr_mult, decay_mult)")
            value = {k: float(v) for k, v in value.items()}
        else:
            value = {"lr_mult": float(value)}
        out[str(key)] = {"lr_mult": value.get("lr_mult", 1.0), "decay_mult": value.get("decay_mult", 1.0)}
    return out


def _matching_key(name: str, keys: dict) -> str | None:
    for key in sorted(sorted(keys), key=len, reverse=True):   # longest first, then alphabetical
        if key in name:
            return key
    return None


def _rule_multipliers(pname: str, module: nn.Module, paramwise: dict) -> tuple[float, float]:
    """(lr_mult, decay_mult) of a parameter that matches no custom key."""
    is_norm = isinstance(module, NORM_LAYERS)
    lr_m, decay_m = 1.0, 1.0
    if pname == "bias" and not is_norm and paramwise.get("bias_lr_mult") is not None:
        lr_m = float(paramwise["bias_lr_mult"])
    if is_norm and paramwise.get("norm_decay_mult") is not None:
        decay_m = float(paramwise["norm_decay_mult"])
    elif pname == "bias" and paramwise.get("bias_decay_mult") is not None:
        decay_m = float(paramwise["bias_decay_mult"])
    return lr_m, decay_m


def parameter_multipliers(net: nn.Module, lr_mult: dict | None = None,
                          paramwise: dict | None = None) -> list[tuple[str, nn.Parameter, float, float]]:
    """``(name, parameter, lr_mult, decay_mult)`` of every trainable parameter, in model order."""
    paramwise = dict(paramwise or {})
    unknown = set(paramwise) - set(PARAMWISE_KEYS)
    if unknown:
        raise ValueError(f"paramwise: unknown options {sorted(unknown)} (allowed: {', '.join(PARAMWISE_KEYS)})")
    keys = custom_keys(lr_mult)
    out, seen = [], set()
    for mod_name, module in net.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            name = f"{mod_name}.{pname}" if mod_name else pname
            key = _matching_key(name, keys)
            if key is not None:
                lr_m, decay_m = keys[key]["lr_mult"], keys[key]["decay_mult"]
            else:
                lr_m, decay_m = _rule_multipliers(pname, module, paramwise)
            out.append((name, p, lr_m, decay_m))
    return out


def optimizer_class(kind: str):
    cls = getattr(torch.optim, str(kind), None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"optimizer.type {kind!r} is not a torch.optim optimizer (e.g. SGD, Adam, AdamW)")
    return cls


def build_optimizer(net: nn.Module, optimizer: dict, lr_mult: dict | None = None,
                    paramwise: dict | None = None) -> torch.optim.Optimizer:
    """``optimizer = dict(type="SGD" | "Adam" | "AdamW" | any torch.optim class, lr=..., ...)``;
    groups from :func:`parameter_multipliers`, each with ``lr_mult`` / ``decay_mult`` recorded
    (the schedule scales ``initial_lr``)."""
    opts = dict(optimizer)
    cls = optimizer_class(opts.pop("type", "SGD"))
    if "lr" not in opts:
        raise ValueError("optimizer.lr is missing (e.g. optimizer=dict(type='SGD', lr=1e-3))")
    base_lr, base_wd = float(opts["lr"]), opts.get("weight_decay")
    groups: dict[tuple[float, float], dict] = {}
    for _, p, lr_m, decay_m in parameter_multipliers(net, lr_mult, paramwise):
        g = groups.setdefault((lr_m, decay_m), {"params": [], "lr": base_lr * lr_m,
                                                 "lr_mult": lr_m, "decay_mult": decay_m})
        if base_wd is not None:
            g["weight_decay"] = float(base_wd) * decay_m
        g["params"].append(p)
    if not groups:
        raise ValueError("the network has no trainable parameters")
    opt = cls(list(groups.values()), **opts)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    return opt


def lr_factor(schedule: dict, it: int, max_iters: int) -> float:
    """Learning-rate factor of (0-based) iteration ``it``:

    * ``poly`` (power p, default 0.9): ``(1 - it / (max_iters - 1)) ** p`` — 1 at the first
      iteration, 0 at the last (mmengine's ``PolyLR`` with ``eta_min=0``, DeepLab's "poly");
    * ``step`` (``step`` s, ``gamma`` γ, default 0.1): ``γ ** floor(it / s)``;
    * ``constant``: 1.
    """
    kind = schedule.get("type", "poly")
    if kind == "poly":
        if max_iters <= 1:
            return 1.0
        return max(0.0, 1.0 - it / (max_iters - 1)) ** float(schedule.get("power", 0.9))
    if kind == "step":
        step = int(schedule.get("step", 0))
        if step <= 0:
            raise ValueError(f"schedule.step must be a positive number of iterations, got {schedule.get('step')!r}")
        return float(schedule.get("gamma", 0.1)) ** (it // step)
    if kind == "constant":
        return 1.0
    raise ValueError(f"schedule.type {kind!r} is not one of {', '.join(SCHEDULES)}")


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Every group's ``lr = initial_lr · factor``."""
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor
