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
import torch
import torch.nn.functional as F

from pipeline.transforms import parse_size, resize_image, to_tensor
from pipeline.heatmaps import aggregate_heatmaps, class_specific_lambda
from pipeline.data.io_utils import write_json_atomic
from pipeline.localize import (CorLocAccumulator, Top1LocAccumulator, cam_baseline_box,
                               from_voc, smallest_box_holding_mass, to_voc, topk_lambda)
from pipeline.data.files import save_rgb
from pipeline.visualize import heatmap_rgb, panel_row
from stages.common import load_inference_classifier, main_for, split_ids

STAGE = "localize"
UPSTREAM = ("data", "classifier")
METHODS = ("lambda_topk", "lambda_c", "cam")
COLOURS = {"gt": (255, 0, 0), "lambda_topk": (0, 255, 0), "cam": (255, 255, 0)}


@torch.no_grad()
def infer(net, image: np.ndarray, size, scales, flip: bool, device) -> dict:
    """Maps of one image at its own size: ``cam`` (K, H, W), ``lambda_c`` (K, H, W), ``lam``
    (H, W) as float32 numpy, and ``scores`` (K,) = mean logit over the views."""
    H, W = image.shape[:2]
    hw = parse_size(size)
    x = to_tensor(resize_image(image, hw) if hw and hw != (H, W) else image)[None].to(device)
    K = net.num_classes
    logits = []

    def forward(v):
        out = net(v)
        logits.append(out["logits"].float())
        cam, lam = out["cam"].float(), out["lam"].float()
        return {"cam": torch.cat([cam, class_specific_lambda(lam, cam.softmax(dim=1))], 1), "lam": lam}

    agg = aggregate_heatmaps(forward, x, scales=scales, flip=flip)
    maps = torch.cat([agg["cam"], agg["lam"][:, None]], 1)
    # input frame → image: the inverse of the input's resize (half-pixel, as OpenCV's); the grid
    # → input step used the stride-8 geometry (aggregate_heatmaps, pipeline.geometry)
    maps = F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False)[0].cpu().numpy()
    return {"cam": maps[:K], "lambda_c": np.clip(maps[K:2 * K], 0, None), "lam": maps[2 * K],
            "scores": torch.stack(logits).mean(0)[0].cpu().numpy()}


def localize_image(maps: dict, labels: list[int], sec, extra_classes=()) -> dict:
    """Boxes (0-based) of one image from :func:`infer` maps; classes are dataset indices.
    Per-class boxes are made for ``labels`` ∪ ``extra_classes`` ∪ {top-1 class}."""
    K = maps["cam"].shape[0]
    scores = maps["scores"]
    top1 = int(np.argmax(scores)) + 1
    use_img = sec.use_image_classes and labels
    lt, chosen = topk_lambda(maps["lambda_c"], scores, sec.topk,
                             classes=[c - 1 for c in labels] if use_img else None)
    mass, thr = sec.mass, sec.cam_threshold
    box_topk = smallest_box_holding_mass(lt, mass)
    classes = sorted(set(labels) | {int(c) for c in extra_classes} | {top1})
    return {"top1": top1, "topk": [c + 1 for c in chosen], "lambda_topk_map": lt,
            "lambda_topk": box_topk,
            "lambda_c": {c: smallest_box_holding_mass(maps["lambda_c"][c - 1], mass) for c in classes},
            "cam": {c: cam_baseline_box(maps["cam"][c - 1], thr) for c in classes},
            "scores": {c + 1: float(scores[c]) for c in range(K)}}


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


def run(ctx) -> dict:
    sec = ctx.section
    if ctx.rank != 0:
        return {}
    index, split, ids = split_ids(ctx)
    if sec.max_images is not None:
        ids = ids[:sec.max_images]
    net, _ = load_inference_classifier(ctx, index, sec)
    scales, flip, thr = sec.scales, sec.flip, sec.iou_threshold
    ctx.log(f"{len(ids)} {split} images; pooling {net.pooling_name}; size {sec.size}, "
            f"scales {scales}, flip {flip}; mass {sec.mass}, topk {sec.topk}"
            f" (image classes: {sec.use_image_classes}), CAM threshold {sec.cam_threshold}")
    corloc = {m: CorLocAccumulator(thr) for m in METHODS}
    top1 = {m: Top1LocAccumulator(thr) for m in METHODS}
    records, n_overlays, no_gt, t_box = {}, sec.n_overlays, 0, 0.0
    (ctx.out / "overlays").mkdir(exist_ok=True)
    for i, img_id in enumerate(ids):
        image = index.read_image(img_id)
        maps = infer(net, image, sec.size, scales, flip, ctx.device)
        try:
            labels = index.labels(img_id)
        except KeyError:                    # e.g. the test split: no image-level labels
            labels = []
        gt = [(g[0], *from_voc(g[1:])) for g in index.boxes(img_id)]
        t0 = time.perf_counter()
        res = localize_image(maps, labels, sec, extra_classes=[g[0] for g in gt])
        t_box += time.perf_counter() - t0
        if gt:
            gt_classes = {g[0] for g in gt}
            corloc["lambda_topk"].add({c: res["lambda_topk"] for c in gt_classes}, gt)
            corloc["lambda_c"].add(res["lambda_c"], gt)
            corloc["cam"].add(res["cam"], gt)
            t = res["top1"]
            top1["lambda_topk"].add(t, res["lambda_topk"], gt)
            top1["lambda_c"].add(t, res["lambda_c"][t], gt)
            top1["cam"].add(t, res["cam"][t], gt)
        else:
            no_gt += 1
        records[img_id] = {
            "size": list(image.shape[:2]), "top1": res["top1"], "topk": res["topk"],
            "scores": {str(c): round(s, 5) for c, s in res["scores"].items()},
            "lambda_topk": to_voc(res["lambda_topk"]),
            "lambda_c": {str(c): to_voc(b) for c, b in res["lambda_c"].items()},
            "cam": {str(c): to_voc(b) for c, b in res["cam"].items()},
            "gt": [[g[0], *to_voc(g[1:])] for g in gt]}
        if i < n_overlays:
            res["cam_map"] = maps["cam"][res["top1"] - 1]
            save_rgb(ctx.out / "overlays" / f"{img_id}.png", overlay(image, res, gt, index.classes))
        if (i + 1) % max(100, len(ids) // 10) == 0:
            ctx.log(f"{i + 1}/{len(ids)} images")
    names = index.classes
    metrics = {"corloc": {}, "top1_loc": {}, "corloc_per_class": {}, "iou_threshold": thr}
    for m in METHODS:
        cr, tr = corloc[m].result(), top1[m].result()
        metrics["corloc"][m] = cr["corloc"]
        metrics["top1_loc"][m] = tr["top1_loc"]
        metrics["corloc_per_class"][m] = {names[c]: v for c, v in cr["per_class"].items()}
        metrics["top1_cls"] = tr["top1_cls"]
    scored = top1["cam"].n
    metrics["box_search_ms_per_image"] = 1000 * t_box / max(len(ids), 1)
    write_json_atomic(ctx.out / "boxes.json", records)
    write_json_atomic(ctx.out / "metrics.json", metrics)

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"
    for m in METHODS:
        ctx.log(f"{m:12s} CorLoc {pct(metrics['corloc'][m])}  top-1 loc {pct(metrics['top1_loc'][m])}")
    ctx.log(f"top-1 classification {pct(metrics['top1_cls'])} on {scored} images with boxes; "
            f"box search {metrics['box_search_ms_per_image']:.1f} ms/image")
    return {"counts": {"images": len(ids), "scored": scored, "no_gt_boxes": no_gt,
                       "overlays": min(n_overlays, len(ids))},
            "metrics": metrics}


if __name__ == "__main__":
    main_for(__name__)
