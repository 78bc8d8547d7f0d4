"""Run the benchmarks and write one table: ``python -m bench.run [--quick] [--only NAME ...] [--out DIR]``.

Benchmarks (``bench/<name>.py``, run in this order; configurations in ``bench/config.py``):

* ``growing``   DSRG region growing: vectorised vs per-pixel Python loop (≥ 50×, identical output)
* ``crf``       dense-CRF post-processing: process pool vs one process (≥ 1.8× on 2 cores)
* ``crf_train`` DSRG training CRF: exact torch mean-field vs pydensecrf (in-process, pooled), agreement
* ``heatmaps``  heatmap inference: batched multi-scale vs one image at a time
* ``training``  classifier / segmenter train step: pipeline.runtime.training vs mmengine vs plain torch vs bare fwd/bwd
* ``dsrg_loss`` boundary-loss CRF per training iteration and its share of the iteration
* ``seeds``     seeds stage on 1,000 synthetic images: time, peak memory flat in the image count
* ``flops``     FLOPs of both networks at 321×321 (for docs/PERFORMANCE.md)
* ``demo``      per-stage wall times of the last ``make demo`` (from its manifests)

Every figure is a median over ``repeats`` runs, with its baseline measured in the same run.
Output: the markdown table on stdout, and ``DIR/<timestamp>.{json,md}`` + ``DIR/latest.{json,md}``
(default DIR = ``bench/results``; written atomically). Exit status 1 when a benchmark failed or a
correctness check (identical outputs) did not hold; goals not met are reported, not failures.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.common import BenchContext, dump_json, markdown_table
from pipeline.data.io_utils import write_text_atomic

REPO = Path(__file__).resolve().parent.parent
ORDER = ("growing", "crf", "crf_train", "heatmaps", "training", "dsrg_loss", "seeds", "voc_costs", "flops", "demo")
FORMAT = "wsss-bench/1"


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def environment() -> dict:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit and dirty:
            commit += " + uncommitted changes"
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_average_start": list(os.getloadavg()),
            "cuda": torch.cuda.is_available(), "git_commit": commit}


def render(results: dict) -> str:
    env = results["environment"]
    lines = [f"# Benchmarks ({'quick' if results['quick'] else 'full'} configuration, {results['created']})", "",
             f"{env['cpu_count']} CPU cores, torch {env['torch']} with {env['torch_threads']} threads, "
             f"load average at start {', '.join(f'{v:.2f}' for v in env['load_average_start'])}; "
             f"commit {env['git_commit']}. Each figure: median of {results['config']['repeats']} runs "
             "(unless its section sets `repeats`), baseline measured in the same run; "
             "✓/✗ after a goal or check says whether it held.", "",
             markdown_table(results["rows"]), "",
             "Wall time per benchmark: " + ", ".join(f"{k} {v:.1f} s" for k, v in results["bench_wall_s"].items()),
             ""]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny configuration (seconds; used by the tests)")
    p.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these benchmarks ({', '.join(ORDER)})")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="results folder (default bench/results)")
    p.add_argument("--repeats", type=int, help="override the global number of timed runs per figure")
    p.add_argument("--tag", help="file stem of the results (default: a timestamp)")
    p.add_argument("--demo-dir", help="work dir whose manifests the demo figure reads")
    args = p.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(ORDER))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; known: {', '.join(ORDER)}")
    return args


def main(argv=None) -> int:
    from bench.config import FULL, QUICK

    args = parse_args(argv)
    cfg = copy.deepcopy(QUICK if args.quick else FULL)
    if args.repeats:
        cfg["repeats"] = int(args.repeats)
        for name in ORDER:
            cfg.get(name, {}).pop("repeats", None)
    if args.demo_dir:
        cfg["demo"]["work_dir"] = str(Path(args.demo_dir).resolve())
    names = [n for n in ORDER if not args.only or n in args.only]
    tmp = Path(tempfile.mkdtemp(prefix="wsss-bench-"))
    ctx = BenchContext(repeats=int(cfg["repeats"]), warmup=int(cfg["warmup"]), quick=args.quick, tmp=tmp, log=_log)
    created = time.strftime("%Y-%m-%dT%H:%M:%S")
    env = environment()
    rows, walls = [], {}
    try:
        for name in names:
            _log(f"{name} ...")
            t0 = time.perf_counter()
            try:
                module = importlib.import_module(f"bench.{name}")
                rows += module.run(dict(cfg.get(name, {})), ctx)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other benchmarks
                traceback.print_exc()
                rows.append({"bench": name, "error": f"{type(exc).__name__}: {exc}"})
            walls[name] = time.perf_counter() - t0
            _log(f"{name} done in {walls[name]:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.quick:      # tiny sizes: goals are not meaningful, checks still are
        for r in rows:
            if r.get("goal"):
                r["goal"], r["goal_met"] = r["goal"] + " (not evaluated with --quick)", None
    ok = not any("error" in r or r.get("check_ok") is False for r in rows)
    results = {"format": FORMAT, "created": created, "quick": args.quick, "only": names, "ok": ok,
               "environment": env, "config": cfg, "bench_wall_s": walls, "rows": rows}
    text = render(results)
    print(text)
    out = Path(args.out)
    stem = args.tag or (time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else ""))
    for name in (stem, "latest"):
        write_text_atomic(out / f"{name}.json", dump_json(results))
        write_text_atomic(out / f"{name}.md", text)
    _log(f"results: {out / (stem + '.json')} and {out / 'latest.md'}" + ("" if ok else " (FAILED checks/errors)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
