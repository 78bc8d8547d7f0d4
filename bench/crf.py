"""Dense-CRF post-processing (eval/submit): a process pool of workers vs one process.

``pipeline.inference.crf_postprocess`` over N images (default 8 at 321×321, 21 classes, preset
``dsrg_test``: 10 mean-field iterations at full resolution), with ``pool=None`` (one process) and
with a ``make_crf_pool(workers)`` pool (default: one worker per CPU core). The pool is created and
warmed up (each worker imports pydensecrf) before the timed runs, as the eval stage keeps one
pool for the whole split; its start-up time is reported separately. The pooled marginals must
equal the single-process ones bit for bit (asserted in the run). Goal: ≥ 1.8× on 2 cores.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import measure, row
from pipeline import crf as crf_lib
from pipeline.crf import CRFParams, make_crf_pool
from pipeline.inference import crf_postprocess

NAME = "crf"
DEFAULTS = dict(images=8, height=321, width=321, classes=21, preset="dsrg_test", workers=None,
                seed=0, goal=1.8, warmup=0)


def make_inputs(n, height, width, classes, seed=0):
    """``(images: list of (H,W,3) uint8, probs: list of (C,H,W) float32)``: piecewise-smooth
    colour images and softmax maps of smooth random logits whose regions follow the colours."""
    rng = np.random.default_rng(seed)
    H, W, C = int(height), int(width), int(classes)
    images, probs = [], []
    for _ in range(int(n)):
        coarse = torch.from_numpy(rng.standard_normal((1, C, 6, 6)).astype(np.float32))
        z = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)[0]
        region = z.argmax(0).numpy()
        palette = rng.integers(0, 256, (C, 3))
        img = palette[region] + rng.normal(0, 12, (H, W, 3))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        noisy = 3.0 * z + torch.from_numpy(rng.normal(0, 1.0, (C, H, W)).astype(np.float32))
        probs.append(torch.softmax(noisy, 0).numpy())
    return images, probs


def run(cfg: dict, ctx) -> list[dict]:
    cfg = {**DEFAULTS, **cfg}
    workers = int(cfg["workers"] or os.cpu_count() or 1)
    params = CRFParams.preset(cfg["preset"])
    images, probs = make_inputs(cfg["images"], cfg["height"], cfg["width"], cfg["classes"], cfg["seed"])
    reps = ctx.reps(cfg)
    warm = int(cfg["warmup"])          # no JIT or caches: the pool is warmed up separately
    single = measure(lambda: crf_postprocess(images, probs, params), reps, warm)
    ctx.log(f"crf: one process {single['median']:.2f} s for {len(images)} images")
    t0 = time.perf_counter()
    pool = make_crf_pool(workers)
    try:
        # warm-up: one small job per worker (process start + pydensecrf import)
        tiny_i, tiny_p = make_inputs(workers, 8, 8, cfg["classes"], 1)
        list(pool.map(crf_lib._crf_job, [(i, p, params) for i, p in zip(tiny_i, tiny_p)]))
        startup = time.perf_counter() - t0
        pooled = measure(lambda: crf_postprocess(images, probs, params, pool), reps, warm)
    finally:
        pool.shutdown()
    ctx.log(f"crf: pool of {workers} {pooled['median']:.2f} s")
    same = all(np.array_equal(a, b) for a, b in zip(single["result"], pooled["result"]))
    speedup = single["median"] / pooled["median"]
    goal = float(cfg["goal"])
    H, W = images[0].shape[:2]
    ncpu = os.cpu_count()
    rows = [row(NAME, f"dense CRF post-processing, {len(images)} images {H}×{W}, C={cfg['classes']}, "
                      f"preset {cfg['preset']} ({params.iterations} it), pool of {workers}",
                pooled["median"], "s", baseline="one process", baseline_value=single["median"],
                ratio=speedup, ratio_desc="× speed-up",
                goal=f"≥ {goal:g}× on 2 cores", goal_met=(speedup >= goal) if workers >= 2 else None,
                check="pool marginals identical to one process", check_ok=same,
                notes=f"{ncpu} CPU cores; per image {single['median'] / len(images) * 1e3:.0f} ms in one "
                      f"process; pool start-up + warm-up {startup:.2f} s (once per stage, not timed)",
                runs=pooled["runs"], baseline_runs=single["runs"],
                extra={"workers": workers, "startup_s": startup,
                       "per_image_single_s": single["median"] / len(images), "height": H, "width": W})]
    ctx.shared["crf_eval_per_image_s"] = single["median"] / len(images)
    ctx.shared["crf_eval_pixels"] = H * W
    if not same:
        raise AssertionError("pooled CRF marginals differ from the single-process ones")
    return rows
