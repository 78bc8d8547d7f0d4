"""Heatmaps stage inference: batched multi-scale + flip vs one image at a time (images per second).

``pipeline.heatmaps.infer_batch`` (the stage's own code: ``pipeline.heatmaps.aggregate_heatmaps``
over ``scales`` × flips, CAM + λ + class-specific λ^c, scores) on N random images, in batches of
``batch`` and then one image per call. Default network and settings: the demo's (classifier
width 0.25 with BatchNorm at 112 px, scales 1 / 0.75 / 1.25 + flips, batch 32): the VOC network at
321 px with 4 scales + flips costs ~1.5 TFLOP per image, tens of seconds on this CPU (see the
flops figure and docs/PERFORMANCE.md for the VOC estimate). Inference only (no file writing).
Check: batched and one-at-a-time maps agree to float rounding.
"""
from __future__ import annotations

import torch

from bench.common import measure, row
from bench.flops import build_net

NAME = "heatmaps"
DEFAULTS = dict(images=64, batch=32, size=112, width=0.25, batch_norm=True, scales=(1.0, 0.75, 1.25),
                flip=True, num_classes=7, class_specific_lambda=True, seed=0)


def run(cfg: dict, ctx) -> list[dict]:
    from pipeline.heatmaps import infer_batch

    cfg = {**DEFAULTS, **cfg}
    torch.manual_seed(int(cfg["seed"]))
    net = build_net("classifier", float(cfg["width"]), int(cfg["num_classes"]), bool(cfg["batch_norm"])).eval()
    N, Bt, S = int(cfg["images"]), int(cfg["batch"]), int(cfg["size"])
    images = torch.randn(N, 3, S, S)
    scales, flip, lc = tuple(float(s) for s in cfg["scales"]), bool(cfg["flip"]), bool(cfg["class_specific_lambda"])

    def go(bs):
        return [infer_batch(net, images[i:i + bs], scales, flip, lc, False) for i in range(0, N, bs)]

    reps = ctx.reps(cfg)
    batched = measure(lambda: go(Bt), reps, ctx.warmup)
    ctx.log(f"heatmaps: batched {N / batched['median']:.1f} img/s")
    single = measure(lambda: go(1), reps, ctx.warmup)
    ctx.log(f"heatmaps: one at a time {N / single['median']:.1f} img/s")
    cam_b = torch.cat([o["cam"] for o in batched["result"]])
    cam_s = torch.cat([o["cam"] for o in single["result"]])
    diff = float((cam_b - cam_s).abs().max() / cam_s.abs().max().clamp_min(1e-12))
    ok = diff < 1e-4
    speed = single["median"] / batched["median"]
    setting = (f"{N} images {S}×{S}, width {float(cfg['width']):g}{' BN' if cfg['batch_norm'] else ''}, "
               f"scales {'/'.join(f'{s:g}' for s in scales)}{' + flips' if flip else ''}, batch {Bt}")
    rows = [row(NAME, f"heatmap inference, batched ({setting})", N / batched["median"], "img/s",
                baseline="one image at a time", baseline_value=N / single["median"], ratio=speed,
                ratio_desc="× speed-up", check=f"same maps (max rel. |Δ| {diff:.1g})", check_ok=ok,
                notes=f"demo-size network (VOC: 321 px, width 1, see docs/PERFORMANCE.md); torch threads "
                      f"{torch.get_num_threads()}; no file writing",
                runs=[N / t for t in batched["runs"]], baseline_runs=[N / t for t in single["runs"]])]
    if not ok:
        raise AssertionError(f"batched heatmaps differ from one-at-a-time ones (max rel. diff {diff})")
    return rows
