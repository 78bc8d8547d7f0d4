"""Where DSRG's region growing puts its labels, against the GT (`make growing-check`).

Not a stage: it reads ``WORK_DIR/{data,seeds,segmenter}`` and prints a table (nothing written).
For the first ``--images`` images of the segmenter's training split, as the segmenter saw them in
training without augmentation (resized to ``segmenter.train.resize`` or ``crop``): the trained
segmenter's P on its output grid, Q = the training CRF of P (``segmenter.crf``), the seeds on the
grid (:func:`pipeline.dsrg.cues_on_grid`), and the seeds grown (``segmenter.dsrg`` thresholds) on
Q (the reference, ``grow_on="crf"``) and on P. Each label map is scored against the GT sampled to
the grid with the same rule (:func:`pipeline.dsrg_diagnostics.grid_label_counts`): the share of
background labels on GT foreground and how the GT foreground cells are labelled. Also the grid's
own limit: the GT sampled to the grid and brought back (bilinear one-hot), its mIoU against the
GT at the input size. It shows what the network of the end of training would be taught; the
training log's ``cov_*`` curves show the same fractions without GT during training.

``python -m stages.growing_check --exp CFG [--work-dir D] [--opts ...] [--images N]``
(``--opts segmenter.dsrg.bg_threshold=0.999`` checks other thresholds on the same model).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.crf_pool import crf_batch
from pipeline.data.datasets import SegmentationDataset
from pipeline.data.index import DatasetIndex
from pipeline.dsrg import cues_on_grid, grid_images
from pipeline.dsrg_diagnostics import grid_label_counts, grid_label_rates
from pipeline.growing import grow_seeds
from pipeline.losses import stable_softmax_probs
from pipeline.metrics import ConfusionMatrix
from pipeline.runtime.checkpoint import load_segmenter

ROWS = ("seeds (no growing)", "grown on CRF(P)", "grown on P")


def _batches(seeds_ds, gt_ds, n: int, batch: int):
    for s in range(0, n, batch):
        idx = range(s, min(n, s + batch))
        items, gts = [seeds_ds[i] for i in idx], [gt_ds[i] for i in idx]
        yield ({k: torch.stack([torch.as_tensor(it[k]) for it in items])
                for k in ("image", "label", "classes", "raw")},
               torch.stack([g["label"] for g in gts]))


def grid_gt(gt: torch.Tensor, C: int, size) -> torch.Tensor:
    """(B,H,W) GT → (B,h,w) on the grid with the cues rule (255 where the sampled pixel is void)."""
    cues = cues_on_grid(gt, C, size)
    out = cues.float().argmax(dim=1)
    out[~cues.any(dim=1)] = 255
    return out


def check(work_dir: Path, segmenter_cfg, n_images: int, log=print) -> dict:
    """``{row: rates}`` of :data:`ROWS` and ``grid_gt_mIoU`` (module docstring)."""
    index = DatasetIndex.load(work_dir / "data")
    C, tr = index.num_classes, segmenter_cfg.train
    size = int(tr.resize or tr.crop)
    split = tr.split
    seeds_ds = SegmentationDataset(index, split, work_dir / "seeds" / "labels", size, train=False)
    gt_ds = SegmentationDataset(index, split, None, size, train=False)
    dsrg = segmenter_cfg.dsrg_config()
    net, _ = load_segmenter(work_dir / "segmenter" / "model.pth")
    net.eval()
    n = min(int(n_images), len(seeds_ds))
    counts = {r: {} for r in ROWS}
    cm = ConfusionMatrix(C)
    with torch.no_grad():
        for batch, gt in _batches(seeds_ds, gt_ds, n, 16):
            logits = net(batch["image"]).float()
            h, w = logits.shape[-2:]
            probs = stable_softmax_probs(logits)
            q = torch.from_numpy(crf_batch(grid_images(batch["raw"].numpy(), (h, w)), probs.numpy(), dsrg.crf))
            cues = cues_on_grid(batch["label"], C, (h, w))
            g = grid_gt(gt, C, (h, w))
            maps = {ROWS[0]: cues,
                    ROWS[1]: grow_seeds(q, cues, batch["classes"], dsrg.fg_threshold, dsrg.bg_threshold),
                    ROWS[2]: grow_seeds(probs, cues, batch["classes"], dsrg.fg_threshold, dsrg.bg_threshold)}
            for row, lab in maps.items():
                for k, v in grid_label_counts(lab, g).items():
                    counts[row][k] = counts[row].get(k, 0) + v
            onehot = F.one_hot(torch.where(g == 255, 0, g), C).permute(0, 3, 1, 2).float()
            back = F.interpolate(onehot, size=gt.shape[-2:], mode="bilinear", align_corners=False)
            cm.update(back.argmax(dim=1).numpy(), gt.numpy())
    out = {row: grid_label_rates(c) for row, c in counts.items()}
    out["grid_gt_mIoU"] = cm.summary(index.classes)["mIoU"]
    out["images"], out["grid"], out["thresholds"] = n, (int(h), int(w)), (dsrg.fg_threshold, dsrg.bg_threshold)
    return out


def format_check(res: dict) -> str:
    def pct(v):
        return "   n/a" if v is None else f"{100 * v:6.1f}"
    lines = [f"{res['images']} training images, {res['grid'][0]}x{res['grid'][1]} output grid, growing "
             f"thresholds fg {res['thresholds'][0]} / bg {res['thresholds'][1]}; shares in %",
             f"{'grid labels':<20} {'bg labels on GT fg':>18} {'GT fg -> bg only':>16} "
             f"{'GT fg -> own class':>18} {'GT fg unlabelled':>16}"]
    for row in ROWS:
        r = res[row]
        lines.append(f"{row:<20} {pct(r['bg_precision_loss']):>18} {pct(r['fg_as_bg']):>16} "
                     f"{pct(r['fg_correct']):>18} {pct(r['fg_unlabelled']):>16}")
    lines.append(f"GT through the grid (sampled, bilinear one-hot back): mIoU {pct(res['grid_gt_mIoU']).strip()} %")
    return "\n".join(lines)


def main(argv=None) -> int:
    from stages.common import (DEFAULT_EXP, add_opts_argument, default_work_dir,
                               load_experiment_or_exit, parse_command_line)

    p = argparse.ArgumentParser(prog="python -m stages.growing_check", description=__doc__.split("\n")[0])
    p.add_argument("--exp", default=str(DEFAULT_EXP))
    p.add_argument("--work-dir", default=None)
    add_opts_argument(p)
    p.add_argument("--images", type=int, default=200, help="how many training images (default 200)")
    p.add_argument("--force", action="store_true", help="ignored (accepted for Make symmetry)")
    a = parse_command_line(p, argv)
    cfg = load_experiment_or_exit("growing_check", a.exp, a.opts)
    work_dir = Path(a.work_dir).expanduser().resolve() if a.work_dir else default_work_dir(cfg)
    print(format_check(check(work_dir, cfg.segmenter, a.images)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
