"""Tests for pipeline.seeds: seed rules, argmax pseudo-masks, multi-hot cues, DSRG cue export."""
import pickle

import numpy as np
import pytest

from pipeline.data.files import export_dsrg_cues
from pipeline.seeds import background_cues, make_seeds, pseudo_mask_argmax, seeds_to_multihot

I = 255
A = np.array([[1.0, 0.8, 0.6, 0.0], [0.75, 0.2, 0.0, 0.0]])   # class 3
B = np.array([[0.0, 0.9, 1.0, 0.71], [0.0, 0.0, 0.0, 0.1]])   # class 5
SAL = np.array([[0.5, 0.5, 0.5, 0.03], [0.5, 0.01, 0.05, 0.5]])
BG = dict(bg_source="saliency", bg_sal=0.06, bg_cam=0.05)   # EP paper §4.4; IRN's 0.05
RULE = dict(fg_top=0.3, fg_mode="relative", overlap="max", **BG)


def seeds(maps, classes, sal, **changes):
    return make_seeds(maps, classes, sal, **{**RULE, **changes})


def cues(maps, sal, **changes):
    return background_cues(maps, sal, **{**BG, **changes})


def test_relative_overlap_max():
    out = seeds(np.stack([A, B]), [3, 5], SAL, fg_top=0.3, fg_mode="relative", overlap="max")
    # (0,1): A .8 vs B .9 -> 5; (0,3): B fg and bg -> 255; (1,3) unclaimed, salient -> 255
    assert out.dtype == np.uint8
    assert out.tolist() == [[3, 5, 5, I], [3, 0, 0, I]]


def test_relative_overlap_ignore():
    out = seeds(np.stack([A, B]), [3, 5], SAL, overlap="ignore")
    assert out.tolist() == [[3, I, 5, I], [3, 0, 0, I]]


def test_exact_tie_under_max_is_ignored():
    a = A.copy()
    a[0, 1] = 0.9
    out = seeds(np.stack([a, B]), [3, 5], SAL, overlap="max")
    assert out[0, 1] == I and out[0, 0] == 3


def test_rank_mode_and_ties():
    out = seeds(np.stack([A, B]), [3, 5], SAL, fg_top=0.25, fg_mode="rank")
    # n = 2 pixels per class: A -> (0,0),(0,1); B -> (0,2),(0,1); overlap at (0,1) -> B;
    # (0,3) is no longer claimed by B, so its low saliency makes it background
    assert out.tolist() == [[3, 5, 5, 0], [I, 0, 0, I]]
    tied = np.array([[1.0, 1.0, 1.0, 0.0], [0.5, 0.0, 0.0, 0.0]])
    out = seeds(tied[None], [2], np.ones((2, 4)), fg_top=0.25, fg_mode="rank")
    # all pixels tied with the cut value are claimed (3 > n = 2)
    assert out.tolist() == [[2, 2, 2, I], [I, I, I, I]]


def test_rank_with_a_confidence_floor_leaves_an_ignore_zone():
    # top 50 % of A: (0,0) 1.0, (0,1) .8, (1,0) .75, (0,2) .6; the floor 0.7 drops (0,2)
    out = seeds(A[None], [3], np.ones((2, 4)), fg_top=0.5, fg_mode="rank", fg_min=0.7)
    assert out.tolist() == [[3, 3, I, I], [3, I, I, I]]
    same = seeds(A[None], [3], np.ones((2, 4)), fg_top=0.5, fg_mode="rank", fg_min=0.0)
    assert same.tolist() == [[3, 3, 3, I], [3, I, I, I]]
    # the floor is relative to each map's max
    assert (seeds(0.5 * A[None], [3], np.ones((2, 4)), fg_top=0.5, fg_mode="rank", fg_min=0.7) == out).all()


def test_zero_map_claims_nothing_and_bg_only():
    z = np.zeros((2, 4))
    for mode in ("relative", "rank"):
        out = seeds(z[None], [1], SAL, fg_mode=mode)
        assert out.tolist() == [[I, I, I, 0], [I, 0, 0, I]]
    out = seeds(np.zeros((0, 2, 4)), [], SAL)
    assert out.tolist() == [[I, I, I, 0], [I, 0, 0, I]]


def test_bad_arguments():
    with pytest.raises(ValueError):
        seeds(np.stack([A, B]), [3], SAL)
    with pytest.raises(ValueError):
        seeds(A[None], [3], SAL, fg_mode="top")
    with pytest.raises(ValueError):
        seeds(A[None], [3], SAL, overlap="min")


def test_background_from_class_maps_irn_rule():
    # max over A, B: [[1, .9, 1, .71], [.75, .2, 0, .1]]; IRN: background where it is <= 0.05
    cam, veto = cues(np.stack([A, B]), None, bg_source="cam", bg_cam=0.05)
    assert cam.tolist() == [[False, False, False, False], [False, False, True, False]]
    assert (veto == cam).all()
    at_threshold, _ = cues(np.stack([A, B]), None, bg_source="cam", bg_cam=0.1)
    assert at_threshold[1].tolist() == [False, False, True, True]          # 0.1 <= 0.1
    # no class maps: every pixel is background (IRN: only the padded background map)
    assert cues(np.zeros((0, 2, 4)), None, bg_source="cam")[0].all()
    # saliency alone: < 0.06 at (0,3), (1,1), (1,2)
    sal, veto = cues(np.stack([A, B]), SAL, bg_source="saliency", bg_sal=0.06)
    assert sal.tolist() == [[False, False, False, True], [False, True, True, False]]
    assert (veto == sal).all()
    # both: background where both hold (AND), either cue vetoes foreground (OR);
    # class maps <= 0.2 at (1,1), (1,2), (1,3)
    both, veto = cues(np.stack([A, B]), SAL, bg_source="both", bg_sal=0.06, bg_cam=0.2)
    assert both.tolist() == [[False, False, False, False], [False, True, True, False]]
    assert veto.tolist() == [[False, False, False, True], [False, True, True, True]]
    with pytest.raises(ValueError, match="needs a saliency map"):
        cues(A[None], None, bg_source="both")
    with pytest.raises(ValueError, match="bg_source must be one of"):
        cues(A[None], SAL, bg_source="depth")


def test_seeds_with_cam_background():
    # A alone, relative top 30%: fg where A >= 0.7 -> (0,0), (0,1), (1,0); bg where A <= 0.05
    out = seeds(A[None], [3], None, bg_source="cam", bg_cam=0.05)
    assert out.tolist() == [[3, 3, I, 0], [3, I, 0, 0]]
    # 'both' keeps only the background both cues agree on; saliency says (0,3), (1,1), (1,2)
    out = seeds(A[None], [3], SAL, bg_source="both", bg_cam=0.05)
    assert out.tolist() == [[3, 3, I, 0], [3, I, 0, I]]
    # ... and saliency still withdraws a foreground claim the class maps do not call background
    sal = SAL.copy()
    sal[0, 1] = 0.01
    assert seeds(A[None], [3], sal, bg_source="both", bg_cam=0.05)[0, 1] == I
    assert seeds(A[None], [3], sal, bg_source="cam", bg_cam=0.05)[0, 1] == 3
    # rank mode can claim pixels the class map also calls background: those become 255
    m = np.array([[1.0, 0.04, 0.04, 0.0]])
    out = seeds(m[None], [3], None, fg_top=0.75, fg_mode="rank", bg_source="cam", bg_cam=0.05)
    assert out.tolist() == [[3, I, I, 0]]


def test_pseudo_mask_argmax():
    out = pseudo_mask_argmax(np.stack([A, B]), [3, 5], bg_threshold=0.7)
    assert out.tolist() == [[3, 5, 5, 5], [3, 0, 0, 0]]


def test_multihot_full_res_and_nearest():
    lab = np.array([[0, 1, I, 2], [1, 1, 2, 2], [I, I, 0, 0], [I, 2, 0, 1]])
    mh = seeds_to_multihot(lab, 3)
    assert mh.shape == (3, 4, 4) and mh.sum() == 12
    assert mh[2, 0, 3] and not mh[:, 0, 2].any()
    # a 2x2 grid belongs to a 9x9 input: cells on its pixels 0 and 8 = map pixels 0 and 3
    near = seeds_to_multihot(lab, 3, (2, 2), "nearest")
    assert near[0, 0, 0] and near[2, 0, 1] and near[1, 1, 1] and not near[:, 1, 0].any()
    assert near.sum() == 3
    big = np.full((321, 321), I)
    big[::8, ::8] = np.arange(41 * 41).reshape(41, 41) % 3      # the pixels the cells sit on
    cues = seeds_to_multihot(big, 3, (41, 41), "nearest")
    assert (cues.argmax(0) == np.arange(41 * 41).reshape(41, 41) % 3).all() and cues.sum() == 41 * 41


def test_multihot_majority():
    lab = np.array([[1, 1, I, I], [I, 0, 1, 2], [0, 0, 1, 2], [1, 1, 2, I]])
    maj = seeds_to_multihot(lab, 3, (2, 2), "majority")
    # blocks: [1,1,I,0] -> 1; [I,I,1,2] -> I wins tie; [0,0,1,1] -> tie -> lowest class 0; [1,2,2,I] -> 2
    assert maj[1, 0, 0] and not maj[:, 0, 1].any() and maj[0, 1, 0] and maj[2, 1, 1]
    assert maj.sum() == 3
    with pytest.raises(ValueError):
        seeds_to_multihot(np.array([[4]]), 3)


def test_export_dsrg_cues_layout(tmp_path):
    rng = np.random.default_rng(0)
    maps = {"img_a": rng.choice([0, 3, I], (82, 100)).astype(np.uint8),
            "img_b": np.full((50, 60), I, np.uint8)}
    path = tmp_path / "localization_cues.pickle"
    index = export_dsrg_cues(maps, path, grid=41, num_classes=21, image_labels={"img_a": [3, 7], "img_b": [2]})
    assert index == {"img_a": 0, "img_b": 1}
    with open(path, "rb") as fh:
        data = pickle.load(fh)
    assert set(data) == {"0_labels", "0_cues", "1_labels", "1_cues"}
    assert data["0_labels"].tolist() == [0, 3, 7] and data["1_labels"].tolist() == [0, 2]
    cues_i = data["0_cues"]
    assert cues_i.shape[0] == 3 and cues_i.shape[1] > 0
    cues = np.zeros((21, 41, 41), np.float32)  # how SEC/DSRG readers decode it
    cues[cues_i[0], cues_i[1], cues_i[2]] = 1.0
    np.testing.assert_array_equal(cues.astype(bool), seeds_to_multihot(maps["img_a"], 21, (41, 41)))
    assert set(np.unique(cues_i[0])) <= {0, 3}
    assert data["1_cues"].shape == (3, 0)
    assert [p.name for p in tmp_path.iterdir()] == ["localization_cues.pickle"]
