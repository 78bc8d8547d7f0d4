"""Training step of the classifier and of the segmenter: the project's loop vs mmengine vs plain torch.

For each network at the VOC input size (default 321×321, width 1.0 = the VOC networks, batch 2,
random init), on one synthetic batch (``bench.inputs``), with the stage's own loss function
(``pipeline.models.classifier.classifier_loss_fn``: multi-label soft margin;
``pipeline.dsrg.segmenter_loss_fn``:
DSRG loss = growing + seeding + CRF boundary loss, CRF in-process) and SGD (lr 1e-3, momentum
0.9, weight decay 5e-4):

* **project step**: :func:`pipeline.runtime.training.train_step` with :func:`pipeline.runtime.training.
  build_optimizer`, i.e. what :func:`pipeline.runtime.training.train` calls each iteration (its
  per-iteration bookkeeping, a few dict updates, not included);
* **mmengine step** (when mmengine is installed): ``BaseModel.train_step(batch, optim_wrapper)``
  of a small adapter around the same loss function, with an ``OptimWrapper`` from
  ``build_optim_wrapper``: the step of mmengine's Runner, which trained the stages before
  :mod:`pipeline.runtime.training` replaced it;
* **plain step**: ``loss_fn(net, batch)``, sum of the ``loss`` keys, ``backward()``,
  ``opt.step()``, ``opt.zero_grad()``;
* **bare fwd/bwd**: ``net(x)``, ``logits.sum().backward()`` (no loss, no optimizer).

The three steps take turns within each repeat (:func:`bench.common.measure_interleaved`).
Figures: images/s of the project step, its time relative to the mmengine step and to the plain
step, and the share of the bare fwd/bwd in the step. Check: from identical weights and RNG
state, the first step of each gives bit-identical updated weights.
"""
from __future__ import annotations

import copy

import torch

from bench.common import measure, measure_interleaved, row
from bench.flops import build_net, count_flops
from bench.inputs import classifier_batch, segmenter_batch
from pipeline.dsrg import segmenter_loss_fn
from pipeline.models.classifier import classifier_loss_fn

NAME = "training"
DEFAULTS = dict(size=321, width=1.0, batch=2, num_classes=21, batch_norm=False, repeats=3,
                lr=1e-3, nets=("classifier", "segmenter"), segmenter=dict())


def _loss_fn(kind: str):
    if kind == "classifier":
        return classifier_loss_fn("multilabel_soft_margin")
    from bench.inputs import reference_dsrg_config
    return segmenter_loss_fn("dsrg", reference_dsrg_config(), None)


def _sum_losses(out: dict) -> torch.Tensor:
    """What every step optimises: the sum of the means of the ``loss`` keys."""
    return sum(v.mean() for k, v in out.items() if "loss" in k)


def _logits(out):
    return out["logits"] if isinstance(out, dict) else out


def _mmengine_step(net, loss_fn, optim: dict):
    """The mmengine Runner's train step around ``loss_fn``, or None without mmengine."""
    try:
        from mmengine.model import BaseModel
        from mmengine.optim import build_optim_wrapper
    except ImportError:
        return None

    class LossModel(BaseModel):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, mode="loss", **batch):
            return loss_fn(self.net, batch)

    model = LossModel()
    wrapper = build_optim_wrapper(model, dict(type="OptimWrapper", optimizer=dict(optim)))
    return lambda batch: model.train_step(batch, wrapper)["loss"]


def _steps(kind: str, cfg: dict, batch) -> tuple[dict, list]:
    """``{name: step()}`` for the project / mmengine / plain steps, each on its own copy of one
    randomly initialised network, and the copies (same order)."""
    from pipeline.runtime.training import build_optimizer, train_step

    seg_kw = dict(cfg.get("segmenter") or {}) if kind == "segmenter" else {}
    torch.manual_seed(0)
    net = build_net(kind, float(cfg["width"]), int(cfg["num_classes"]), bool(cfg["batch_norm"]), **seg_kw).train()
    nets = {name: copy.deepcopy(net) for name in ("project", "mmengine", "plain")}
    loss_fn = _loss_fn(kind)
    optim = dict(type="SGD", lr=float(cfg["lr"]), momentum=0.9, weight_decay=5e-4)
    opt_p = build_optimizer(nets["project"], optim)
    opt_b = torch.optim.SGD(nets["plain"].parameters(), lr=float(cfg["lr"]), momentum=0.9, weight_decay=5e-4)

    def plain_step():
        loss = _sum_losses(loss_fn(nets["plain"], batch))
        loss.backward()
        opt_b.step()
        opt_b.zero_grad()
        return loss.detach()

    steps = {"project": lambda: train_step(nets["project"], loss_fn, batch, opt_p)["loss"],
             "mmengine": _mmengine_step(nets["mmengine"], loss_fn, optim), "plain": plain_step}
    if steps["mmengine"] is None:
        del steps["mmengine"], nets["mmengine"]
    else:
        mm = steps["mmengine"]
        steps["mmengine"] = lambda: mm(batch)
    return steps, nets


def _same_first_step(steps: dict, nets: dict) -> bool:
    for fn in steps.values():             # same weights and RNG state (dropout masks) before each
        torch.manual_seed(123)
        fn()
    ref = list(nets["plain"].parameters())
    return all(all(torch.equal(a, b) for a, b in zip(n.parameters(), ref)) for n in nets.values())


def bench_network(kind: str, cfg: dict, ctx) -> tuple[list[dict], dict]:
    B, S, C = int(cfg["batch"]), int(cfg["size"]), int(cfg["num_classes"])
    seg_kw = dict(cfg.get("segmenter") or {}) if kind == "segmenter" else {}
    batch = (classifier_batch if kind == "classifier" else segmenter_batch)(B, S, C, seed=1)
    steps, nets = _steps(kind, cfg, batch)
    ok = _same_first_step(steps, nets)
    t = measure_interleaved(steps, ctx.reps(cfg), ctx.warmup - 1 if ctx.warmup > 0 else 0)
    ctx.log(f"training/{kind}: " + ", ".join(f"{k} step {v['median']:.2f} s" for k, v in t.items()))
    x, net_b = batch["image"], nets["plain"]

    def bare():
        _logits(net_b(x)).float().sum().backward()
        net_b.zero_grad(set_to_none=True)

    fb = measure(bare, ctx.reps(cfg), ctx.warmup)
    ctx.log(f"training/{kind}: bare fwd/bwd {fb['median']:.2f} s")
    flops = count_flops(kind, S, float(cfg["width"]), C, **seg_kw)["forward_backward"]
    gflops = flops * B / fb["median"] / 1e9
    setting = f"B={B} @ {S}×{S}, width {float(cfg['width']):g}" + (", BN" if cfg["batch_norm"] else "")
    label = "classifier (VGG-16 EP)" if kind == "classifier" else "segmenter (DeepLab v2 VGG-16, DSRG loss)"
    proj = t["project"]["median"]
    rows = []
    for base, desc in (("mmengine", "mmengine Runner step (LossModel + OptimWrapper), same loss + SGD"),
                       ("plain", "plain torch step, same loss + SGD")):
        if base in t:
            rows.append(row(NAME, f"{label} train step, pipeline.runtime.training ({setting}) vs {base}", B / proj,
                            "img/s", baseline=desc, baseline_value=B / t[base]["median"],
                            ratio=proj / t[base]["median"], ratio_desc=f"× the {base}-step time",
                            check=f"bit-identical weights after step 1 ({', '.join(nets)})", check_ok=ok,
                            notes=f"step {proj:.2f} s; torch threads {torch.get_num_threads()}",
                            runs=t["project"]["runs"], baseline_runs=t[base]["runs"]))
    rows.append(row(NAME, f"{label} bare forward/backward ({setting})", B / fb["median"], "img/s",
                    baseline="pipeline.runtime.training train step", baseline_value=B / proj,
                    ratio=fb["median"] / proj, ratio_desc="of the train-step time",
                    notes=f"{flops / 1e9:.3g} GFLOP/image fwd+bwd → {gflops:.3g} GFLOP/s achieved on this CPU",
                    runs=fb["runs"], extra={"gflops_per_s": gflops, "flops_per_image": flops}))
    shared = {"fwd_bwd_per_image_s": fb["median"] / B, "step_per_image_s": proj / B,
              "size": S, "width": float(cfg["width"]), "batch": B, "achieved_gflops": gflops}
    if not ok:
        raise AssertionError(f"{kind}: the train steps update the weights differently ({', '.join(nets)})")
    return rows, shared


def run(cfg: dict, ctx) -> list[dict]:
    cfg = {**DEFAULTS, **cfg}
    rows = []
    for kind in cfg["nets"]:
        r, shared = bench_network(kind, cfg, ctx)
        ctx.shared[f"train_{kind}"] = shared
        rows += r
    return rows
