"""Stage `localize`: weakly-supervised object localisation with the trained classifier.

EP paper (Wan et al. ICCV 2019) §4.3, Eq. 5; docs/ALGORITHMS.md §12. Per image of
``localize.split`` (val), resized to ``size`` for the network (averaged over ``scales`` / flips
like the heatmaps stage) and mapped back to the image's own size (bilinear):

* class-specific entropy weights ``λ^c = λ · p̂(c)`` (p̂ = softmax over the K classes of the
  localized predictions, computed at feature resolution, then upsampled);
* ``λ^top-k = Σ_{c ∈ top-k} λ^c`` over the ``min(topk, K)`` best-scored classes (or, with
  ``use_image_classes``, the image's own classes — the multi-label *choice* of
  docs/ALGORITHMS.md §12);
* boxes = the smallest rectangles holding ``mass`` (98%) of a map
  (:func:`pipeline.localize.smallest_box_holding_mass`, exact, at image resolution):
  ``lambda_topk`` — one box from λ^top-k, used for every class (the paper's method);
  ``lambda_c`` — one box per class from its own λ^c;
* ``cam`` — the CAM baseline of Zhou et al.: largest connected component of
  min-max normalised ``CAM_c >= cam_threshold`` (0.2), per class.

Scores against the XML boxes (difficult objects kept; images without boxes are skipped):
CorLoc (per class: images containing c whose box for c has IoU >= ``iou_threshold`` with a GT
box of c, averaged over classes) and top-1 localisation (top-1 class is one of the image's
classes and its box hits a GT box of that class), for each of the three methods.

Writes ``boxes.json`` (per id: VOC 1-based boxes, top-1 / top-k classes, scores, GT),
``metrics.json`` and ``overlays/<id>.png`` for the first ``n_overlays`` ids: image with GT
(red), λ^top-k box (green) and CAM box of the top-1 class (yellow) | λ^top-k | CAM (top-1).
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from pipeline.data.files import save_rgb
from pipeline.data.io_utils import write_json_atomic
from pipeline.heatmaps import image_heatmaps
from pipeline.localize import (CorLocAccumulator, Top1LocAccumulator, from_voc, localize_image,
                               to_voc)
from pipeline.visualize import heatmap_rgb, panel_row
from stages.common import load_inference_classifier, main_for, split_ids

STAGE = "localize"
UPSTREAM = ("data", "classifier")
METHODS = ("lambda_topk", "lambda_c", "cam")
COLOURS = {"gt": (255, 0, 0), "lambda_topk": (0, 255, 0), "cam": (255, 255, 0)}


def draw_boxes(image: np.ndarray, boxes) -> np.ndarray:
    """``boxes`` = [(0-based box, RGB colour)], drawn 1 px wide."""
    out = np.ascontiguousarray(image.copy())
    for box, colour in boxes:
        x1, y1, x2, y2 = (int(v) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), tuple(int(c) for c in colour), 1)
    return out


def overlay(image, res, gt, class_names) -> np.ndarray:
    top1 = res["top1"]
    boxes = [(g[1:], COLOURS["gt"]) for g in gt]
    boxes += [(res["lambda_topk"], COLOURS["lambda_topk"]), (res["cam"][top1], COLOURS["cam"])]
    lt = res["lambda_topk_map"]
    cam = res["cam_map"] - res["cam_map"].min()           # min-max, as the CAM baseline
    return panel_row([draw_boxes(image, boxes), heatmap_rgb(lt / max(lt.max(), 1e-12)),
                      heatmap_rgb(cam / max(cam.max(), 1e-12))],
                     ["GT red, lam-topk green, CAM yellow", "lambda top-k",
                      f"CAM {class_names[top1]}"])


class LocScores:
    """CorLoc and top-1 localisation of the three methods over the images with GT boxes."""

    def __init__(self, thr: float):
        self.thr = thr
        self.corloc = {m: CorLocAccumulator(thr) for m in METHODS}
        self.top1 = {m: Top1LocAccumulator(thr) for m in METHODS}

    def add(self, res: dict, gt: list) -> None:
        gt_classes = {g[0] for g in gt}
        self.corloc["lambda_topk"].add({c: res["lambda_topk"] for c in gt_classes}, gt)
        self.corloc["lambda_c"].add(res["lambda_c"], gt)
        self.corloc["cam"].add(res["cam"], gt)
        t = res["top1"]
        self.top1["lambda_topk"].add(t, res["lambda_topk"], gt)
        self.top1["lambda_c"].add(t, res["lambda_c"][t], gt)
        self.top1["cam"].add(t, res["cam"][t], gt)

    @property
    def scored(self) -> int:
        return self.top1["cam"].n

    def metrics(self, names: list[str]) -> dict:
        metrics = {"corloc": {}, "top1_loc": {}, "corloc_per_class": {}, "iou_threshold": self.thr}
        for m in METHODS:
            cr, tr = self.corloc[m].result(), self.top1[m].result()
            metrics["corloc"][m] = cr["corloc"]
            metrics["top1_loc"][m] = tr["top1_loc"]
            metrics["corloc_per_class"][m] = {names[c]: v for c, v in cr["per_class"].items()}
            metrics["top1_cls"] = tr["top1_cls"]
        return metrics


def box_record(image, res: dict, gt: list) -> dict:
    """One image's entry of ``boxes.json`` (VOC 1-based boxes)."""
    return {"size": list(image.shape[:2]), "top1": res["top1"], "topk": res["topk"],
            "scores": {str(c): round(s, 5) for c, s in res["scores"].items()},
            "lambda_topk": to_voc(res["lambda_topk"]),
            "lambda_c": {str(c): to_voc(b) for c, b in res["lambda_c"].items()},
            "cam": {str(c): to_voc(b) for c, b in res["cam"].items()},
            "gt": [[g[0], *to_voc(g[1:])] for g in gt]}


def image_labels_and_boxes(index, img_id: str) -> tuple[list[int], list]:
    """The image's classes ([] without image-level labels, e.g. the test split) and its GT boxes
    (class, 0-based box)."""
    try:
        labels = index.labels(img_id)
    except KeyError:
        labels = []
    return labels, [(g[0], *from_voc(g[1:])) for g in index.boxes(img_id)]


def log_scores(ctx, metrics: dict, scored: int) -> None:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"
    for m in METHODS:
        ctx.log(f"{m:12s} CorLoc {pct(metrics['corloc'][m])}  top-1 loc {pct(metrics['top1_loc'][m])}")
    ctx.log(f"top-1 classification {pct(metrics['top1_cls'])} on {scored} images with boxes; "
            f"box search {metrics['box_search_ms_per_image']:.1f} ms/image")


def run(ctx) -> dict:
    sec = ctx.section
    if ctx.rank != 0:
        return {}
    index, split, ids = split_ids(ctx)
    ids = ids if sec.max_images is None else ids[:sec.max_images]
    net, _ = load_inference_classifier(ctx, index, sec)
    ctx.log(f"{len(ids)} {split} images; pooling {net.pooling_name}; size {sec.size}, "
            f"scales {sec.scales}, flip {sec.flip}; mass {sec.mass}, topk {sec.topk}"
            f" (image classes: {sec.use_image_classes}), CAM threshold {sec.cam_threshold}")
    box_args = dict(topk=sec.topk, mass=sec.mass, cam_threshold=sec.cam_threshold,
                    use_image_classes=sec.use_image_classes)
    scores, records, no_gt, t_box = LocScores(sec.iou_threshold), {}, 0, 0.0
    (ctx.out / "overlays").mkdir(exist_ok=True)
    for i, img_id in enumerate(ids):
        image = index.read_image(img_id)
        maps = image_heatmaps(net, image, sec.size, sec.scales, sec.flip, ctx.device)
        labels, gt = image_labels_and_boxes(index, img_id)
        t0 = time.perf_counter()
        res = localize_image(maps, labels, extra_classes=[g[0] for g in gt], **box_args)
        t_box += time.perf_counter() - t0
        if gt:
            scores.add(res, gt)
        no_gt += not gt
        records[img_id] = box_record(image, res, gt)
        if i < sec.n_overlays:
            res["cam_map"] = maps["cam"][res["top1"] - 1]
            save_rgb(ctx.out / "overlays" / f"{img_id}.png", overlay(image, res, gt, index.classes))
        if (i + 1) % max(100, len(ids) // 10) == 0:
            ctx.log(f"{i + 1}/{len(ids)} images")
    metrics = {**scores.metrics(index.classes), "box_search_ms_per_image": 1000 * t_box / max(len(ids), 1)}
    write_json_atomic(ctx.out / "boxes.json", records)
    write_json_atomic(ctx.out / "metrics.json", metrics)
    log_scores(ctx, metrics, scores.scored)
    return {"counts": {"images": len(ids), "scored": scores.scored, "no_gt_boxes": no_gt,
                       "overlays": min(sec.n_overlays, len(ids))},
            "metrics": metrics}


if __name__ == "__main__":
    main_for(__name__)
