"""Agreement of the two training-CRF backends (pydensecrf's permutohedral lattice vs the exact
torch mean-field, docs/CRF_TORCH.md) on the DSRG loss's own inputs.

:func:`crf_agreement` compares, for one batch (grid images, P, cues, image classes):

* ``argmax``      fraction of grid cells where argmax_c Q agrees,
* ``mean_abs_dq`` mean |Q_torch − Q_pydensecrf| over cells and classes (``max_abs_dq`` the max),
* ``seeds``       fraction of cells whose grown seeds (DSRG growing on each Q with the config's
  thresholds, :func:`pipeline.growing.grow_seeds`) are identical (same set of classes),
* ``seeds_labelled`` the same over the cells that carry a grown seed under either backend,
* ``cov_pydensecrf`` / ``cov_torch`` seed coverage after growing.

Run on a demo work dir with a trained segmenter (``make segmenter``):

    python -m bench.crf_agreement --exp configs/demo_synthetic.py --work-dir WORK_DIR [--batches 4]

It draws training batches (the segmenter's training augmentation, fixed seed), computes P with
the network as initialised, with every checkpoint found in ``segmenter/train/`` (or
``--checkpoints DIR``: P at earlier iterations) and with the trained network
(``segmenter/model.pth``), and prints / writes (``--out``, JSON) the figures per network. The random smooth inputs at 41×41 are the ``crf_train`` benchmark (``make bench``).

``python -m bench.crf_agreement --kernels`` compares the kernels themselves
(:func:`lattice_columns`): one column of pydensecrf's normalised Gaussian kernel, read off a
one-iteration inference, against the exact one.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from pipeline.crf_pool import crf_batch
from pipeline.crf_torch import dense_crf_torch
from pipeline.dsrg import DSRGConfig, cues_on_grid, grid_images
from pipeline.growing import grow_seeds
from pipeline.losses import stable_softmax_probs

KEYS = ("argmax", "mean_abs_dq", "max_abs_dq", "seeds", "seeds_labelled", "cov_pydensecrf", "cov_torch")


def crf_agreement(images: np.ndarray, probs: torch.Tensor, cues: torch.Tensor, classes: torch.Tensor,
                  cfg: DSRGConfig, pool=None) -> dict:
    """The figures of the module docstring for one batch: ``images`` (B,h,w,3) uint8 on the
    grid, ``probs`` (B,C,h,w), ``cues`` (B,C,h,w) bool, ``classes`` (B,C) bool."""
    q_p = torch.from_numpy(crf_batch(images, probs.numpy(), cfg.crf, pool))
    q_t = dense_crf_torch(images, probs, cfg.crf)
    g_p = grow_seeds(q_p, cues, classes, cfg.fg_threshold, cfg.bg_threshold)
    g_t = grow_seeds(q_t, cues, classes, cfg.fg_threshold, cfg.bg_threshold)
    same = (g_p == g_t).all(1)
    labelled = g_p.any(1) | g_t.any(1)
    dq = (q_t - q_p).abs()
    return {"argmax": float((q_t.argmax(1) == q_p.argmax(1)).float().mean()),
            "mean_abs_dq": float(dq.mean()), "max_abs_dq": float(dq.max()),
            "seeds": float(same.float().mean()),
            "seeds_labelled": float(same[labelled].float().mean()) if labelled.any() else 1.0,
            "cov_pydensecrf": float(g_p.any(1).float().mean()),
            "cov_torch": float(g_t.any(1).float().mean()), "cells": int(same.numel())}


def mean_figures(parts: list[dict]) -> dict:
    """Cell-weighted mean of per-batch figures (``max_abs_dq``: the max)."""
    w = np.array([p["cells"] for p in parts], dtype=float)
    out = {k: float(np.average([p[k] for p in parts], weights=w)) for k in KEYS if k != "max_abs_dq"}
    out["max_abs_dq"] = max(p["max_abs_dq"] for p in parts)
    out["cells"] = int(w.sum())
    return out


def _state_dict(obj) -> dict:
    """A network state dict out of a checkpoint file's content (plain, or under ``state_dict`` /
    ``model`` / ``net``, keys possibly prefixed ``net.`` or ``module.``)."""
    for key in ("state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "net."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def networks(seg_dir: Path, ckpt_dir: Path | None = None):
    """``(name, net)``: the network as initialised (seed 0), each loadable checkpoint of
    ``ckpt_dir`` (default ``seg_dir/train``; by iteration), then the trained network of
    ``seg_dir/model.pth`` (whose file gives the architecture)."""
    from pipeline.models.deeplab import build_segmenter
    from pipeline.runtime.checkpoint import load_model

    def fresh():
        return load_model(seg_dir / "model.pth", "segmenter")

    def order(p):
        digits = "".join(ch for ch in p.stem if ch.isdigit())
        return int(digits) if digits else -1
    _, meta = fresh()
    torch.manual_seed(0)
    yield "init", build_segmenter(meta["model_cfg"], meta["num_classes"])
    for ckpt in sorted(Path(ckpt_dir or seg_dir / "train").glob("*.pth"), key=order):
        net = fresh()[0]
        try:
            state = _state_dict(torch.load(ckpt, map_location="cpu", weights_only=False))
            missing, _ = net.load_state_dict(state, strict=False)
        except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
            print(f"skipping {ckpt.name}: {exc}", file=sys.stderr)
            continue
        if missing:
            print(f"skipping {ckpt.name}: {len(missing)} weights missing", file=sys.stderr)
            continue
        yield ckpt.stem, net
    yield "model.pth", fresh()[0]


def demo_batches(cfg, work_dir: Path, batches: int, seed: int = 0) -> list[dict]:
    """``batches`` training batches of the segmenter section (augmentation as in training)."""
    from pipeline.data.datasets import SegmentationDataset
    from pipeline.data.index import DatasetIndex
    tr = cfg.segmenter.train
    index = DatasetIndex.load(work_dir / "data")
    ds = SegmentationDataset(index, tr.split, work_dir / "seeds" / "labels", tr.crop,
                             train=True, scale_range=tuple(tr.scale_range), resize=tr.resize)
    torch.manual_seed(seed)
    np.random.seed(seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=int(tr.batch_size), shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == batches:
            break
    return out


def demo_agreement(exp: str, work_dir: Path, batches: int, ckpt_dir: Path | None = None) -> dict:
    from stages.common import load_experiment
    cfg = load_experiment(exp)
    dsrg = cfg.segmenter.dsrg_config()
    data = demo_batches(cfg, work_dir, batches)
    results = {}
    for name, net in networks(work_dir / "segmenter", ckpt_dir):
        net.eval()
        parts = []
        with torch.no_grad():
            for batch in data:
                logits = net(batch["image"]).float()
                h, w = logits.shape[-2:]
                probs = stable_softmax_probs(logits)
                cues = cues_on_grid(batch["label"], probs.shape[1], (h, w))
                parts.append(crf_agreement(grid_images(batch["raw"], (h, w)), probs, cues,
                                           batch["classes"].bool(), dsrg))
        results[name] = mean_figures(parts)
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in results[name].items()), flush=True)
    return {"exp": exp, "work_dir": str(work_dir), "batches": batches,
            "batch_size": int(cfg.segmenter.train.batch_size), "crf": str(dsrg.crf),
            "thresholds": [dsrg.fg_threshold, dsrg.bg_threshold], "networks": results}


def lattice_columns(sigmas=(0.25, 0.5, 1.0, 2.0, 3.0, 80 / 12), size: int = 41, big: float = 15.0) -> list[dict]:
    """Column u (the grid centre) of pydensecrf's normalised Gaussian kernel K̃ vs the exact one.

    Two labels, the Gaussian kernel alone with Potts weight 1, one mean-field step from the
    unary ψ: Q⁰ = softmax(−ψ) and log Q¹₁ − log Q¹₀ = ψ₀ − ψ₁ + K̃ (Q⁰₁ − Q⁰₀), so K̃ applied to
    any v = Q⁰₁ − Q⁰₀ is read off the output. With Q⁰₁ ≈ e_u (ψ = 0 / ``big``) and then ≈ 0,
    half the difference of the two readings is K̃ e_u. Per σ: the self weight K̃(u,u) (lattice,
    exact), the L1 distance of the columns (each sums to ≈ 1) and the σ of the exact kernel
    closest to the lattice column (L1, on a grid of 0.5σ..2σ)."""
    import pydensecrf.densecrf as dcrf
    from pipeline.crf_torch import smoothness_operator
    N, u = size * size, (size // 2) * size + size // 2

    def read(sigma, on: bool):
        psi = np.full((2, N), 0.0, np.float32)
        psi[1] = big
        if on:
            psi[:, u] = (big, 0.0)
        crf = dcrf.DenseCRF2D(size, size, 2)
        crf.setUnaryEnergy(psi)
        crf.addPairwiseGaussian(sxy=sigma, compat=1.0)
        q = np.asarray(crf.inference(1), dtype=np.float64)
        return np.log(q[1]) - np.log(q[0]) - (psi[0] - psi[1])

    def exact(sigma):
        return smoothness_operator(size, size, sigma, "cpu").double().numpy()[:, u]
    out = []
    for sigma in sigmas:
        lattice = (read(sigma, True) - read(sigma, False)) / 2
        ex = exact(sigma)
        fits = [(np.abs(exact(s) - lattice).sum(), s) for s in np.linspace(0.5 * sigma, 2 * sigma, 61)]
        out.append({"sigma": float(sigma), "self_lattice": float(lattice[u]), "self_exact": float(ex[u]),
                    "l1": float(np.abs(lattice - ex).sum()), "sum_lattice": float(lattice.sum()),
                    "best_sigma": float(min(fits)[1])})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.crf_agreement", description=__doc__.split("\n\n")[0])
    p.add_argument("--exp", default="configs/demo_synthetic.py")
    p.add_argument("--work-dir", help="work dir with data, seeds and a trained segmenter")
    p.add_argument("--checkpoints", help="folder of training checkpoints (default WORK_DIR/segmenter/train)")
    p.add_argument("--kernels", action="store_true", help="compare the kernels (lattice vs exact) instead")
    p.add_argument("--batches", type=int, default=4, help="training batches per network (default 4)")
    p.add_argument("--out", help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.kernels:
        res = {"kernel_columns": lattice_columns()}
        for r in res["kernel_columns"]:
            print(", ".join(f"{k} {v:.4g}" for k, v in r.items()))
    elif args.work_dir:
        res = demo_agreement(args.exp, Path(args.work_dir).resolve(), args.batches,
                             Path(args.checkpoints) if args.checkpoints else None)
    else:
        p.error("give --work-dir (demo agreement) or --kernels")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
