"""DSRG seeded region growing: vectorised (``pipeline.growing.grow_seeds``) vs per-pixel loops.

Inputs (:func:`make_inputs`): a batch at the DSRG training grid (B=20, 41×41, C=21 channels), each
image with background + 1..3 foreground classes (uniform, so 3 classes per image on average);
class probabilities = softmax of smooth random logits (absent classes low), cues = one-hot seeds of
a smooth random label map with ~35 % of the pixels labelled (what ``cues_on_grid`` gives the loss).
Compared, same inputs and thresholds (0.85 / 0.99): the vectorised version (batched torch; its
flood-fill loop runs on bit-packed rows, in numpy on CPU), the
straightforward pure-Python per-pixel BFS (:func:`bench.baselines.grow_seeds_loop`, the goal's
baseline: ≥ 50× faster) and the scipy-labelling loop (``grow_seeds_reference``). All three outputs
must be identical (asserted in the run).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.baselines import grow_seeds_loop
from bench.common import measure, row
from bench.inputs import random_image_classes, smooth_fields
from pipeline.growing import grow_seeds, grow_seeds_reference

NAME = "growing"
# thresholds: DSRG's growing thresholds (configs/_base_/segmenter_dsrg_vgg16.py)
DEFAULTS = dict(batch=20, size=41, channels=21, max_fg=3, seed=0, loop_repeats=None,
                fg_threshold=0.85, bg_threshold=0.99)


def make_inputs(batch=20, size=41, channels=21, max_fg=3, seed=0):
    """``(probs (B,C,H,W) float32, cues (B,C,H,W) bool, classes (B,C) bool)`` (module docstring)."""
    rng = np.random.default_rng(seed)
    B, C, S = int(batch), int(channels), int(size)
    classes = random_image_classes(rng, B, C, max_fg)
    logits = 6.0 * smooth_fields(rng, B * C, S, cells=5).view(B, C, S, S)
    logits = torch.where(classes[:, :, None, None], logits + 2.0, logits - 6.0)
    probs = torch.softmax(logits, dim=1)
    field = smooth_fields(rng, B * C, S, cells=5).view(B, C, S, S)
    field = field.masked_fill(~classes[:, :, None, None], float("-inf"))
    top, arg = field.max(dim=1)
    labelled = top > 0.9
    cues = F.one_hot(arg, C).permute(0, 3, 1, 2).bool() & labelled[:, None]
    return probs.contiguous(), cues.contiguous(), classes


def run(cfg: dict, ctx) -> list[dict]:
    cfg = {**DEFAULTS, **cfg}
    probs, cues, classes = make_inputs(cfg["batch"], cfg["size"], cfg["channels"], cfg["max_fg"], cfg["seed"])
    B, C, H, W = probs.shape
    reps = ctx.reps(cfg)
    loop_reps = int(cfg["loop_repeats"] or reps)
    thresholds = (cfg["fg_threshold"], cfg["bg_threshold"])
    vec = measure(lambda: grow_seeds(probs, cues, classes, *thresholds), reps, ctx.warmup)
    ctx.log(f"growing: vectorised {vec['median'] * 1e3:.2f} ms")
    loop = measure(lambda: grow_seeds_loop(probs, cues, classes, *thresholds), loop_reps, 0)
    ctx.log(f"growing: per-pixel loop {loop['median']:.3f} s")
    ref = measure(lambda: grow_seeds_reference(probs, cues, classes, *thresholds), reps, 0)
    out_vec = vec["result"].numpy()
    same_loop = bool(np.array_equal(out_vec, loop["result"]))
    same_ref = bool(np.array_equal(out_vec, ref["result"]))
    n_cls = classes.sum(1).float().mean().item()
    cov0 = cues.any(1).float().mean().item()
    cov1 = vec["result"].any(1).float().mean().item()
    setting = f"B={B}, {H}×{W}, C={C}, {n_cls:.2f} classes/image (bg incl.)"
    goal = float(cfg.get("goal", 50.0))
    speedup = loop["median"] / vec["median"]
    notes = (f"seed coverage {100 * cov0:.0f}% → {100 * cov1:.0f}% after growing; "
             f"torch threads {torch.get_num_threads()}")
    rows = [
        row(NAME, f"DSRG growing, vectorised ({setting})", vec["median"], "s",
            baseline="per-pixel Python BFS loop", baseline_value=loop["median"], ratio=speedup,
            ratio_desc="× speed-up", goal=f"≥ {goal:g}× faster", goal_met=speedup >= goal,
            check="identical output to the loop", check_ok=same_loop, notes=notes,
            runs=vec["runs"], baseline_runs=loop["runs"]),
        row(NAME, f"DSRG growing, vectorised vs scipy-labelling loop ({setting})", vec["median"], "s",
            baseline="grow_seeds_reference (scipy.ndimage.label per image/class)",
            baseline_value=ref["median"], ratio=ref["median"] / vec["median"], ratio_desc="× speed-up",
            check="identical output to grow_seeds_reference", check_ok=same_ref,
            runs=vec["runs"], baseline_runs=ref["runs"]),
    ]
    if not (same_loop and same_ref):
        raise AssertionError(f"growing outputs differ: loop identical {same_loop}, reference identical {same_ref}")
    return rows
