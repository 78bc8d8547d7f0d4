"""Weakly-supervised localisation: exact box search, CAM baseline, IoU / CorLoc / top-1 loc,
and the `localize` stage end to end on a tiny synthetic dataset."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.localize import (CorLocAccumulator, Top1LocAccumulator, box_iou, box_mass,
                               cam_baseline_box, from_voc, smallest_box_holding_mass, to_voc,
                               topk_lambda)
from stage_helpers import tiny_work_dir


pytestmark = pytest.mark.usefixtures("one_thread")


def _area(box):
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def _brute_min_area(w: np.ndarray, fraction: float) -> int:
    """Minimal area over all rectangles holding >= fraction (same 1e-9 round-off guard)."""
    H, W = w.shape
    S = np.zeros((H + 1, W + 1))
    S[1:, 1:] = w.cumsum(0).cumsum(1)
    need = fraction * w.sum() * (1 - 1e-9)
    best = H * W
    for t in range(H):
        for b in range(t, H):
            for left in range(W):
                for r in range(left, W):
                    if S[b + 1, r + 1] - S[t, r + 1] - S[b + 1, left] + S[t, left] >= need:
                        best = min(best, (b - t + 1) * (r - left + 1))
                        break      # wider windows from this left are larger
    return best


def test_box_search_matches_brute_force():
    rng = np.random.default_rng(0)
    fractions = (0.98, 0.5, 0.8, 1.0, 0.3, 0.9)
    checked = 0
    for i in range(160):
        H, W = (int(v) for v in rng.integers(1, 13, 2))
        kind = i % 5
        if kind == 0:
            w = rng.random((H, W))
        elif kind == 1:                                   # small integers: many ties, zeros
            w = rng.integers(0, 3, (H, W)).astype(float)
        elif kind == 2:                                   # sparse
            w = rng.random((H, W)) * (rng.random((H, W)) < 0.2)
        elif kind == 3:                                   # uniform: maximal ties
            w = np.ones((H, W))
        else:                                             # peaked, like a heatmap
            y, x = np.mgrid[:H, :W]
            w = np.exp(-((y - rng.uniform(0, H)) ** 2 + (x - rng.uniform(0, W)) ** 2) / rng.uniform(1, 20))
        if w.sum() == 0:
            continue
        f = fractions[i % len(fractions)]
        box = smallest_box_holding_mass(w, f)
        x1, y1, x2, y2 = box
        assert 0 <= x1 <= x2 < W and 0 <= y1 <= y2 < H
        assert box_mass(w, box) >= f * w.sum() * (1 - 1e-9)
        assert _area(box) == _brute_min_area(w, f), (i, H, W, f)
        checked += 1
    assert checked >= 100


def test_box_search_edge_cases():
    assert smallest_box_holding_mass(np.zeros((4, 5)), 0.98) == (0, 0, 4, 3)   # no mass: image
    w = np.zeros((6, 7))
    w[2, 5] = 3.0
    assert smallest_box_holding_mass(w, 0.98) == (5, 2, 5, 2)
    w[0, 0] = -10.0                                       # negatives count as 0
    w[4, 1] = np.nan
    assert smallest_box_holding_mass(w, 0.98) == (5, 2, 5, 2)
    assert _area(smallest_box_holding_mass(np.ones((10, 10)), 0.9)) == 90
    assert smallest_box_holding_mass(np.ones((10, 10)), 0.98) == (0, 0, 9, 9)  # 98 px: no 98-px box
    with pytest.raises(ValueError):
        smallest_box_holding_mass(np.ones((3, 3)), 0.0)


def test_98_percent_rule_on_hand_made_maps():
    w = np.zeros((10, 10))
    w[2:5, 3:7] = 1.0                 # block of 12, rows 2-4, cols 3-6
    w[9, 9] = 0.2                     # 12 / 12.2 = 98.4% in the block: the block is the box
    assert smallest_box_holding_mass(w, 0.98) == (3, 2, 6, 4)
    w[9, 9] = 0.3                     # 12 / 12.3 = 97.6%: the far pixel must be reached
    assert smallest_box_holding_mass(w, 0.98) == (3, 2, 9, 9)
    assert smallest_box_holding_mass(w, 0.95) == (3, 2, 6, 4)
    # a Gaussian blob: the 98% box is centred on it and holds >= 98%
    y, x = np.mgrid[:40, :60]
    g = np.exp(-((y - 15) ** 2 / 20 + (x - 40) ** 2 / 50))
    box = smallest_box_holding_mass(g, 0.98)
    assert box_mass(g, box) >= 0.98 * g.sum()
    assert abs((box[0] + box[2]) / 2 - 40) <= 0.5 and abs((box[1] + box[3]) / 2 - 15) <= 0.5
    assert box[2] - box[0] > box[3] - box[1]             # wider along the wider axis


def test_box_search_scales_to_image_size():
    rng = np.random.default_rng(1)
    w = rng.random((120, 160)) ** 6
    box = smallest_box_holding_mass(w, 0.98)
    assert box_mass(w, box) >= 0.98 * w.sum() * (1 - 1e-9)
    # removing a row or column at any side loses the property (local minimality)
    x1, y1, x2, y2 = box
    for b in ((x1 + 1, y1, x2, y2), (x1, y1 + 1, x2, y2), (x1, y1, x2 - 1, y2), (x1, y1, x2, y2 - 1)):
        assert box_mass(w, b) < 0.98 * w.sum()


def test_topk_lambda():
    lc = np.stack([np.full((2, 3), v) for v in (1.0, 2.0, 4.0)])
    m, chosen = topk_lambda(lc, scores=[0.1, 0.9, 0.5], k=2)
    assert chosen == [1, 2] and np.allclose(m, 6.0)
    m, chosen = topk_lambda(lc, scores=[0.1, 0.9, 0.5], k=5)      # capped at K
    assert sorted(chosen) == [0, 1, 2] and np.allclose(m, 7.0)
    m, chosen = topk_lambda(lc, scores=[0.1, 0.9, 0.5], k=5, classes=[0])
    assert chosen == [0] and np.allclose(m, 1.0)


def test_cam_baseline_box():
    h = np.zeros((20, 30))
    h[2:5, 2:4] = 1.0                 # small strong blob (6 px)
    h[10:18, 10:25] = 0.5             # large weaker blob (120 px)
    h[0, 29] = 0.1                    # below 0.2 of the max: ignored
    assert cam_baseline_box(h, 0.2) == (10, 10, 24, 17)
    assert cam_baseline_box(h, 0.6) == (2, 2, 3, 4)      # the weak blob drops out
    assert cam_baseline_box(h - 5.0, 0.2) == (10, 10, 24, 17)   # min-max: an offset changes nothing
    assert cam_baseline_box(np.full((4, 6), 2.0)) == (0, 0, 5, 3)
    d = np.zeros((5, 5))
    d[1, 1] = d[2, 2] = d[3, 3] = 1.0                     # diagonal: one 8-connected component
    assert cam_baseline_box(d) == (1, 1, 3, 3)


def test_box_iou_and_voc_coordinates():
    assert box_iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert box_iou((0, 0, 9, 9), (10, 0, 19, 9)) == 0.0
    assert box_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 0, 0), (0, 0, 1, 1)) == pytest.approx(0.25)          # inclusive pixels
    assert to_voc((0, 1, 2, 3)) == (1, 2, 3, 4) and from_voc((1, 2, 3, 4)) == (0, 1, 2, 3)


def test_corloc_and_top1_loc_on_hand_made_boxes():
    # image A: class 1 (two boxes), class 2; image B: class 1; image C: class 3
    gt_a = [(1, 0, 0, 9, 9), (1, 20, 20, 29, 29), (2, 40, 0, 49, 9)]
    gt_b = [(1, 0, 0, 19, 19)]
    gt_c = [(3, 5, 5, 14, 14)]
    cl = CorLocAccumulator(0.5)
    assert cl.add({1: (21, 21, 29, 29), 2: (0, 0, 9, 9)}, gt_a) == {1: True, 2: False}
    assert cl.add({1: (0, 0, 9, 9)}, gt_b) == {1: False}           # IoU 0.25
    assert cl.add({}, gt_c) == {3: False}                          # no prediction: miss
    res = cl.result()
    assert res["per_class"] == {1: 0.5, 2: 0.0, 3: 0.0}
    assert res["corloc"] == pytest.approx(0.5 / 3) and res["pairs"] == 4 and res["hits"] == 1

    t1 = Top1LocAccumulator(0.5)
    assert t1.add(1, (20, 20, 29, 29), gt_a) is True               # right class, hits 2nd box
    assert t1.add(2, (0, 0, 19, 19), gt_b) is False                # wrong class, perfect box
    assert t1.add(3, (5, 5, 13, 13), gt_c) is True                 # IoU 81/100
    assert t1.add(1, (0, 0, 5, 5), []) is False                    # no GT: not counted
    r = t1.result()
    assert r["images"] == 3 and r["top1_loc"] == pytest.approx(2 / 3)
    assert r["top1_cls"] == pytest.approx(2 / 3)
    assert CorLocAccumulator().result()["corloc"] is None


# ------------------------------------------------------------------ the stage, end to end
BASE = Path(__file__).resolve().parent.parent / "configs" / "_base_"
EXP = f"_base_ = {[str(BASE / 'classifier_vgg16_ep.py')]!r}\n" + textwrap.dedent("""
    experiment = dict(name="loc_test", seed=0, device="cpu")
    data = dict(dataset="synthetic", root=None, sbd_root=None, label_source="xml",
                synthetic=dict(seed=0, image_size=48, n_train=4, n_val=4, n_test=2, n_classes=3))
    classifier = dict(model=dict(backbone=dict(width=0.125, batch_norm=True),
                                 pooling=dict(type="ep"), pretrained=None))
    localize = dict(split="val", mass=0.98, topk=5, use_image_classes=False, cam_threshold=0.2,
                    iou_threshold=0.5, size=40, scales=(1.0,), flip=True, pooling=None,
                    max_images=None, n_overlays=2)
""")



def test_localize_stage_end_to_end(tmp_path):
    from stages.common import main_for

    exp, wd, cfg = tiny_work_dir(tmp_path, EXP)
    gen = json.loads((wd / "data" / "manifest.json").read_text())["metrics"]["synthetic"]
    assert gen["voc_root"] == "synthetic/VOC2012" and (wd / "data" / gen["voc_root"]).is_dir()   # not .partial/
    man = main_for("stages.localize", ["--exp", str(exp), "--work-dir", str(wd)])
    out = wd / "localize"
    boxes = json.loads((out / "boxes.json").read_text())
    ids = (wd / "data" / "lists" / "val.txt").read_text().split()
    assert sorted(boxes) == sorted(ids) and len(ids) == 4
    for rec in boxes.values():
        H, W = rec["size"]
        assert (H, W) == (48, 48)
        assert 1 <= rec["top1"] <= 3 and len(rec["topk"]) == 3            # top-5 capped at K = 3
        for box in [rec["lambda_topk"], *rec["lambda_c"].values(), *rec["cam"].values()]:
            x1, y1, x2, y2 = box                                          # VOC 1-based
            assert 1 <= x1 <= x2 <= W and 1 <= y1 <= y2 <= H
        gt_classes = {str(g[0]) for g in rec["gt"]}
        assert rec["gt"] and gt_classes <= set(rec["lambda_c"]) and gt_classes <= set(rec["cam"])
    met = man["metrics"]
    for m in ("lambda_topk", "lambda_c", "cam"):
        assert 0.0 <= met["corloc"][m] <= 1.0 and 0.0 <= met["top1_loc"][m] <= 1.0
        assert met["top1_loc"][m] <= met["top1_cls"]
    assert met == json.loads((out / "metrics.json").read_text())
    assert man["counts"] == {"images": 4, "scored": 4, "no_gt_boxes": 0, "overlays": 2}
    pngs = sorted((out / "overlays").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(ids[:2])
    with Image.open(pngs[0]) as im:
        assert im.mode == "RGB" and im.size[0] > 3 * 48

    # mass 1.0 on strictly positive λ^c maps: the λ boxes are the whole image
    man = main_for("stages.localize", ["--exp", str(exp), "--work-dir", str(wd),
                                       "--opts", "localize.mass=1.0", "localize.n_overlays=0"])
    boxes = json.loads((out / "boxes.json").read_text())
    assert all(rec["lambda_topk"] == [1, 1, 48, 48] for rec in boxes.values())
    assert man["counts"]["overlays"] == 0
