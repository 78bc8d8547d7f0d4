"""Tests for pipeline.metrics: confusion-matrix IoU, AP, seed quality."""
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.metrics import ConfusionMatrix, SeedQuality, average_precision, format_table

VENV_STAMP = Path(__file__).resolve().parents[1] / ".venv" / ".stamp"


def test_hand_made_confusion_matrix():
    gt = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [1, 3, 0]])  # the 3 sits on an ignored pixel
    cm = ConfusionMatrix(4)
    cm.update(pred, gt)
    assert cm.mat.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    s = cm.summary(["bg", "a", "b", "c"])
    assert s["IoU"][0] == pytest.approx(1 / 3)
    assert s["IoU"][1] == pytest.approx(2 / 3)
    assert s["IoU"][2] == 0.0
    assert math.isnan(s["IoU"][3])  # absent from GT and prediction
    assert s["present"] == [True, True, True, False]
    assert s["mIoU"] == pytest.approx(1 / 3)
    assert s["aAcc"] == pytest.approx(3 / 5)
    assert s["mAcc"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert s["fwIoU"] == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3)
    table = format_table(s)
    assert "bg" in table and "33.33" in table
    assert [ln for ln in table.splitlines() if ln.startswith("c ")][0].split()[1] == "-"


def test_class_only_predicted_counts_with_iou_zero():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 2, 2]), np.array([0, 0, 0, 0]))
    s = cm.summary()
    assert s["IoU"][0] == pytest.approx(0.5) and s["IoU"][2] == 0.0 and math.isnan(s["IoU"][1])
    assert s["mIoU"] == pytest.approx(0.25)


def test_invalid_values_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(np.array([3]), np.array([0]))
    with pytest.raises(ValueError):
        cm.update(np.array([255]), np.array([255]))  # pred 255 refused even on ignored GT
    with pytest.raises(ValueError):
        cm.update(np.array([0]), np.array([7]))
    with pytest.raises(ValueError):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))


def _random_pairs(n_cls, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):
        gt = rng.integers(0, n_cls, (23, 31))
        gt[rng.random(gt.shape) < 0.1] = 255
        gt[gt == n_cls - 1] = 0  # last class absent from GT ...
        pred = rng.integers(0, n_cls - 1, gt.shape)  # ... and from the prediction
        pred = np.where(rng.random(gt.shape) < 0.5, np.where(gt == 255, 0, gt), pred)
        out.append((pred, gt))
    return out


def test_miou_matches_independent_computation():
    n = 6
    pairs = _random_pairs(n)
    cm = ConfusionMatrix(n)
    for p, g in pairs:
        cm.update(p, g)
    s = cm.summary()
    p = np.concatenate([x.ravel() for x, _ in pairs])
    g = np.concatenate([y.ravel() for _, y in pairs])
    v = g != 255
    ious = []
    for c in range(n):
        inter = np.sum((p == c) & (g == c) & v)
        union = np.sum(((p == c) | (g == c)) & v)
        if union:
            ious.append(inter / union)
    assert math.isnan(s["IoU"][n - 1])
    assert s["mIoU"] == pytest.approx(np.mean(ious), abs=1e-12)
    assert s["aAcc"] == pytest.approx(np.mean(p[v] == g[v]))


def test_miou_matches_mmseg(mm_edge):
    import torch
    from mmseg.evaluation.metrics import IoUMetric

    n = 6
    pairs = _random_pairs(n, seed=1)
    cm = ConfusionMatrix(n)
    areas = []
    for p, g in pairs:
        cm.update(p, g)
        areas.append(IoUMetric.intersect_and_union(torch.from_numpy(p), torch.from_numpy(g), n, 255))
    tot = [sum(a[k] for a in areas) for k in range(4)]
    ref = IoUMetric.total_area_to_metrics(*tot, metrics=["mIoU"], nan_to_num=None)
    s = cm.summary()
    ref_iou = np.asarray(ref["IoU"], dtype=np.float64)
    np.testing.assert_allclose(np.array(s["IoU"]), ref_iou, equal_nan=True, atol=1e-6)
    assert s["mIoU"] == pytest.approx(float(np.nanmean(ref_iou)), abs=1e-6)
    assert s["aAcc"] == pytest.approx(float(ref["aAcc"]), abs=1e-6)


def test_reduce_is_noop_without_distributed():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    before = cm.mat.copy()
    cm.reduce_()
    assert (cm.mat == before).all()


def test_reduce_single_process_gloo(tmp_path):
    import torch.distributed as dist
    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        cm = ConfusionMatrix(2)
        cm.update(np.array([0, 1, 1]), np.array([0, 1, 0]))
        cm.reduce_()
        assert cm.mat.tolist() == [[1, 1], [0, 1]]
    finally:
        dist.destroy_process_group()


def test_average_precision_hand_example():
    scores = np.array([[0.9, 0.8, 0.3], [0.8, 0.4, 0.2], [0.7, 0.35, 0.1], [0.6, 0.1, 0.0]])
    targets = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]])
    r = average_precision(scores, targets)
    assert r["AP"][0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert r["AP"][1] == pytest.approx(0.5 * 1 + 0.5 * 2 / 4)
    assert math.isnan(r["AP"][2])  # no positives: skipped
    assert r["mAP"] == pytest.approx((5 / 6 + 0.75) / 2)


def test_average_precision_ties_form_one_threshold():
    r = average_precision(np.array([[0.5], [0.5], [0.1]]), np.array([[0], [1], [1]]))
    assert r["AP"][0] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_seed_quality_hand_example():
    gt = np.array([[0, 0, 1, 1], [1, 255, 2, 2]])
    seeds = np.array([[0, 255, 1, 2], [255, 1, 2, 255]])
    whole = SeedQuality(3)
    whole.update(seeds, gt)
    s = whole.summary()
    assert s["precision"] == pytest.approx(3 / 4)
    assert s["recall"] == pytest.approx(3 / 7)
    assert s["fraction_labelled"] == pytest.approx(4 / 7)
    assert s["bg_precision"] == 1.0 and s["fg_precision"] == pytest.approx(2 / 3)
    assert s["IoU"] == pytest.approx([1.0, 0.5, 0.5])
    assert s["mIoU"] == pytest.approx(2 / 3)
    q = SeedQuality(3)
    q.update(seeds[:1], gt[:1])
    q.update(seeds[1:], gt[1:])
    assert q.summary()["precision"] == s["precision"] and q.summary()["IoU"] == s["IoU"]
