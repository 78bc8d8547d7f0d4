"""The examples grid of the experiment report (``stages.report``): for a few trainaug images,
image | heatmap | λ | saliency | seeds | grown seeds | prediction | GT, as PNG tiles next to the
page. The prediction comes from running the trained segmenter on those images; the grown seeds
are DSRG region growing of the seeds on that prediction (:func:`pipeline.growing.grown_label_map`),
an illustration: in training they are grown on the output grid with the network of the moment.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from pipeline.data.files import load_heatmap, read_label_png, read_saliency, save_rgb
from pipeline.data.index import DatasetIndex
from pipeline.growing import grown_label_map
from pipeline.heatmaps import normalise_per_class
from pipeline.inference import predict_probs
from pipeline.report.ablation_table import nested_get
from pipeline.report.html import esc, table
from pipeline.runtime.checkpoint import load_model
from pipeline.visualize import blank, blend, grey_rgb, heatmap_rgb, label_rgb
from pipeline.voc import voc_palette

N_EXAMPLES = 6
MIN_TILE, MAX_TILE = 128, 240       # example tile heights (px)


def tile(img: np.ndarray, smooth: bool) -> np.ndarray:
    """Scale a tile to a height in [MIN_TILE, MAX_TILE] (nearest-neighbour for label maps and
    small images, so pixels stay visible)."""
    h, w = img.shape[:2]
    if h < MIN_TILE:
        f = int(math.ceil(MIN_TILE / h))
        return cv2.resize(img, (w * f, h * f), interpolation=cv2.INTER_NEAREST)
    if h > MAX_TILE:
        size = (max(1, round(w * MAX_TILE / h)), MAX_TILE)
        return cv2.resize(img, size, interpolation=cv2.INTER_AREA if smooth else cv2.INTER_NEAREST)
    return img


def pick_examples(ids: list[str], n: int, has_gt) -> list[str]:
    """``n`` ids spread over the list, preferring ids with a GT mask."""
    pool = [i for i in ids if has_gt(i)] or list(ids)
    if len(pool) <= n:
        return pool
    return [pool[round(k * (len(pool) - 1) / (n - 1))] for k in range(n)] if n > 1 else pool[:1]


def segmenter_outputs(cfg, work_dir, index, ids, images, seeds, device):
    """Predictions (argmax of P) and grown seeds of ``ids`` with the trained segmenter."""
    net, _ = load_model(work_dir / "segmenter" / "model.pth", kind="segmenter")
    net = net.to(device).eval()
    size = cfg.eval.size if cfg.eval is not None else None      # "original" / None: own size
    probs = predict_probs(net, images, scales=(1.0,), flip=False, size=size, device=device,
                          batch_size=8)
    preds = [p.argmax(0).astype(np.uint8) for p in probs]
    fg, bg = cfg.segmenter.dsrg.fg_threshold, cfg.segmenter.dsrg.bg_threshold
    grown = [None if s is None else grown_label_map(p, s, index.labels(img_id), fg, bg)
             for img_id, p, s in zip(ids, probs, seeds)]
    return preds, grown, (fg, bg)


def example_ids(index: DatasetIndex, work_dir: Path, man: dict, have: dict, n: int) -> tuple[str, list]:
    """``(split, ids)``: ``n`` images of the heatmaps' split that have heatmaps and seeds."""
    heat_dir, seed_dir = work_dir / "heatmaps", work_dir / "seeds"
    split = (nested_get(man["heatmaps"], "config", "split") or "trainaug") if have["heatmaps"] else "trainaug"
    ids = index.ids(split)
    if have["heatmaps"] and have["seeds"]:
        ids = [i for i in ids if (heat_dir / "maps" / f"{i}.npz").is_file()
               and (seed_dir / "labels" / f"{i}.png").is_file()]
    return split, pick_examples(ids, n, lambda i: index.mask_path(i) is not None)


def example_columns(have: dict, preds, grown, notes: list) -> list[str]:
    """The columns the finished stages allow; the others are named in ``notes``."""
    cols = ["image"]
    cols += ["heatmap", "λ"] if have["heatmaps"] else []
    cols += ["saliency"] if have["saliency"] else []
    cols += ["seeds"] if have["seeds"] else []
    cols += ["grown seeds"] if grown is not None and have["seeds"] else []
    cols += ["prediction"] if preds is not None else []
    cols += ["GT"]
    omitted = [c for c in ("heatmap", "λ", "saliency", "seeds", "grown seeds", "prediction") if c not in cols]
    if omitted:
        why = {"heatmap": "heatmaps", "λ": "heatmaps", "saliency": "saliency", "seeds": "seeds",
               "grown seeds": "segmenter + seeds", "prediction": "segmenter"}
        notes.append("Columns left out: " + ", ".join(f"{c} (needs {why[c]})" for c in omitted) + ".")
    return cols


def example_tiles(k: int, img_id: str, img, index: DatasetIndex, work_dir: Path, have: dict, cols,
                  seeds, grown, preds) -> dict:
    """``{column: RGB tile}`` of example ``k``."""
    hw = img.shape[:2]
    tiles = {"image": img}
    if have["heatmaps"]:
        hm = load_heatmap(work_dir / "heatmaps" / "maps" / f"{img_id}.npz")
        cam = normalise_per_class(hm["cam"])
        heat = cam.max(0) if cam.shape[0] else np.zeros(hw, np.float32)
        tiles["heatmap"] = blend(img, heatmap_rgb(heat), 0.6)
        tiles["λ"] = heatmap_rgb(normalise_per_class(hm["lam"])) if hm["lam"] is not None else blank(hw)
    if have["saliency"]:
        tiles["saliency"] = grey_rgb(read_saliency(work_dir / "saliency" / "maps" / f"{img_id}.png", size=hw))
    if have["seeds"]:
        tiles["seeds"] = label_rgb(seeds[k])
    if "grown seeds" in cols:
        tiles["grown seeds"] = label_rgb(grown[k]) if grown[k] is not None else blank(hw)
    if preds is not None:
        tiles["prediction"] = label_rgb(preds[k])
    gt = index.read_mask(img_id)
    tiles["GT"] = label_rgb(gt) if gt is not None else blank(hw, 255)
    return tiles


def palette_legend(classes) -> str:
    pal = voc_palette()
    return "".join(f"<span class=sw style='background:rgb{tuple(int(v) for v in pal[i])}'></span>{esc(c)}"
                   for i, c in enumerate(classes)) + \
        f"<span class=sw style='background:rgb{tuple(int(v) for v in pal[255])}'></span>unlabelled/ignore"


def examples_html(cfg, work_dir: Path, man: dict, out_dir: Path, device: str, n: int = N_EXAMPLES) -> str:
    """The examples section; its tiles are written to ``out_dir/examples/``."""
    if not man["data"]:
        return "<p class=note>No examples: the data stage is missing.</p>"
    index = DatasetIndex.load(work_dir / "data")
    have = {k: bool(man[k]) for k in ("heatmaps", "saliency", "seeds", "segmenter")}
    split, ids = example_ids(index, work_dir, man, have, n)
    if not ids:
        return "<p class=note>No examples: no images with heatmaps and seeds.</p>"
    images = [index.read_image(i) for i in ids]
    seeds = [read_label_png(work_dir / "seeds" / "labels" / f"{i}.png") if have["seeds"] else None
             for i in ids]
    notes, preds, grown = [], None, None
    if have["segmenter"]:
        try:
            preds, grown, (fg, bg) = segmenter_outputs(cfg, work_dir, index, ids, images, seeds, device)
            if have["seeds"]:
                notes.append(f"grown seeds: DSRG region growing (thresholds {fg}/{bg}) of the seeds "
                             "on the final segmenter's P at image resolution (an illustration; "
                             "training grows on the output grid with the network of the moment).")
        except Exception as exc:  # noqa: BLE001
            notes.append(f"segmenter predictions unavailable: {type(exc).__name__}: {exc}")
    cols = example_columns(have, preds, grown, notes)
    rows = []
    for k, img_id in enumerate(ids):
        tiles = example_tiles(k, img_id, images[k], index, work_dir, have, cols, seeds, grown, preds)
        cells = [f"{esc(img_id)}<br><span class=note>" + esc(", ".join(index.classes[c] for c in index.labels(img_id)))
                 + "</span>"]
        for j, c in enumerate(cols):
            name = f"{k:02d}_{j}.png"
            save_rgb(out_dir / "examples" / name, tile(tiles[c], smooth=c in ("image", "heatmap", "λ", "saliency")))
            cells.append(f"<img src='examples/{name}' alt='{esc(c)} {esc(img_id)}'>")
        rows.append(cells)
    return (f"<p class=note>{len(ids)} {esc(split)} images. " + " ".join(esc(n) for n in notes) + "</p>"
            + f"<p class=note>{palette_legend(index.classes)}</p>" + table(["id"] + cols, rows, left=len(cols) + 1))
