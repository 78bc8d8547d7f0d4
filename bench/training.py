"""Training step of the classifier and of the segmenter: mmengine vs plain torch, and the bare network.

For each network at the VOC input size (default 321×321, width 1.0 = the VOC networks, batch 2,
random init), on one synthetic batch (``bench.inputs``), with the stage's own loss function
(``stages.classifier.make_loss_fn``: multi-label soft margin; ``stages.segmenter.make_loss_fn``:
DSRG loss = growing + seeding + CRF boundary loss, CRF in-process) and SGD (lr 1e-3, momentum
0.9, weight decay 5e-4):

* **mmengine step**: ``LossModel(net, loss_fn).train_step(batch, optim_wrapper)`` with an
  ``OptimWrapper`` from ``build_optim_wrapper`` (data preprocessor, loss parsing, backward, step,
  zero_grad), i.e. what the Runner's train loop calls each iteration (hooks/logging not included);
* **plain step**: ``loss_fn(net, batch)``, sum of the ``loss`` keys, ``backward()``,
  ``opt.step()``, ``opt.zero_grad()``;
* **bare fwd/bwd**: ``net(x)``, ``logits.sum().backward()`` (no loss, no optimizer).

Figures: images/s of the mmengine step, its time relative to the plain step (framework overhead),
and the share of the bare fwd/bwd in the step. Check: from identical weights and RNG state the
first mmengine step and the first plain step give bit-identical updated weights.
"""
from __future__ import annotations

import copy

import torch

from bench.common import measure, row
from bench.flops import build_net, count_flops
from bench.inputs import classifier_batch, segmenter_batch

NAME = "training"
DEFAULTS = dict(size=321, width=1.0, batch=2, num_classes=21, batch_norm=False, repeats=3,
                lr=1e-3, nets=("classifier", "segmenter"), segmenter=dict())


def _loss_fn(kind: str):
    if kind == "classifier":
        from stages.classifier import make_loss_fn
        return make_loss_fn("multilabel_soft_margin")
    from bench.inputs import reference_dsrg_config
    from stages.segmenter import make_loss_fn
    return make_loss_fn("dsrg", reference_dsrg_config(), None)


def _sum_losses(out: dict) -> torch.Tensor:
    """What mmengine's ``parse_losses`` optimises: the sum of the means of the ``loss`` keys."""
    return sum(v.mean() for k, v in out.items() if "loss" in k)


def _logits(out):
    return out["logits"] if isinstance(out, dict) else out


def bench_network(kind: str, cfg: dict, ctx) -> tuple[list[dict], dict]:
    from mmengine.optim import build_optim_wrapper
    from pipeline.mm.train import LossModel, optim_wrapper_cfg

    B, S, C = int(cfg["batch"]), int(cfg["size"]), int(cfg["num_classes"])
    seg_kw = dict(cfg.get("segmenter") or {}) if kind == "segmenter" else {}
    torch.manual_seed(0)
    net_a = build_net(kind, float(cfg["width"]), C, bool(cfg["batch_norm"]), **seg_kw).train()
    net_b = copy.deepcopy(net_a)
    batch = (classifier_batch if kind == "classifier" else segmenter_batch)(B, S, C, seed=1)
    loss_fn = _loss_fn(kind)
    optim = dict(type="SGD", lr=float(cfg["lr"]), momentum=0.9, weight_decay=5e-4)
    model = LossModel(net_a, loss_fn)
    wrapper = build_optim_wrapper(model, optim_wrapper_cfg(optim))
    opt = torch.optim.SGD(net_b.parameters(), lr=float(cfg["lr"]), momentum=0.9, weight_decay=5e-4)

    def mm_step():
        return model.train_step(batch, wrapper)["loss"]

    def plain_step():
        loss = _sum_losses(loss_fn(net_b, batch))
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.detach()

    # check: same first step from the same weights and RNG state (dropout masks)
    torch.manual_seed(123)
    mm_step()
    torch.manual_seed(123)
    plain_step()
    same_w = all(torch.equal(a, b) for a, b in zip(net_a.parameters(), net_b.parameters()))
    reps = ctx.reps(cfg)
    mm = measure(mm_step, reps, ctx.warmup - 1 if ctx.warmup > 0 else 0)
    ctx.log(f"training/{kind}: mmengine step {mm['median']:.2f} s")
    plain = measure(plain_step, reps, ctx.warmup - 1 if ctx.warmup > 0 else 0)
    ctx.log(f"training/{kind}: plain step {plain['median']:.2f} s")
    x = batch["image"]

    def bare():
        _logits(net_b(x)).float().sum().backward()
        net_b.zero_grad(set_to_none=True)

    fb = measure(bare, reps, ctx.warmup)
    ctx.log(f"training/{kind}: bare fwd/bwd {fb['median']:.2f} s")
    flops = count_flops(kind, S, float(cfg["width"]), C, **seg_kw)["forward_backward"]
    gflops = flops * B / fb["median"] / 1e9
    setting = f"B={B} @ {S}×{S}, width {float(cfg['width']):g}" + (", BN" if cfg["batch_norm"] else "")
    label = "classifier (VGG-16 EP)" if kind == "classifier" else "segmenter (DeepLab v2 VGG-16, DSRG loss)"
    over = mm["median"] / plain["median"]
    ok = same_w
    rows = [
        row(NAME, f"{label} train step, mmengine LossModel+OptimWrapper ({setting})", B / mm["median"],
            "img/s", baseline="plain torch step, same loss + SGD", baseline_value=B / plain["median"],
            ratio=over, ratio_desc="× the plain-step time (framework overhead)",
            check="bit-identical weights after step 1 as plain torch", check_ok=ok,
            notes=f"step {mm['median']:.2f} s; torch threads {torch.get_num_threads()}",
            runs=mm["runs"], baseline_runs=plain["runs"]),
        row(NAME, f"{label} bare forward/backward ({setting})", B / fb["median"], "img/s",
            baseline="mmengine train step", baseline_value=B / mm["median"],
            ratio=fb["median"] / mm["median"], ratio_desc="of the train-step time",
            notes=f"{flops / 1e9:.3g} GFLOP/image fwd+bwd → {gflops:.3g} GFLOP/s achieved on this CPU",
            runs=fb["runs"], extra={"gflops_per_s": gflops, "flops_per_image": flops}),
    ]
    shared = {"fwd_bwd_per_image_s": fb["median"] / B, "step_per_image_s": mm["median"] / B,
              "size": S, "width": float(cfg["width"]), "batch": B, "achieved_gflops": gflops}
    if not ok:
        raise AssertionError(f"{kind}: the mmengine step updates the weights differently from the plain step")
    return rows, shared


def run(cfg: dict, ctx) -> list[dict]:
    cfg = {**DEFAULTS, **cfg}
    rows = []
    for kind in cfg["nets"]:
        r, shared = bench_network(kind, cfg, ctx)
        ctx.shared[f"train_{kind}"] = shared
        rows += r
    return rows
