"""The DSRG loss of one VOC-size batch, part by part, on one device (torch and numpy only).

    python3 -m bench.dsrg_parts [--device cuda] [--profile] [--out DIR]

Inputs as ``make gpu-check`` (``bench.inputs``: 20 crops of 321×321, 21 classes, the 41×41
grid) and the VOC config's DSRG settings with the torch CRF. Times, as medians of 30 calls after
5 warm-up ones (synchronised on CUDA): the training CRF alone (``dense_crf_torch``), the grid
images, ``grow_seeds`` with each flood-fill method (``pipeline.growing.FLOOD_FILL_METHODS``) and
with the device's default one (taking turns), the growing diagnostics and the whole
``dsrg_losses``; checks that the growing on the device equals the growing on the CPU with every
method. ``--profile`` adds torch.profiler tables
of ``grow_seeds`` and ``dsrg_losses`` (where the host time goes: kernel launches, synchronisations).
Writes ``dsrg_parts.json`` (and ``dsrg_parts_profile.txt``) to ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from bench.common import measure, measure_interleaved
from bench.inputs import reference_dsrg_config, segmenter_batch, smooth_logits
from pipeline.crf_torch import dense_crf_torch
from pipeline.dsrg import cues_on_grid, dsrg_losses, grid_images
from pipeline.dsrg_diagnostics import growing_diagnostics
from pipeline.growing import FLOOD_FILL_METHODS, grow_seeds
from pipeline.losses import stable_softmax_probs

REPO = Path(__file__).resolve().parent.parent


def synced(fn, device: torch.device):
    """``fn`` followed by a CUDA synchronisation (on CUDA), so that a timer sees its GPU work."""
    def call():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return call


def median_ms(fn, device: torch.device) -> float:
    return 1e3 * measure(synced(fn, device), repeats=30, warmup=5)["median"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dsrg_parts", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    B, S, C, h = args.batch, 321, 21, 41
    cfg = dataclasses.replace(reference_dsrg_config(), crf_backend="torch")
    batch = {k: v.to(dev) for k, v in segmenter_batch(B, S, C, seed=0).items()}
    logits = 3 * smooth_logits(B, C, h, batch["classes"].cpu(), 0).to(dev)
    probs = stable_softmax_probs(logits)
    images = grid_images(batch["raw"], (h, h))
    q = dense_crf_torch(images, probs, cfg.crf)
    cues = cues_on_grid(batch["label"], C, (h, h))
    cls = batch["classes"]

    def grow(method=None):
        return grow_seeds(q, cues, cls, cfg.fg_threshold, cfg.bg_threshold, method)

    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "batch": B, "grid": h, "classes": C,
           "crf_torch_ms": median_ms(lambda: dense_crf_torch(images, probs, cfg.crf), dev),
           "grid_images_ms": median_ms(lambda: grid_images(batch["raw"], (h, h)), dev)}
    # the flood-fill methods (and the device default) take turns, so warm-up and drift hit all alike
    fills = {m: synced(lambda m=m: grow(m), dev) for m in (*FLOOD_FILL_METHODS, None)}
    for m, r in measure_interleaved(fills, repeats=30, warmup=5).items():
        res[f"grow_{m or 'default'}_ms"] = 1e3 * r["median"]
    on_cpu = grow_seeds(q.cpu(), cues.cpu(), cls.cpu(), cfg.fg_threshold, cfg.bg_threshold)
    res["grow_equals_cpu"] = all(bool(torch.equal(grow(m).cpu(), on_cpu)) for m in fills)
    grown = grow()
    res["diagnostics_ms"] = median_ms(lambda: growing_diagnostics(
        probs, q, cues, grown, cls, cfg.fg_threshold, cfg.bg_threshold), dev)
    res["dsrg_losses_ms"] = median_ms(lambda: dsrg_losses(
        logits, batch["label"], cls, batch["raw"], cfg, None), dev)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(res, indent=1))
    (out / "dsrg_parts.json").write_text(json.dumps(res, indent=1) + "\n")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        tables = []
        for name, fn in (("grow_seeds", grow), ("dsrg_losses", lambda: dsrg_losses(
                logits, batch["label"], cls, batch["raw"], cfg, None))):
            with profile(activities=acts) as prof:
                for _ in range(5):
                    fn()
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
            tables.append(f"## {name}, 5 calls\n" + prof.key_averages().table(
                sort_by="cpu_time_total", row_limit=30))
        (out / "dsrg_parts_profile.txt").write_text("\n\n".join(tables) + "\n")
    return 0 if res["grow_equals_cpu"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
