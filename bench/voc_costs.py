"""Per-image CPU costs at the VOC image size: the measured inputs of the full-VOC estimate.

VOC 2012 images average about 500×375 pixels. Each figure is one image's CPU work of a stage that
runs per image on the host (not the network), median over ``repeats``, one process, on a
piecewise-smooth synthetic image of that size (``bench.crf.make_inputs``):

* ``rbd`` — built-in saliency, :func:`pipeline.saliency.rbd_saliency` (saliency stage);
* ``heatmap_file`` — the heatmaps stage's file per image, ``maps/<id>.npz`` (2 class maps + λ,
  :func:`pipeline.data.files.save_heatmap`, compressed; ``class_specific_lambda`` adds a second);
  and the files of ``files`` images written by a :class:`pipeline.runtime.writer.BackgroundWriter` of
  ``writers`` threads (as the stage does) vs one after the other in the loop;
* ``seeds`` — the seeds stage's per-image work: read the maps file and the saliency PNG,
  :func:`pipeline.seeds.make_seeds`, :func:`pipeline.seeds.pseudo_mask_argmax`, two label PNGs;
* ``loader`` — a training sample: JPEG decode + :func:`pipeline.transforms.train_augment`
  (crop 321, scale 0.7–1.3, flip), what each loader worker does per image;
* ``crf`` — test-time dense CRF (``dsrg_test``, C classes, 10 iterations) per image, on the smooth
  image and, as a worst case, on a uniform-noise image (the bilateral lattice grows with colour
  variety).
"""
from __future__ import annotations

import os

import numpy as np

from bench.common import measure, measure_interleaved, row

NAME = "voc_costs"
DEFAULTS = dict(height=375, width=500, classes=21, seed=0, files=16, writers=2)


def _inputs(cfg):
    from bench.crf import make_inputs
    images, probs = make_inputs(1, cfg["height"], cfg["width"], cfg["classes"], cfg["seed"])
    return images[0], probs[0]


def run(cfg: dict, ctx) -> list[dict]:
    import cv2

    from pipeline.crf import CRFParams, dense_crf
    from pipeline.data.files import load_heatmap, read_saliency, save_heatmap, write_label_png
    from pipeline.runtime.writer import BackgroundWriter
    from pipeline.saliency import rbd_saliency
    from pipeline.seeds import make_seeds, pseudo_mask_argmax
    from pipeline.transforms import train_augment

    cfg = {**DEFAULTS, **cfg}
    image, probs = _inputs(cfg)
    H, W = image.shape[:2]
    reps, warm = ctx.reps(cfg), ctx.warmup
    rng = np.random.default_rng(cfg["seed"])
    tmp = ctx.tmp / "voc_costs"
    tmp.mkdir(parents=True, exist_ok=True)
    classes = [3, 7]
    cam = np.clip(probs[1:3] / probs[1:3].max(axis=(1, 2), keepdims=True), 0, 1).astype(np.float32)
    lam = probs[0].astype(np.float32)
    sal = (255 * probs[0]).astype(np.uint8)
    cv2.imwrite(str(tmp / "sal.png"), sal)
    jpeg = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    noise = rng.integers(0, 256, image.shape, dtype=np.uint8)
    crf = CRFParams.preset("dsrg_test")

    def heatmap_file():
        save_heatmap(tmp / "maps.npz", cam, classes, lam=lam)

    def heatmap_files(threads):
        with BackgroundWriter(threads) as writer:
            for i in range(int(cfg["files"])):
                writer.submit(save_heatmap, tmp / f"maps{i}.npz", cam, classes, lam=lam)

    heatmap_file()

    def seeds():
        maps = load_heatmap(tmp / "maps.npz")["cam"].astype(np.float32)
        s = read_saliency(tmp / "sal.png", size=maps.shape[1:], normalise=False)
        write_label_png(tmp / "labels.png", make_seeds(maps, classes, s, fg_top=0.30, fg_mode="relative",
                                                           bg_sal=0.06, overlap="max",
                                                           bg_source="saliency", bg_cam=0.05))
        write_label_png(tmp / "pseudo.png", pseudo_mask_argmax(maps, classes, 0.2))

    def loader():
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        return train_augment(img, None, 321, (0.7, 1.3), rng)

    figures = [("rbd", "RBD saliency (rbd_saliency)", lambda: rbd_saliency(image)),
               ("heatmap_file", "heatmap file (save_heatmap: 2 class maps + λ, compressed)", heatmap_file),
               ("seeds", "seeds per image (read maps + saliency, make_seeds, pseudo-mask, 2 PNGs)", seeds),
               ("loader", "training sample (JPEG decode + train_augment, crop 321)", loader),
               ("crf", f"dense CRF dsrg_test, C={cfg['classes']}, smooth image", lambda: dense_crf(image, probs, crf)),
               ("crf_noise", f"dense CRF dsrg_test, C={cfg['classes']}, uniform-noise image (worst case)",
                lambda: dense_crf(noise, probs, crf))]
    rows = []
    for key, what, fn in figures:
        m = measure(fn, reps, warm)
        ctx.log(f"voc_costs: {key} {m['median'] * 1e3:.1f} ms")
        rows.append(row(NAME, f"{what}, one {H}×{W} image", m["median"], "s",
                        notes=f"{m['median'] / (H * W) * 1e6:.3f} µs/pixel; one process",
                        runs=m["runs"], extra={"key": key, "pixels": H * W}))
        ctx.shared[f"voc_{key}_s"] = m["median"]
    n, k = int(cfg["files"]), int(cfg["writers"])
    m = measure_interleaved({"loop": lambda: heatmap_files(0), "threads": lambda: heatmap_files(k)},
                            reps, warm)
    ratio = m["loop"]["median"] / m["threads"]["median"]
    rows.append(row(NAME, f"heatmap files of {n} {H}×{W} images, BackgroundWriter of {k} threads",
                    m["threads"]["median"], "s", baseline="written one after the other in the loop",
                    baseline_value=m["loop"]["median"], ratio=ratio, ratio_desc="× speed-up",
                    notes=f"{os.cpu_count()} CPU cores; zlib releases the GIL while it compresses",
                    runs=m["threads"]["runs"], baseline_runs=m["loop"]["runs"],
                    extra={"key": "heatmap_writer", "files": n, "writers": k}))
    return rows
