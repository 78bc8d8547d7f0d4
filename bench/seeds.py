"""Seeds stage on many synthetic images: wall time and peak memory, flat in the number of images.

Preparation (untimed), once per size N (``counts``, default 250 and 1,000): a work dir with the
``data`` stage on a generated synthetic dataset (``image_size`` px, all images in ``trainaug``),
then stand-in ``heatmaps`` and ``saliency`` stages that write, per image, class heatmaps (the
image's GT class masks blurred + noise, ``save_heatmap`` format with λ) and an 8-bit saliency PNG
(blurred GT foreground + noise), each with a manifest through ``run_stage``.

Measurement: the real ``stages.seeds.run`` through ``pipeline.runtime.stage.run_stage`` (config
``configs/_base_/cues.py`` seeds section: seeds, pseudo-masks, seed quality against the GT masks,
8 overlays) in a fresh child process per run, so that peak memory is the child's own:
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak RSS, libraries included; its value right
before the stage is reported too) and, in a separate child run (``separate_trace``; the quick
configuration traces the timed run itself), the ``tracemalloc`` peak of the Python/numpy heap
during the stage. Wall time = median over ``repeats`` child runs (stage only,
imports excluded). A thread samples the traced heap in use every 2 ms during the traced run.
Flat memory: peak RSS(N_max) / peak RSS(N_min) ≤ ``flat_tolerance`` and no heap growth over the
N_max-image run (median heap in use over its last fifth ≤ ``flat_tolerance`` × the first fifth
+ 0.5 MiB). The tracemalloc peak is reported too; it is the largest single-image transient, so it
may rise a little with N (a maximum over more images) without any accumulation.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np

from bench.common import row

NAME = "seeds"
REPO = Path(__file__).resolve().parent.parent
DEFAULTS = dict(counts=(250, 1000), image_size=64, repeats=3, flat_tolerance=1.10, seed=0,
                separate_trace=True)


# ---------------------------------------------------------------- preparation (parent process)
def _fake_stage(ctx, seed: int, write) -> dict:
    """A stand-in stage: ``write(img_id, gt_mask, index, rng)`` for every image of the section's
    split, files under ``ctx.out/maps``."""
    from pipeline.data.index import DatasetIndex

    index = DatasetIndex.load(ctx.upstream_dir("data"))
    rng = np.random.default_rng(seed)
    (ctx.out / "maps").mkdir(exist_ok=True)
    ids = index.ids(ctx.section["split"])
    for img_id in ids:
        write(img_id, index.read_mask(img_id), index, rng)
    return {"counts": {"images": len(ids)}, "metrics": {}}


def _fake_heatmaps(ctx):
    """Heatmaps = the image's GT class masks blurred + noise, λ = blurred noise."""
    from scipy.ndimage import gaussian_filter

    from pipeline.data.files import save_heatmap
    from pipeline.heatmaps import normalise_per_class

    def write(img_id, gt, index, rng):
        classes = index.labels(img_id)
        s = gt.shape[0] / 16
        cam = np.stack([gaussian_filter((gt == c).astype(np.float32), s) for c in classes]) if classes else \
            np.zeros((0, *gt.shape), np.float32)
        cam = normalise_per_class(cam + 0.15 * rng.random(cam.shape, dtype=np.float32))
        lam = gaussian_filter(rng.random(gt.shape, dtype=np.float32), s)
        save_heatmap(ctx.out / "maps" / f"{img_id}.npz", cam, classes, lam=lam / max(float(lam.max()), 1e-6),
                     extra={"fake": True})
    return _fake_stage(ctx, 0, write)


def _fake_saliency(ctx):
    """Saliency = the blurred GT foreground + noise, 8-bit PNG."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    def write(img_id, gt, index, rng):
        fg = ((gt > 0) & (gt != 255)).astype(np.float32)
        sal = np.clip(gaussian_filter(fg, gt.shape[0] / 32) + 0.1 * rng.random(gt.shape), 0, 1)
        Image.fromarray((255 * sal).astype(np.uint8)).save(ctx.out / "maps" / f"{img_id}.png")
    return _fake_stage(ctx, 1, write)


def prepare(work_dir: Path, n: int, image_size: int, seed: int = 0) -> Path:
    """Data + stand-in heatmaps / saliency stages for ``n`` synthetic images in ``work_dir``."""
    import stages.data
    from pipeline.runtime.stage import run_stage
    from pipeline.settings import Settings

    work_dir = Path(work_dir)
    cfg = Settings.from_dict({"experiment": {"seed": 0, "device": "cpu"}, "data": {
        "dataset": "synthetic", "root": None, "sbd_root": None, "label_source": "xml",
        "synthetic": {"seed": int(seed), "image_size": int(image_size), "n_train": int(n), "n_val": 0,
                      "n_test": 0}}})
    run_stage("data", (), stages.data.run, cfg, cfg.data, work_dir)
    run_stage("heatmaps", ("data",), _fake_heatmaps, cfg, {"split": "trainaug", "stand_in": "bench"}, work_dir)
    run_stage("saliency", ("data",), _fake_saliency, cfg, {"split": "trainaug", "stand_in": "bench"}, work_dir)
    return work_dir


def _child(work_dir: Path, trace: bool, log) -> dict:
    cmd = [sys.executable, "-m", "bench.seeds", "--child", str(work_dir)] + (["--trace"] if trace else [])
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"seeds child failed ({res.returncode}): {res.stderr[-2000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("BENCH_RESULT ")][-1]
    return json.loads(line[len("BENCH_RESULT "):])


def run(cfg: dict, ctx) -> list[dict]:
    cfg = {**DEFAULTS, **cfg}
    counts = sorted(int(n) for n in cfg["counts"])
    reps = ctx.reps(cfg)
    res = {}
    for n in counts:
        with open(ctx.tmp / f"seeds_{n}_prepare.log", "w") as fh, contextlib.redirect_stdout(fh):
            wd = prepare(ctx.tmp / f"seeds_{n}", n, int(cfg["image_size"]), int(cfg["seed"]))
        sep = bool(cfg["separate_trace"])
        timed = [_child(wd, not sep, ctx.log) for _ in range(reps)]
        traced = _child(wd, True, ctx.log) if sep else timed[-1]
        res[n] = {"wall": statistics.median(t["wall_s"] for t in timed), "runs": [t["wall_s"] for t in timed],
                  "rss_peak": max(t["rss_peak_mib"] for t in timed),
                  "rss_before": min(t["rss_before_mib"] for t in timed),
                  "traced_peak": traced["traced_peak_mib"], "heap_first": traced["heap_first_fifth_mib"],
                  "heap_last": traced["heap_last_fifth_mib"], "images": timed[0]["images"]}
        ctx.log(f"seeds: {n} images {res[n]['wall']:.2f} s, peak RSS {res[n]['rss_peak']:.0f} MiB, "
                f"traced peak {res[n]['traced_peak']:.2f} MiB, heap in use {res[n]['heap_first']:.2f} → "
                f"{res[n]['heap_last']:.2f} MiB")
    lo, hi = counts[0], counts[-1]
    S = int(cfg["image_size"])
    r_rss = res[hi]["rss_peak"] / res[lo]["rss_peak"]
    r_tr = res[hi]["traced_peak"] / max(res[lo]["traced_peak"], 1e-9)
    tol = float(cfg["flat_tolerance"])
    heap0, heap1 = res[hi]["heap_first"], res[hi]["heap_last"]
    no_growth = heap1 <= heap0 * tol + 0.5
    flat = r_rss <= tol and no_growth
    per_img = res[hi]["wall"] / res[hi]["images"]
    ctx.shared["seeds"] = {"per_image_s": per_img, "pixels": S * S}
    rows = [
        row(NAME, f"seeds stage, {res[hi]['images']} synthetic images {S}×{S}", res[hi]["wall"], "s",
            baseline=f"{res[lo]['images']} images", baseline_value=res[lo]["wall"],
            ratio=res[hi]["wall"] / res[lo]["wall"], ratio_desc=f"× the time for {hi / lo:g}× the images",
            notes=f"{per_img * 1e3:.1f} ms/image ({1 / per_img:.0f} img/s): seeds + pseudo-masks + 2 PNGs + "
                  "quality vs GT + 8 overlays; stage only (child process, imports excluded)",
            runs=res[hi]["runs"], baseline_runs=res[lo]["runs"]),
        row(NAME, f"seeds stage peak RSS, {res[hi]['images']} vs {res[lo]['images']} images", res[hi]["rss_peak"],
            "MiB", baseline=f"{res[lo]['images']} images", baseline_value=res[lo]["rss_peak"], ratio=r_rss,
            ratio_desc="× (flat = 1)", goal=f"flat: ≤ {tol:g}× and no heap growth", goal_met=flat,
            check=f"traced heap in use, first vs last fifth of the {res[hi]['images']}-image run: {heap0:.2f} → "
                  f"{heap1:.2f} MiB", check_ok=no_growth,
            notes=f"tracemalloc peak {res[hi]['traced_peak']:.2f} vs {res[lo]['traced_peak']:.2f} MiB ({r_tr:.2f}×; "
                  f"the largest single-image transient); RSS right before the stage "
                  f"{res[hi]['rss_before']:.0f} MiB (interpreter + libraries), the stage adds "
                  f"{res[hi]['rss_peak'] - res[hi]['rss_before']:.1f} MiB ({res[lo]['images']} images: "
                  f"{res[lo]['rss_peak'] - res[lo]['rss_before']:.1f} MiB)",
            extra={str(n): v for n, v in res.items()}),
    ]
    return rows


# ---------------------------------------------------------------- child process
def _heap_sampler(samples: list, stop: threading.Event, period: float = 0.002) -> threading.Thread:
    """Thread appending ``tracemalloc`` current traced memory (bytes) every ``period`` s."""
    def loop():
        while not stop.is_set():
            samples.append(tracemalloc.get_traced_memory()[0])
            stop.wait(period)
    th = threading.Thread(target=loop, daemon=True)
    th.start()
    return th


def _child_main(work_dir: str, trace: bool) -> None:
    import resource
    import time

    import stages.seeds
    from pipeline.data.index import DatasetIndex
    from pipeline.runtime.stage import run_stage
    from pipeline.settings.cues import SeedsSettings
    from stages.common import load_config

    section = SeedsSettings.from_dict(
        load_config(REPO / "configs" / "_base_" / "cues.py")["seeds"], "seeds")
    cfg = {"seeds": section}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    samples: list = []
    stop = threading.Event()
    if trace:
        tracemalloc.start()
        sampler = _heap_sampler(samples, stop)
    t0 = time.perf_counter()
    man = run_stage("seeds", stages.seeds.UPSTREAM, stages.seeds.run, cfg, section, work_dir, force=True)
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "rss_before_mib": rss_before,
           "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if trace:
        stop.set()
        sampler.join()
        out["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        k = max(1, len(samples) // 5)
        out["heap_first_fifth_mib"] = statistics.median(samples[:k]) / 2**20
        out["heap_last_fifth_mib"] = statistics.median(samples[-k:]) / 2**20
        out["heap_samples"] = len(samples)
    out["images"] = len(DatasetIndex.load(Path(work_dir) / "data").ids("trainaug"))
    assert man["counts"]["images"] == out["images"]
    print("BENCH_RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="child process of the seeds benchmark")
    p.add_argument("--child", required=True)
    p.add_argument("--trace", action="store_true")
    a = p.parse_args()
    _child_main(a.child, a.trace)
