"""The parts of ``make gpu-check`` (:mod:`bench.gpu_check`): training iterations of both networks
through the stages' own step (:func:`pipeline.runtime.training.train_step`), the heatmaps stage's batch
inference (:func:`pipeline.heatmaps.infer_batch`), the eval stage's (:func:`pipeline.inference.
predict_logits`), and a 2-process DDP run of :func:`pipeline.runtime.training.train`.

Imports torch, numpy, the algorithm layer (``pipeline``: models, DSRG loss with the torch CRF,
training loop, inference) and ``bench.inputs`` only: no OpenMMLab, pydensecrf, OpenCV, Pillow or
scikit-image, so that a stock PyTorch install runs it. Every time is taken between two
``torch.cuda.synchronize()`` calls on CUDA.
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time

import numpy as np
import torch

from bench.inputs import classifier_batch, segmenter_batch
from pipeline.dsrg import DSRGConfig, dsrg_losses
from pipeline.heatmaps import infer_batch
from pipeline.inference import predict_logits
from pipeline.inference_settings import InferenceSettings
from pipeline.models.classifier import build_classifier
from pipeline.models.deeplab import build_segmenter
from pipeline.runtime.training import build_optimizer, end_spawned_rank, to_device, train, train_step
from pipeline.settings.segmenter import SegmenterSettings


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def classifier_loss_fn(loss_type: str, split: dict, device):
    """The classifier stage's loss (``net.classification_loss``), timing its forward."""
    def loss_fn(net, batch):
        t0 = clock(device)
        out = net(batch["image"], labels=batch["target"])
        total, parts = net.classification_loss(out, batch["target"], loss_type=loss_type)
        split["forward_loss"] = clock(device) - t0
        return {"loss": total, **{f"part_{k}": v for k, v in parts.items() if k != "total"}}
    return loss_fn


def segmenter_loss_fn(dsrg: DSRGConfig, split: dict, device):
    """The segmenter stage's DSRG loss (torch CRF on the device), timing forward and loss."""
    def loss_fn(net, batch):
        t0 = clock(device)
        logits = net(batch["image"])
        t1 = clock(device)
        out = dsrg_losses(logits, batch["label"], batch["classes"], batch["raw"], dsrg, None)
        split.update(forward=t1 - t0, dsrg_loss=clock(device) - t1)
        return out
    return loss_fn


def _flat_params(net) -> torch.Tensor:
    return torch.cat([p.detach().flatten().float() for p in net.parameters()])


def run_training(name: str, net, loss_fn, split: dict, batch: dict, tr: dict, device, *,
                 iters: int, warmup: int) -> dict:
    """``warmup`` + ``iters`` steps of ``train_step`` on one batch (moved to the device each
    time from pinned memory, as the loop's loader does on CUDA); per-part median seconds, img/s,
    peak memory, checks."""
    amp = bool(tr.get("amp", False)) and device.type == "cuda"
    if device.type == "cuda":
        batch = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}
    net = net.to(device).train()
    opt = build_optimizer(net, dict(tr["optimizer"]), dict(tr.get("lr_mult") or {}),
                          dict(tr.get("paramwise") or {}))
    scaler = torch.amp.GradScaler("cuda") if amp else None
    before = _flat_params(net)
    reset_peak(device)
    rows, losses = [], []
    for i in range(warmup + iters):
        t0 = clock(device)
        on_dev = to_device(batch, device)
        t1 = clock(device)
        scalars = train_step(net, loss_fn, on_dev, opt, scaler, amp=amp)
        t2 = clock(device)
        losses.append(scalars["loss"])
        if i >= warmup:
            rows.append({"iteration": t2 - t0, "to_device": t1 - t0, "step": t2 - t1, **split,
                         **{k: scalars[k] for k in ("crf_wait_s", "grow_s") if k in scalars}})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    parts = _parts(name, med)
    B = len(batch["image"])
    return {"name": name, "batch": B, "size": int(batch["image"].shape[-1]), "amp": amp,
            "iterations": iters, "warmup": warmup, "iteration_s": med["iteration"],
            "img_per_s": B / med["iteration"], "peak_mib": peak_mib(device),
            "parts_s": parts, "shares": {k: v / med["iteration"] for k, v in parts.items()},
            "losses": losses, "losses_finite": all(math.isfinite(v) for v in losses),
            "weights_changed": bool((_flat_params(net) != before.to(device)).any())}


def _parts(name: str, m: dict) -> dict:
    """An iteration's parts (seconds) from the medians of the timed splits."""
    step_rest = m["step"]
    if name == "classifier":
        parts = {"forward + loss": m["forward_loss"]}
    else:
        crf, grow = m.get("crf_wait_s", 0.0), m.get("grow_s", 0.0)
        parts = {"forward": m["forward"], "DSRG CRF (torch)": crf, "DSRG growing": grow,
                 "DSRG rest (cues, losses)": max(0.0, m["dsrg_loss"] - crf - grow)}
    parts["backward + optimizer"] = max(0.0, step_rest - sum(parts.values()))
    return {"host → device": m["to_device"], **parts}


def classifier_training(cfg: dict, device, *, size: int, batch: int, num_classes: int,
                        iters: int, warmup: int) -> tuple[dict, torch.nn.Module]:
    sec = cfg["classifier"]
    net = build_classifier({**sec["model"], "pretrained": None}, num_classes - 1)
    split: dict = {}
    loss_fn = classifier_loss_fn(sec["train"].get("loss", "multilabel_soft_margin"), split, device)
    data = classifier_batch(batch, size, num_classes, seed=0)
    return run_training("classifier", net, loss_fn, split, data, sec["train"], device,
                        iters=iters, warmup=warmup), net


def dsrg_config(cfg: dict) -> DSRGConfig:
    """The segmenter's DSRG settings with the torch CRF backend."""
    seg = SegmenterSettings.from_dict(cfg["segmenter"], "segmenter")
    return dataclasses.replace(seg.dsrg_config(), crf_backend="torch")


def segmenter_training(cfg: dict, device, *, size: int, batch: int, num_classes: int,
                       iters: int, warmup: int) -> tuple[dict, torch.nn.Module]:
    sec = cfg["segmenter"]
    net = build_segmenter({**sec["model"], "pretrained": None}, num_classes)
    split: dict = {}
    data = segmenter_batch(batch, size, num_classes, seed=0)
    res = run_training("segmenter", net, segmenter_loss_fn(dsrg_config(cfg), split, device), split,
                       data, sec["train"], device, iters=iters, warmup=warmup)
    res["grid"] = net.output_size(size)
    return res, net


def heatmap_inference(net, cfg: dict, device, *, size: int, num_classes: int, batches: int) -> dict:
    """The heatmaps stage's :func:`infer_batch` on ``batches`` batches of ``size``² images."""
    sec = cfg["heatmaps"]
    B = int(sec.get("batch_size", 8))
    x = classifier_batch(B, size, num_classes, seed=1)["image"].to(device)
    scales, flip = tuple(float(s) for s in sec.get("scales", (1.0,))), bool(sec.get("flip", True))
    lc, amp = bool(sec.get("class_specific_lambda", False)), bool(sec.get("amp", True))
    net.eval()
    reset_peak(device)
    infer_batch(net, x, scales, flip, lc, amp)                       # warm-up
    t0 = clock(device)
    outs = [infer_batch(net, x, scales, flip, lc, amp) for _ in range(batches)]
    dt = clock(device) - t0
    finite = all(bool(torch.isfinite(o["cam"]).all() and torch.isfinite(o["scores"]).all()) for o in outs)
    return {"name": "heatmaps", "batch": B, "size": size, "scales": list(scales), "flip": flip,
            "amp": amp and device.type == "cuda", "img_per_s": B * batches / dt,
            "peak_mib": peak_mib(device), "finite": finite}


def eval_inference(net, cfg: dict, device, *, size: int, num_classes: int, batches: int) -> dict:
    """The eval stage's inference (:class:`~pipeline.inference_settings.InferenceSettings` of the
    ``eval`` section: protocol, flip, fusion, AMP): :func:`pipeline.inference.predict_logits` on
    images at the protocol's base size (their own size, ``size`` × 4/3 · ``size`` as VOC's
    375×500, when the protocol keeps it), plus the network at the protocol's other pass sizes
    (resizing images to them is host work, OpenCV in the stage, not part of this check)."""
    settings = InferenceSettings.from_cfg(cfg["eval"])
    B = settings.batch_size
    base = settings.size or (size, size * 4 // 3)
    rng = np.random.default_rng(2)
    images = list(rng.integers(0, 256, (B, *base, 3), dtype=np.uint8))
    passes = ([(int(v), int(v)) for v in settings.sizes] if settings.sizes is not None else
              [(max(1, round(base[0] * s)), max(1, round(base[1] * s))) for s in settings.scales])
    others = [hw for hw in passes if tuple(hw) != tuple(base)]
    use_amp = settings.amp and device.type == "cuda"
    n_img = B * (2 if settings.flip else 1)
    reset_peak(device)

    def protocol():
        z = predict_logits(net, images, (1.0,), settings.flip, base, device, B, settings.amp,
                           fusion=settings.fusion)
        net.eval()
        with torch.no_grad(), torch.autocast(device.type, torch.float16, enabled=use_amp):
            for hw in others:
                net(torch.zeros(n_img, 3, *hw, device=device))
        return z
    protocol()                                                        # warm-up
    t0 = clock(device)
    outs = [protocol() for _ in range(batches)]
    dt = clock(device) - t0
    finite = all(bool(torch.isfinite(z).all()) for o in outs for z in o)
    return {"name": "eval", "batch": B, "size": "×".join(map(str, base)), "protocol": settings.protocol,
            "passes": [list(hw) for hw in passes], "flip": settings.flip, "amp": use_amp,
            "img_per_s": B * batches / dt, "peak_mib": peak_mib(device), "finite": finite}


def _ddp_worker(rank: int, world: int, port: int, spec: dict, work_dir: str, result: str) -> None:
    """One rank of :func:`ddp_check`: ``iters`` iterations of :func:`pipeline.runtime.training.train`."""
    import json

    import torch.distributed as dist
    cuda = spec["device"] == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    try:
        cfg, C, S = spec["cfg"], spec["num_classes"], spec["size"]
        torch.manual_seed(0)
        net = build_segmenter({**cfg["segmenter"]["model"], "pretrained": None}, C)
        before = _flat_params(net).to(device)
        data = segmenter_batch(spec["batch"] * world, S, C, seed=3)
        dataset = [{k: v[i] for k, v in data.items()} for i in range(len(data["image"]))]
        tr = dict(cfg["segmenter"]["train"])
        split: dict = {}
        t0 = time.perf_counter()
        net = train(net, segmenter_loss_fn(dsrg_config(cfg), split, device), dataset, work_dir=work_dir,
                    max_iters=spec["iters"], batch_size=spec["batch"], optimizer=dict(tr["optimizer"]),
                    schedule=dict(tr.get("schedule") or {"type": "constant"}),
                    lr_mult=dict(tr.get("lr_mult") or {}), paramwise=dict(tr.get("paramwise") or {}),
                    amp=bool(tr.get("amp", False)) and cuda, world_size=world, device=device,
                    log=lambda *a, **k: None, log_interval=spec["iters"], checkpoint_interval=10**9)
        dt = time.perf_counter() - t0
        flat = _flat_params(net)
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            with open(result, "w") as fh:
                json.dump({"world_size": world, "backend": dist.get_backend(), "iterations": spec["iters"],
                           "batch_per_rank": spec["batch"], "seconds": dt,
                           "identical_across_ranks": all(torch.equal(g, flat) for g in gathered),
                           "weights_changed": bool((flat != before).any()),
                           "finite": bool(torch.isfinite(flat).all())}, fh)
    finally:
        dist.destroy_process_group()
    end_spawned_rank()


def ddp_check(cfg: dict, device, *, size: int, batch: int, num_classes: int, iters: int, tmp: str) -> dict:
    """Two processes (NCCL on 2 GPUs, gloo on the CPU) train the segmenter for ``iters``
    iterations with :func:`pipeline.runtime.training.train` (DDP); the weights must end identical on
    both ranks and differ from the initial ones."""
    import json
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = {"cfg": cfg, "device": device.type, "size": size, "batch": batch, "num_classes": num_classes,
            "iters": iters}
    result = os.path.join(tmp, "ddp.json")
    mp.spawn(_ddp_worker, args=(2, port, spec, os.path.join(tmp, "ddp_train"), result), nprocs=2, join=True)
    with open(result) as fh:
        return {"name": "ddp", **json.load(fh)}
