"""Stage `seeds`: seeds and argmax pseudo-masks from class heatmaps + saliency, with their quality.

Image by image (nothing is held for the whole split) over the images of the heatmaps stage:

* maps: the image's class heatmaps (``heatmap_source='cam'``) or its class-specific entropy
  weights λ^c (``'lambda_c'``, needs ``heatmaps.class_specific_lambda=True``), each normalised by
  its max (:func:`pipeline.heatmaps.normalise_per_class`);
* saliency: ``saliency/maps/<id>.png`` / 255, rescaled to [0, 1] by its min/max first when
  ``normalise_saliency`` (the paper's "normalized saliency"); not read with ``bg_source='cam'``,
  and the saliency stage is then no upstream of this one (:func:`upstream_for`);
* ``labels/<id>.png``: :func:`pipeline.seeds.make_seeds` (foreground = top ``fg_top`` of each
  class map, ``fg_mode`` relative|rank; background (``bg_source``) = saliency < ``bg_sal``, or
  every class map <= ``bg_cam`` (IRN), or both; conflicts and unclaimed pixels 255;
  ``overlap`` max|ignore) — EP paper (Wan et al. ICCV 2019) §4.4, docs/ALGORITHMS.md §3;
* ``pseudo/<id>.png``: :func:`pipeline.seeds.pseudo_mask_argmax` with ``pseudo_bg_threshold``;
* ``overlays/<id>.png`` for the first ``n_overlays`` images;
* with ``export_dsrg_pickle``: ``dsrg_cues.pickle`` + ``input_list.txt`` (SEC/DSRG format,
  :func:`pipeline.data.files.export_dsrg_cues`, seeds read back from ``labels/`` one at a time).

Quality on the images of the split that have a GT mask: seed precision / recall / fraction
labelled / per-class IoU (:class:`pipeline.metrics.SeedQuality`) and the mIoU of the
pseudo-masks (:class:`pipeline.metrics.ConfusionMatrix`), in the manifest and printed.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.data.files import (export_dsrg_cues, load_heatmap, read_label_png, read_saliency,
                                 save_rgb, write_label_png)
from pipeline.data.index import DatasetIndex
from pipeline.data.io_utils import json_safe
from pipeline.heatmaps import normalise_per_class
from pipeline.metrics import ConfusionMatrix, SeedQuality, format_table
from pipeline.runtime.guards import check_array_finite
from pipeline.runtime.stage import StageError
from pipeline.seeds import make_seeds, pseudo_mask_argmax
from pipeline.visualize import blank, grey_rgb, heatmap_rgb, label_rgb, panel_row
from stages.common import main_for

STAGE = "seeds"
UPSTREAM = ("data", "heatmaps", "saliency")


def upstream_for(section) -> tuple[str, ...]:
    """``data`` and ``heatmaps``, plus ``saliency`` unless the background comes from the class
    maps alone (``seeds.bg_source='cam'``)."""
    return UPSTREAM if section.bg_source != "cam" else ("data", "heatmaps")


class _LabelFiles(Mapping):
    """``{id: seed map}`` read lazily from ``<dir>/<id>.png`` (keeps the DSRG export streaming)."""

    def __init__(self, directory: Path, ids: list[str]):
        self.directory, self.ids = Path(directory), list(ids)

    def __getitem__(self, img_id):
        return read_label_png(self.directory / f"{img_id}.png")

    def __iter__(self):
        return iter(self.ids)

    def __len__(self):
        return len(self.ids)


def overlay(image, maps, lam, sal, seeds, pseudo, gt) -> np.ndarray:
    """image | heatmap (max over classes) | λ (/ its max) | saliency | seeds | pseudo | GT, captioned."""
    hw = image.shape[:2]
    heat = maps.max(0) if maps.shape[0] else np.zeros(hw, np.float32)
    lam_disp = normalise_per_class(lam) if lam is not None else None      # λ / max λ, for display
    tiles = [image, heatmap_rgb(heat), heatmap_rgb(lam_disp) if lam is not None else blank(hw),
             grey_rgb(sal) if sal is not None else blank(hw), label_rgb(seeds), label_rgb(pseudo),
             label_rgb(gt) if gt is not None else blank(hw, 255)]
    names = ["image", "heatmap", "lambda", "saliency" if sal is not None else "no saliency",
             "seeds", "pseudo", "GT" if gt is not None else "no GT"]
    return panel_row(tiles, names, height=max(hw[0], 160))


def seed_inputs(ctx, sec) -> tuple:
    """``(index, heatmap dir, saliency dir or None, split, ids)``; the λ^c maps checked."""
    index = DatasetIndex.load(ctx.upstream_dir("data"))
    heat_dir = ctx.upstream_dir("heatmaps")
    sal_dir = ctx.upstream_dir("saliency") if sec.bg_source != "cam" else None
    split = ctx.upstream_manifests["heatmaps"]["config"]["split"]
    if sec.heatmap_source == "lambda_c" and not (heat_dir / "lambda_c").is_dir():
        raise StageError("seeds.heatmap_source='lambda_c' needs the λ^c maps: run "
                         "`make heatmaps OPTS=\"heatmaps.class_specific_lambda=True\"` first")
    return index, heat_dir, sal_dir, split, index.ids(split)


def seed_options(sec) -> dict:
    """The keyword arguments of :func:`pipeline.seeds.make_seeds`."""
    return dict(fg_top=sec.fg_top, fg_mode=sec.fg_mode, fg_min=sec.fg_min, bg_sal=sec.bg_sal,
                overlap=sec.overlap, bg_source=sec.bg_source, bg_cam=sec.bg_cam)


def describe_rules(sec, opts: dict) -> str:
    bg_rules = {"saliency": f"saliency < {opts['bg_sal']} (normalised: {sec.normalise_saliency})",
                "cam": f"every class map <= {opts['bg_cam']}"}
    bg_rule = bg_rules.get(sec.bg_source) or f"{bg_rules['saliency']} and {bg_rules['cam']}"
    floor = f", at least {opts['fg_min']} of the max" if opts["fg_min"] else ""
    return (f"source {sec.heatmap_source}; fg top {opts['fg_top']} ({opts['fg_mode']}{floor}), "
            f"bg {bg_rule}, overlap {opts['overlap']}; pseudo-mask bg threshold "
            f"{sec.pseudo_bg_threshold}")


def read_cues(img_id: str, heat_dir: Path, sal_dir: Path | None, sec) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """``(heatmap file, normalised class maps, saliency or None)`` of one image, checked."""
    try:
        hm = load_heatmap(heat_dir / "maps" / f"{img_id}.npz")
        if sec.heatmap_source == "lambda_c":
            hm["cam"] = load_heatmap(heat_dir / "lambda_c" / f"{img_id}.npz")["cam"]
        maps = normalise_per_class(hm["cam"])
        sal = None if sal_dir is None else read_saliency(
            sal_dir / "maps" / f"{img_id}.png", size=maps.shape[1:], normalise=sec.normalise_saliency)
    except (FileNotFoundError, ValueError) as exc:
        raise StageError(f"image {img_id}: {exc}") from exc
    for key in ("cam", "lam"):
        check_array_finite(hm[key], f"{heat_dir / 'maps' / img_id}.npz ({key})",
                           "re-run `make heatmaps` (after `make classifier` if its model diverged)")
    return hm, maps, sal


class SeedTally:
    """Pixel counts of the seeds and, on images with a GT mask, seed and pseudo-mask quality."""

    def __init__(self, index: DatasetIndex):
        self.index = index
        self.seed_q, self.pseudo_cm = SeedQuality(index.num_classes), ConfusionMatrix(index.num_classes)
        self.n_pix = self.n_fg = self.n_bg = self.n_eval = 0

    def add(self, img_id: str, seeds: np.ndarray, pseudo: np.ndarray):
        """Count one image; returns its GT mask (None without one)."""
        self.n_pix += seeds.size
        self.n_bg += int((seeds == 0).sum())
        self.n_fg += int(((seeds > 0) & (seeds != 255)).sum())
        gt = self.index.read_mask(img_id)
        if gt is not None:
            if gt.shape != seeds.shape:
                raise StageError(f"{self.index.mask_path(img_id)}: GT size {gt.shape} != heatmap size "
                                 f"{seeds.shape}")
            self.seed_q.update(seeds, gt)
            self.pseudo_cm.update(pseudo, gt)
            self.n_eval += 1
        return gt

    def metrics(self, ctx, split: str, bg_thr: float) -> dict:
        """The manifest metrics, logged."""
        n_pix, n_fg, n_bg, names = self.n_pix, self.n_fg, self.n_bg, self.index.classes
        metrics = {"seeds_fg_fraction": n_fg / n_pix if n_pix else None,
                   "seeds_bg_fraction": n_bg / n_pix if n_pix else None}
        ctx.log(f"seeds cover {100 * n_fg / max(n_pix, 1):.1f}% foreground, {100 * n_bg / max(n_pix, 1):.1f}% "
                f"background, {100 * (n_pix - n_fg - n_bg) / max(n_pix, 1):.1f}% unlabelled pixels")
        if not self.n_eval:
            ctx.log(f"no GT masks for the {split} images: no seed quality")
            return metrics
        sq = self.seed_q.summary(names)
        ps = self.pseudo_cm.summary(names)
        metrics["seeds"] = {k: sq[k] for k in ("precision", "recall", "fraction_labelled", "mIoU",
                                               "bg_precision", "fg_precision")}
        metrics["seeds"]["IoU"] = dict(zip(names, sq["IoU"]))
        metrics["pseudo"] = {"mIoU": ps["mIoU"], "aAcc": ps["aAcc"], "IoU": dict(zip(names, ps["IoU"]))}
        ctx.log(f"seed quality on {self.n_eval} images with GT: precision {100 * sq['precision']:.2f}, "
                f"recall {100 * sq['recall']:.2f}, labelled {100 * sq['fraction_labelled']:.2f}%, "
                f"mIoU {100 * sq['mIoU']:.2f} (IoU over labelled pixels); precision of the background "
                f"seeds {100 * sq['bg_precision']:.2f}, of the foreground seeds "
                f"{100 * sq['fg_precision']:.2f}\n"
                + format_table(self.seed_q.cm.summary(names)))
        ctx.log(f"pseudo-masks (argmax, bg < {bg_thr}): mIoU {100 * ps['mIoU']:.2f}\n" + format_table(ps))
        return metrics


def export_dsrg(ctx, sec, index: DatasetIndex, ids: list[str]) -> int:
    """SEC/DSRG ``dsrg_cues.pickle`` + ``input_list.txt`` of the written seeds; returns the count."""
    index_of = export_dsrg_cues(_LabelFiles(ctx.out / "labels", ids), ctx.out / "dsrg_cues.pickle",
                                grid=sec.dsrg_grid, num_classes=index.num_classes,
                                image_labels={i: index.labels(i) for i in ids},
                                mode=sec.dsrg_mode)
    (ctx.out / "input_list.txt").write_text("".join(f"{i}.jpg {index_of[i]}\n" for i in ids))
    ctx.log(f"wrote {ctx.out / 'dsrg_cues.pickle'} and input_list.txt ({len(ids)} images)")
    return len(ids)


def run(ctx) -> dict:
    sec = ctx.section
    if ctx.rank != 0:
        return {}
    index, heat_dir, sal_dir, split, ids = seed_inputs(ctx, sec)
    opts, bg_thr, n_overlays = seed_options(sec), sec.pseudo_bg_threshold, sec.n_overlays
    ctx.log(f"{len(ids)} {split} images; {describe_rules(sec, opts)}")
    for sub in ("labels", "pseudo") + (("overlays",) if n_overlays > 0 else ()):
        (ctx.out / sub).mkdir(exist_ok=True)
    tally = SeedTally(index)
    log_every = max(200, len(ids) // 10)
    for k, img_id in enumerate(ids):
        hm, maps, sal = read_cues(img_id, heat_dir, sal_dir, sec)
        seeds = make_seeds(maps, hm["classes"], sal, **opts)
        pseudo = pseudo_mask_argmax(maps, hm["classes"], bg_thr)
        write_label_png(ctx.out / "labels" / f"{img_id}.png", seeds)
        write_label_png(ctx.out / "pseudo" / f"{img_id}.png", pseudo)
        gt = tally.add(img_id, seeds, pseudo)
        if k < n_overlays:
            save_rgb(ctx.out / "overlays" / f"{img_id}.png",
                     overlay(index.read_image(img_id), maps, hm["lam"], sal, seeds, pseudo, gt))
        if (k + 1) % log_every == 0:
            ctx.log(f"{k + 1}/{len(ids)} images")
    counts = {"images": len(ids), "evaluated": tally.n_eval, "overlays": min(n_overlays, len(ids))}
    metrics = {"bg_source": sec.bg_source, **tally.metrics(ctx, split, bg_thr)}
    if sec.export_dsrg_pickle:
        counts["dsrg_cues"] = export_dsrg(ctx, sec, index, ids)
    return {"counts": counts, "metrics": json_safe(metrics)}


if __name__ == "__main__":
    main_for(__name__)
