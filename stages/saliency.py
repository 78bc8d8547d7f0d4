"""Stage `saliency`: one 8-bit grey saliency map per image of a split, at the image's size.

* ``saliency.dir`` set: import precomputed maps (e.g. DRFI, as in the EP paper §4.4) named
  ``<id>.png`` (or .jpg/.jpeg/.bmp) of any size; each is resized bilinearly to its image
  (:func:`pipeline.data.files.read_saliency`). Every image of the split needs a readable map:
  missing ones are listed (by expected path) before any work starts. A map must be one grey
  channel: a colour map (RGB channels that differ) stops the stage, naming the file, unless
  ``saliency.allow_colour=True``, which converts colour maps to luma and logs how many.
* otherwise: the built-in RBD saliency (:func:`pipeline.saliency.rbd_saliency`, parameters
  ``saliency.rbd``), computed in a pool of ``saliency.workers`` processes.

Maps are stored as they are (values · 255, rounded) in ``maps/<id>.png``; the seeds stage
normalises them per image when ``seeds.normalise_saliency`` is set. Quality against the GT
foreground (mask > 0, mask = 255 ignored) on the images with a GT mask: mean absolute error
and max F-measure (β² = 0.3) in the manifest metrics.
"""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.files import find_saliency_file, load_saliency
from pipeline.data.io_utils import atomic_file, json_safe
from pipeline.runtime.stage import StageError
from pipeline.saliency import SaliencyQuality, rbd_saliency
from stages.common import main_for, resolve_path, split_ids

STAGE = "saliency"
UPSTREAM = ("data",)


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def saliency_job(job: tuple) -> tuple[str, np.ndarray | None, str | None, str | None]:
    """Worker: compute or import one map, write ``out_path``; returns ``(id, uint8 map or None,
    error message or None, colour conversion or None)``; the map comes back only when
    ``want_map`` (GT exists)."""
    img_id, image_path, out_path, src_path, rbd_params, want_map, allow_colour = job
    conversion = None
    try:
        if src_path is not None:
            sal, conversion = load_saliency(src_path, size=_image_size(Path(image_path)),
                                            allow_colour=allow_colour)
        else:
            with Image.open(image_path) as im:
                img = np.asarray(im.convert("RGB"), dtype=np.uint8)
            sal = rbd_saliency(img, **rbd_params)
        sal8 = np.round(np.clip(sal, 0.0, 1.0) * 255.0).astype(np.uint8)
        with atomic_file(out_path) as tmp:
            Image.fromarray(sal8, mode="L").save(tmp)
        return img_id, (sal8 if want_map else None), None, conversion
    except (OSError, ValueError, np.linalg.LinAlgError) as exc:
        return img_id, None, f"{img_id}: {exc}", None


def _pool(workers: int):
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn").Pool(workers)


def find_sources(ctx, sec, ids: list[str], split: str) -> tuple[Path | None, dict]:
    """``(saliency.dir resolved or None, {id: map file})``; every missing map named before any
    work."""
    src_dir = resolve_path(sec.dir)
    if src_dir is None:
        ctx.log(f"computing RBD saliency for {len(ids)} {split} images with {sec.workers} worker(s)")
        return None, {}
    if not Path(src_dir).is_dir():
        raise StageError(f"saliency.dir={sec.dir!r}: folder {src_dir} not found")
    sources, missing = {}, []
    for img_id in ids:
        try:
            sources[img_id] = str(find_saliency_file(src_dir, img_id))
        except FileNotFoundError:
            missing.append(str(Path(src_dir) / f"{img_id}.png"))
    if missing:
        raise StageError(f"saliency.dir={src_dir}: no saliency map for {len(missing)} of {len(ids)} "
                         f"{split} images, e.g. " + ", ".join(missing[:5]) +
                         " (unset saliency.dir to compute RBD saliency instead)")
    ctx.log(f"importing {len(ids)} saliency maps from {src_dir}")
    return src_dir, sources


class MapTally:
    """Consumes :func:`saliency_job` results: errors, colour conversions, quality vs GT."""

    def __init__(self, ctx, index, ids: list[str]):
        self.ctx, self.index, self.total = ctx, index, len(ids)
        self.quality, self.n_done, self.conversions = SaliencyQuality(), 0, []
        self.log_every = max(100, len(ids) // 10)

    def consume(self, results) -> None:
        for img_id, sal8, err, conversion in results:
            if err is not None:
                raise StageError(f"saliency map of image {err}")
            if conversion is not None:
                self.conversions.append(conversion)
            if sal8 is not None:
                gt = self.index.read_mask(img_id)
                valid = gt != 255
                if gt.shape != sal8.shape:
                    raise StageError(f"{self.index.mask_path(img_id)}: GT size {gt.shape} != image "
                                     f"size {sal8.shape}")
                self.quality.update(sal8[valid].astype(np.float64) / 255.0, gt[valid] > 0)
            self.n_done += 1
            if self.n_done % self.log_every == 0:
                self.ctx.log(f"{self.n_done}/{self.total} images")

    def metrics(self, imported: bool) -> dict:
        """The manifest metrics, logged."""
        ctx, q = self.ctx, self.quality.summary()
        if self.conversions:
            ctx.log(f"saliency.allow_colour=True: {len(self.conversions)} colour map(s) converted "
                    f"to luma, e.g. " + self.conversions[0])
        metrics = {"source": "import" if imported else "rbd", "gt_images": q["images"],
                   "colour_maps_converted": len(self.conversions)}
        if q["images"]:
            metrics.update(json_safe({"MAE": q["MAE"], "maxF": q["maxF"],
                                      "maxF_threshold": q["best_threshold"]}))
            ctx.log(f"quality on {q['images']} images with GT: MAE {q['MAE']:.4f}, max F-measure "
                    f"{q['maxF']:.4f} (at {q['best_threshold']:.3f})")
        else:
            ctx.log("no GT masks for this split: no saliency quality")
        return metrics


def run(ctx) -> dict:
    sec = ctx.section
    if ctx.rank != 0:
        return {}
    index, split, ids = split_ids(ctx)
    out_dir = ctx.out / "maps"
    out_dir.mkdir(exist_ok=True)
    src_dir, sources = find_sources(ctx, sec, ids, split)
    rbd_params, workers = sec.rbd.to_dict(), sec.workers
    allow_colour = bool(sec.allow_colour)          # unset: colour maps are an error
    jobs = [(i, str(index.image_path(i)), str(out_dir / f"{i}.png"), sources.get(i), rbd_params,
             index.mask_path(i) is not None, allow_colour) for i in ids]
    tally = MapTally(ctx, index, ids)
    if workers > 1 and len(jobs) > 1:
        with _pool(workers) as pool:
            tally.consume(pool.imap(saliency_job, jobs,
                                    chunksize=max(1, min(16, len(jobs) // (4 * workers)))))
    else:
        tally.consume(map(saliency_job, jobs))
    metrics = tally.metrics(imported=src_dir is not None)
    return {"counts": {"images": tally.n_done, "gt_images": metrics["gt_images"]}, "metrics": metrics}


if __name__ == "__main__":
    main_for(__name__)
