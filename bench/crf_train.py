"""DSRG training CRF (preset ``dsrg_train``): the exact torch mean-field vs pydensecrf, speed and
agreement, on one batch of the recipe (B = 20, 41×41 grid, 21 classes).

Inputs: the crops of ``bench.inputs.segmenter_batch`` downscaled to the grid (as the DSRG loss
does) and P = the DSRG softmax of ``bench.inputs.smooth_logits`` (random smooth fields favouring
each image's classes), the cues of the batch's seed maps on the grid.

Timed, taking turns within each repeat (``measure_interleaved``): pydensecrf in-process
(``crf_batch``, one core), pydensecrf in a pool of ``workers`` processes (created and warmed up
first, as the segmenter keeps one pool per run), the torch CRF on the CPU (all torch threads) and,
when CUDA is available, on the GPU (synchronised; inputs already on the device, as in training).
Agreement (:func:`bench.crf_agreement.crf_agreement`): argmax of Q, mean |ΔQ|, grown seeds; for
scale, the argmax agreement of pydensecrf with itself when the bilateral kernel's σ (bi_xy,
bi_rgb) are 5 % wider — about how far the lattice's kernel is from the exact one
(docs/CRF_TORCH.md).
"""
from __future__ import annotations

import dataclasses
import os

import torch

from bench.common import measure_interleaved, row
from bench.crf_agreement import crf_agreement
from bench.inputs import reference_dsrg_config, segmenter_batch, smooth_logits
from pipeline.crf_pool import crf_batch, make_crf_pool
from pipeline.crf_torch import dense_crf_torch
from pipeline.dsrg import cues_on_grid, grid_images
from pipeline.losses import stable_softmax_probs

NAME = "crf_train"
DEFAULTS = dict(batch=20, size=321, grid=41, num_classes=21, workers=None, seed=0,
                gpu_goal=10.0, min_argmax=0.95)


def make_inputs(B: int, S: int, h: int, C: int, seed: int):
    """``(images (B,h,h,3) uint8, P (B,C,h,h), cues (B,C,h,h), classes (B,C))``."""
    batch = segmenter_batch(B, S, C, seed=seed)
    probs = stable_softmax_probs(smooth_logits(B, C, h, batch["classes"], seed))
    cues = cues_on_grid(batch["label"], C, (h, h))
    return grid_images(batch["raw"].numpy(), (h, h)), probs, cues, batch["classes"]


def run(cfg: dict, ctx) -> list[dict]:
    cfg = {**DEFAULTS, **cfg}
    B, S, h, C = int(cfg["batch"]), int(cfg["size"]), int(cfg["grid"]), int(cfg["num_classes"])
    images, probs, cues, classes = make_inputs(B, S, h, C, int(cfg["seed"]))
    dsrg = reference_dsrg_config()
    params = dsrg.crf
    p_np = probs.numpy()
    workers = int(cfg["workers"] or os.cpu_count() or 1)
    fns = {"pyd": lambda: crf_batch(images, p_np, params),
           "torch_cpu": lambda: dense_crf_torch(images, probs, params)}
    cuda = torch.cuda.is_available()
    if cuda:
        img_d, p_d = torch.from_numpy(images).cuda(), probs.cuda()

        def on_gpu():
            q = dense_crf_torch(img_d, p_d, params)
            torch.cuda.synchronize()
            return q
        fns["torch_cuda"] = on_gpu
    pool = make_crf_pool(workers)
    try:
        crf_batch(images[:workers], p_np[:workers], params, pool, chunksize=1)      # warm-up
        fns["pyd_pool"] = lambda: crf_batch(images, p_np, params, pool)
        m = measure_interleaved(fns, ctx.reps(cfg), max(1, ctx.warmup))
        agree = crf_agreement(images, probs, cues, classes.bool(), dsrg, pool)
        wider = dataclasses.replace(params, bi_xy=1.05 * params.bi_xy, bi_rgb=1.05 * params.bi_rgb)
        q_ref = crf_batch(images, p_np, params, pool)
        agree["argmax_pydensecrf_wider"] = float(
            (crf_batch(images, p_np, wider, pool).argmax(1) == q_ref.argmax(1)).mean())
    finally:
        pool.shutdown()
    ctx.log("crf_train: " + ", ".join(f"{k} {v['median'] * 1e3:.0f} ms" for k, v in m.items()))
    base = m["pyd"]
    setting = f"B={B}, {h}×{h} grid, C={C}, {params.iterations} iterations"
    threads = torch.get_num_threads()
    rows = [
        row(NAME, f"training CRF, torch exact mean-field on the CPU ({setting})", m["torch_cpu"]["median"], "s",
            baseline="pydensecrf in-process (one core)", baseline_value=base["median"],
            ratio=base["median"] / m["torch_cpu"]["median"], ratio_desc="× speed-up",
            notes=f"torch with {threads} threads; the exact kernel does N² = {(h * h) ** 2:,} products per "
                  f"class and iteration where the lattice does O(N)",
            runs=m["torch_cpu"]["runs"], baseline_runs=base["runs"]),
        row(NAME, f"training CRF, pydensecrf in a pool of {workers} ({setting})", m["pyd_pool"]["median"], "s",
            baseline="pydensecrf in-process (one core)", baseline_value=base["median"],
            ratio=base["median"] / m["pyd_pool"]["median"], ratio_desc="× speed-up",
            notes=f"{os.cpu_count()} CPU cores; torch CPU vs this pool: "
                  f"{m['pyd_pool']['median'] / m['torch_cpu']['median']:.2f}×",
            runs=m["pyd_pool"]["runs"], baseline_runs=base["runs"]),
    ]
    if cuda:
        gpu = m["torch_cuda"]
        ratio = base["median"] / gpu["median"]
        goal = float(cfg["gpu_goal"])
        rows.append(row(
            NAME, f"training CRF, torch exact mean-field on {torch.cuda.get_device_name()} ({setting})",
            gpu["median"], "s", baseline="pydensecrf in-process (one core)", baseline_value=base["median"],
            ratio=ratio, ratio_desc="× speed-up", goal=f"≥ {goal:g}× the in-process pydensecrf",
            goal_met=ratio >= goal, runs=gpu["runs"], baseline_runs=base["runs"]))
    ok = agree["argmax"] >= float(cfg["min_argmax"])
    rows.append(row(
        NAME, f"training CRF agreement, torch vs pydensecrf, random smooth inputs ({setting})",
        agree["argmax"], "%", baseline=None, check=f"argmax of Q agrees on ≥ {100 * float(cfg['min_argmax']):g} % "
        "of the cells", check_ok=ok,
        notes=f"mean |ΔQ| {agree['mean_abs_dq']:.2e} (max {agree['max_abs_dq']:.2f}); grown seeds identical on "
              f"{100 * agree['seeds']:.1f} % of the cells ({100 * agree['seeds_labelled']:.1f} % of the seeded "
              f"ones); coverage after growing {100 * agree['cov_pydensecrf']:.1f} % (pydensecrf) vs "
              f"{100 * agree['cov_torch']:.1f} % (torch); for scale, pydensecrf agrees with itself on "
              f"{100 * agree['argmax_pydensecrf_wider']:.1f} % of the cells when its bilateral σ are 5 % wider",
        extra=agree))
    ctx.shared["crf_train"] = {k: v["median"] for k, v in m.items()}
    return rows
