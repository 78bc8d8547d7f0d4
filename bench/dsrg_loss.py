"""Boundary-loss CRF per DSRG training iteration: its time and its share of the iteration.

``pipeline.dsrg.dsrg_losses`` on one batch of the DSRG recipe (B=20, 321×321 crops, 21 classes,
logits on the 41×41 output grid; seeds / images from ``bench.inputs``), forward + backward of the
loss, with the training CRF (preset ``dsrg_train``) in-process (``crf_pool=None``) and in a pool of
``workers`` processes (created and warmed up before timing, as the segmenter stage keeps one pool
for the run). The loss reports its own split: ``crf_wait_s`` (time the main thread waited for the
CRF, incl. the grid downscaling of the images) and ``grow_s`` (region growing).

Share of the iteration = CRF time / (network fwd/bwd of a batch of 20 + DSRG loss). The network
time comes from the ``training`` benchmark of the same run (bare forward/backward of the segmenter
at its configured size, width and batch, scaled linearly to 20 images); without it, it is measured
here with the same settings.
"""
from __future__ import annotations

import os
import statistics

import torch

from bench.common import measure, measure_interleaved, row
from bench.inputs import reference_dsrg_config, segmenter_batch, smooth_logits
from pipeline.crf_pool import make_crf_pool
from pipeline.dsrg import dsrg_losses

NAME = "dsrg_loss"
DEFAULTS = dict(batch=20, size=321, num_classes=21, workers=None, seed=0,
                net=dict(size=321, width=1.0, batch=2, segmenter=dict()),
                # ASSUMPTION for the GPU estimate: sustained training throughput of one modern GPU
                # (H100 at ~30 % of its 989 TFLOP/s dense fp16/bf16 peak; docs/PERFORMANCE.md)
                assumed_gpu_tflops=300.0)


def _net_fwd_bwd_per_image(ncfg: dict, num_classes: int, ctx) -> tuple[float, str]:
    shared = ctx.shared.get("train_segmenter")
    if shared is not None:
        return shared["fwd_bwd_per_image_s"], (
            f"network fwd/bwd from the training figure: batch {shared['batch']} @ {shared['size']}, width "
            f"{shared['width']:g}, scaled linearly to the batch")
    from bench.flops import build_net
    B, S = int(ncfg.get("batch", 2)), int(ncfg.get("size", 321))
    net = build_net("segmenter", float(ncfg.get("width", 1.0)), num_classes,
                    **dict(ncfg.get("segmenter") or {})).train()
    x = torch.randn(B, 3, S, S)

    def bare():
        net(x).sum().backward()
        net.zero_grad(set_to_none=True)

    t = measure(bare, ctx.reps(ncfg), ctx.warmup)["median"]
    return t / B, (f"network fwd/bwd measured here: batch {B} @ {S}, width {float(ncfg.get('width', 1.0)):g}, "
                   "scaled linearly to the batch")


def run(cfg: dict, ctx) -> list[dict]:
    cfg = {**DEFAULTS, **cfg}
    B, S, C = int(cfg["batch"]), int(cfg["size"]), int(cfg["num_classes"])
    from pipeline.models.deeplab import DeepLabV2VGG16
    h = DeepLabV2VGG16.output_size(S)
    batch = segmenter_batch(B, S, C, seed=int(cfg["seed"]))
    base = smooth_logits(B, C, h, batch["classes"], int(cfg["seed"]))
    dcfg = reference_dsrg_config()
    reps = ctx.reps(cfg)

    def make(pool, log):
        def fn():
            logits = base.clone().requires_grad_(True)
            out = dsrg_losses(logits, batch["label"], batch["classes"], batch["raw"], dcfg, pool)
            loss = sum(v for k, v in out.items() if "loss" in k)
            loss.backward()
            log.append({k: float(v.detach()) for k, v in out.items()})
            return loss.detach(), logits.grad
        return fn

    log_in: list = []
    log_pool: list = []
    workers = int(cfg["workers"] or os.cpu_count() or 1)
    pool = make_crf_pool(workers)
    try:                        # in-process and pooled take turns (a drifting load hits both)
        m = measure_interleaved({"in": make(None, log_in), "pool": make(pool, log_pool)}, reps,
                                max(1, ctx.warmup))
    finally:
        pool.shutdown()
    inproc, pooled = m["in"], m["pool"]
    ctx.log(f"dsrg_loss: in-process {inproc['median'] * 1e3:.0f} ms, pool of {workers} "
            f"{pooled['median'] * 1e3:.0f} ms")
    timed_in = log_in[-reps:]
    crf_t = statistics.median(r["crf_wait_s"] for r in timed_in)
    grow_t = statistics.median(r["grow_s"] for r in timed_in)
    crf_pool_t = statistics.median(r["crf_wait_s"] for r in log_pool[-reps:])
    # loss values bit-identical; gradients equal up to float rounding (reduction order may differ
    # with the memory alignment of the CRF output, which comes back unpickled from the pool)
    grad_diff = float((inproc["result"][1] - pooled["result"][1]).abs().max())
    same = bool(torch.equal(inproc["result"][0], pooled["result"][0])
                and torch.allclose(inproc["result"][1], pooled["result"][1], rtol=1e-5, atol=1e-9))
    per_img, how = _net_fwd_bwd_per_image(dict(cfg["net"]), C, ctx)
    net_t = per_img * B
    iter_in = net_t + inproc["median"]
    iter_pool = net_t + pooled["median"]
    setting = f"B={B}, {S}×{S} crops → {h}×{h} grid, C={C}"
    cov = f"seed coverage {100 * timed_in[-1]['cov_before']:.0f}% → {100 * timed_in[-1]['cov_after']:.0f}%"
    rows = [
        row(NAME, f"boundary-loss CRF per iteration, in-process ({setting})", crf_t, "s",
            baseline="whole DSRG loss fwd+bwd", baseline_value=inproc["median"], ratio=crf_t / inproc["median"],
            ratio_desc="of the DSRG loss", notes=f"growing {grow_t * 1e3:.1f} ms; {cov}",
            runs=[r["crf_wait_s"] for r in timed_in], baseline_runs=inproc["runs"]),
        row(NAME, f"DSRG loss per iteration with a CRF pool of {workers} ({setting})", pooled["median"], "s",
            baseline="CRF in-process", baseline_value=inproc["median"], ratio=inproc["median"] / pooled["median"],
            ratio_desc="× speed-up", check=f"same loss as in-process (gradient max |Δ| {grad_diff:.1g})",
            check_ok=same, notes=f"main thread waits {crf_pool_t * 1e3:.0f} ms for the pooled CRF; {os.cpu_count()} CPU cores",
            runs=pooled["runs"], baseline_runs=inproc["runs"]),
        row(NAME, f"boundary-loss CRF share of a training iteration, in-process CRF ({setting})", crf_t, "s",
            baseline=f"iteration = net fwd/bwd (B={B}) + DSRG loss", baseline_value=iter_in,
            ratio=crf_t / iter_in, ratio_desc="of the iteration", notes=how),
        row(NAME, f"boundary-loss CRF share of a training iteration, pool of {workers} ({setting})", crf_pool_t,
            "s", baseline=f"iteration = net fwd/bwd (B={B}) + DSRG loss", baseline_value=iter_pool,
            ratio=crf_pool_t / iter_pool, ratio_desc="of the iteration", notes=how),
    ]
    from bench.flops import count_flops
    ncfg = dict(cfg["net"])
    flops = count_flops("segmenter", int(ncfg.get("size", 321)), float(ncfg.get("width", 1.0)), C,
                        **dict(ncfg.get("segmenter") or {}))["forward_backward"]
    tflops = float(cfg["assumed_gpu_tflops"])
    gpu_net = B * flops / (tflops * 1e12)
    gpu_iter = gpu_net + inproc["median"]
    rows.append(row(
        NAME, f"boundary-loss CRF share of an iteration on a GPU, in-process CRF (estimate; {setting})", crf_t, "s",
        baseline=f"iteration = GPU fwd/bwd at an ASSUMED {tflops:g} TFLOP/s + measured DSRG loss",
        baseline_value=gpu_iter, ratio=crf_t / gpu_iter, ratio_desc="of the iteration",
        notes=f"GPU fwd/bwd of {B} images: {B} × {flops / 1e9:.0f} GFLOP / {tflops:g} TFLOP/s = {gpu_net * 1e3:.0f} ms "
              f"(assumed, not measured); with the pool of {workers}: CRF {crf_pool_t * 1e3:.0f} ms = "
              f"{100 * crf_pool_t / (gpu_net + pooled['median']):.0f} % of the iteration",
        extra={"gpu_net_s": gpu_net, "assumed_gpu_tflops": tflops, "flops_per_image": flops}))
    ctx.shared["dsrg_loss"] = {"crf_s": crf_t, "crf_pool_s": crf_pool_t, "loss_s": inproc["median"],
                               "loss_pool_s": pooled["median"], "grow_s": grow_t, "batch": B, "workers": workers}
    if not same:
        raise AssertionError("DSRG loss with a CRF pool differs from the in-process one")
    return rows
