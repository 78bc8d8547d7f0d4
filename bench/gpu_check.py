"""``make gpu-check``: the VOC-size training and inference paths on a CUDA device, without VOC.

    python3 -m bench.gpu_check [--exp configs/voc_ep_dsrg.py] [--iters 10] [--ddp auto|on|off]
    python3 -m bench.gpu_check --device cpu --tiny          # the same code at tiny sizes (tests)

Builds the networks of the experiment config (default the VOC one: width 1, 321×321 crops, its
batch sizes, AMP as configured; ImageNet weights are not loaded) on synthetic inputs
(``bench.inputs``) and runs, through the stages' own code (:mod:`bench.gpu_parts`):

1. classifier training: ``warmup`` + ``iters`` iterations of ``pipeline.runtime.training.train_step``;
2. segmenter training: the same with the DSRG loss, its CRF on the device (``crf.backend=torch``);
3. the heatmaps stage's batch inference (scales, flips, AMP of ``heatmaps``);
4. the eval stage's inference (``eval``: base scale + flip through ``predict_logits``, the
   network at the other scales);
5. with 2+ GPUs (or ``--ddp on``): 2 processes train the segmenter with DDP for 2 iterations.

It asserts finite losses and outputs, weights that change, and identical weights on both DDP
ranks; prints img/s, peak GPU memory and each part's share of an iteration, and writes the
figures to ``OUT/gpu_check[-tiny].{json,md}`` (default OUT = bench/results). Without CUDA (and
without ``--device cpu``) it says so and exits 0. Needs only torch (≥ 2.5) and numpy: the
config files are read as plain Python (``_base_`` files merged in order, as mmengine does for
these configs), no ``.venv`` is needed.
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import dump_json
from bench.plain_config import merge as _merge, plain_config
from pipeline.data.io_utils import write_text_atomic

REPO = Path(__file__).resolve().parent.parent
# tiny sizes for the CPU run of the test suite: every path, seconds instead of minutes
TINY = dict(size=48, batch=2, num_classes=5, iters=2, warmup=1, batches=1,
            classifier=dict(model=dict(backbone=dict(width=0.125, batch_norm=True))),
            segmenter=dict(model=dict(width=0.125, batch_norm=True, fc_channels=64, rates=(1, 2, 3, 4))),
            heatmaps=dict(batch_size=2, scales=(1.0, 0.5)), eval=dict(batch_size=2))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--exp", default=str(REPO / "configs" / "voc_ep_dsrg.py"))
    p.add_argument("--device", help="cuda (default when available) or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny networks and inputs (the CPU test)")
    p.add_argument("--iters", type=int, help="timed training iterations per network (default 10)")
    p.add_argument("--ddp", choices=("auto", "on", "off"), default="auto",
                   help="2-process DDP: auto = with 2+ CUDA devices")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    return p.parse_args(argv)


def settings(args) -> tuple[dict, dict]:
    """``(config sections, sizes)`` for the run."""
    cfg = plain_config(args.exp)
    sizes = dict(size=int(cfg["segmenter"]["train"]["crop"]), batch=None, num_classes=21,
                 iters=10, warmup=3, batches=3)
    if args.tiny:
        tiny = copy.deepcopy(TINY)
        for name in ("classifier", "segmenter", "heatmaps", "eval"):
            _merge(cfg[name], tiny.pop(name))
        sizes.update(tiny)
    if args.iters:
        sizes["iters"] = int(args.iters)
    return cfg, sizes


def report(res: dict) -> str:
    lines = [f"# gpu-check on {res['device_name']} ({res['created']})", "",
             f"torch {res['torch']}, Python {res['python']}, config {res['exp']}"
             f"{' (tiny sizes)' if res['tiny'] else ''}; medians of {res['sizes']['iters']} iterations "
             f"after {res['sizes']['warmup']} warm-up.", "",
             "| part | batch × size | img/s | iteration | peak memory | shares of the iteration |",
             "|---|---|---|---|---|---|"]
    for r in res["parts"]:
        shares = ", ".join(f"{k} {100 * v:.0f} %" for k, v in r.get("shares", {}).items()) or "–"
        it = f"{r['iteration_s'] * 1e3:.1f} ms" if "iteration_s" in r else "–"
        mem = "–" if r.get("peak_mib") is None else f"{r['peak_mib']:,.0f} MiB"
        lines.append(f"| {r['name']} | {r['batch']} × {r['size']} | {r['img_per_s']:.1f} | {it} | {mem} | {shares} |")
    d = res.get("ddp")
    lines += ["", f"DDP: {d['world_size']} processes ({d['backend']}), {d['iterations']} iterations of "
                  f"{d['batch_per_rank']} images per rank in {d['seconds']:.1f} s; weights identical "
                  f"across ranks: {d['identical_across_ranks']}, changed: {d['weights_changed']}" if d else
              f"DDP: not run ({res['gpus']} GPU(s); it needs 2, or --ddp on)"]
    lines += ["", "Checks: " + ", ".join(f"{k} {'✓' if v else '✗'}" for k, v in res["checks"].items()), ""]
    return "\n".join(lines)


def checks(parts: list[dict], ddp: dict | None) -> dict:
    out = {}
    for r in parts:
        if "losses_finite" in r:
            out[f"{r['name']}: finite losses"] = r["losses_finite"]
            out[f"{r['name']}: weights change"] = r["weights_changed"]
        else:
            out[f"{r['name']}: finite outputs"] = r["finite"]
    if ddp:
        out["ddp: identical weights on both ranks"] = ddp["identical_across_ranks"]
        out["ddp: weights change"] = ddp["weights_changed"] and ddp["finite"]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    want = args.device or ("cuda" if torch.cuda.is_available() else None)
    if want is None:
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing to "
              "check. Run it on a machine with a GPU, or with --device cpu --tiny.")
        return 0
    if want == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu-check: --device cuda but torch sees no CUDA device")
    from bench import gpu_parts as gp
    device = torch.device(want)
    cfg, sz = settings(args)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    kw = dict(size=sz["size"], num_classes=sz["num_classes"])
    t0 = time.perf_counter()
    b_cls = sz["batch"] or int(cfg["classifier"]["train"]["batch_size"])
    b_seg = sz["batch"] or int(cfg["segmenter"]["train"]["batch_size"])
    cls, cls_net = gp.classifier_training(cfg, device, batch=b_cls, iters=sz["iters"], warmup=sz["warmup"], **kw)
    print(f"classifier training: {cls['img_per_s']:.1f} img/s", flush=True)
    heat = gp.heatmap_inference(cls_net, cfg, device, batches=sz["batches"], **kw)
    del cls_net
    seg, seg_net = gp.segmenter_training(cfg, device, batch=b_seg, iters=sz["iters"], warmup=sz["warmup"], **kw)
    print(f"segmenter training: {seg['img_per_s']:.1f} img/s", flush=True)
    ev = gp.eval_inference(seg_net, cfg, device, batches=sz["batches"], **kw)
    del seg_net
    n_gpu = torch.cuda.device_count() if device.type == "cuda" else 0
    ddp = None
    if args.ddp == "on" or (args.ddp == "auto" and n_gpu >= 2):
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            ddp = gp.ddp_check(cfg, device, batch=max(1, b_seg // 2), iters=2, tmp=tmp, **kw)
    parts = [cls, seg, heat, ev]
    res = {"format": "wsss-gpu-check/1", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "device": str(device), "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                                   else platform.processor() or "CPU"),
           "gpus": n_gpu, "torch": torch.__version__, "python": platform.python_version(),
           "exp": str(args.exp), "tiny": args.tiny, "sizes": sz, "parts": parts, "ddp": ddp,
           "wall_s": time.perf_counter() - t0}
    res["checks"] = checks(parts, ddp)
    res["ok"] = all(res["checks"].values())
    text = report(res)
    print(text)
    stem = "gpu_check" + ("-tiny" if args.tiny else "")
    write_text_atomic(Path(args.out) / f"{stem}.json", dump_json(res))
    write_text_atomic(Path(args.out) / f"{stem}.md", text)
    print(f"gpu-check: {'ok' if res['ok'] else 'FAILED'} in {res['wall_s']:.0f} s; figures in "
          f"{Path(args.out) / (stem + '.json')}")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
