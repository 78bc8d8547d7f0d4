"""DSRG training loss (pipeline.dsrg): cues on the output grid, growing + losses, CE option."""
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from pipeline.crf import CRFParams
from pipeline.dsrg import DSRGConfig, ce_loss, cues_on_grid, dsrg_losses
from pipeline.losses import stable_softmax_probs
from pipeline.seeds import seeds_to_multihot
from pipeline.settings import ConfigError, apply_overrides
from pipeline.settings.segmenter import SegmenterSettings

BASE = Config.fromfile(str(Path(__file__).resolve().parent.parent
                           / "configs/_base_/segmenter_dsrg_vgg16.py")).to_dict()["segmenter"]


def reference(**overrides) -> DSRGConfig:
    """The DSRG parameters of configs/_base_/segmenter_dsrg_vgg16.py, with ``dsrg`` overrides."""
    return dataclasses.replace(SegmenterSettings.from_dict(BASE, "segmenter").dsrg_config(), **overrides)


# inputs of 8·(h−1)+1 px, where the grids of a network input (cues_on_grid) and of a whole map
# (seeds_to_multihot) coincide; and a map already at the grid size
@pytest.mark.parametrize("shape,grid", [((41, 33), (6, 5)), ((49, 49), (7, 7)), ((8, 8), (8, 8))])
def test_cues_on_grid_matches_seeds_to_multihot(shape, grid):
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 4, (3, *shape), generator=g)
    lab[lab == 3] = 255
    cues = cues_on_grid(lab, 3, grid)
    ref = np.stack([seeds_to_multihot(x.numpy(), 3, grid) for x in lab])
    assert cues.dtype == torch.bool and cues.shape == (3, 3, *grid)
    np.testing.assert_array_equal(cues.numpy(), ref)
    if shape != grid:                          # cell i takes the pixel it sits on, 8·i
        want = lab[:, ::8, ::8]
        np.testing.assert_array_equal(cues.numpy(), np.stack(
            [seeds_to_multihot(x.numpy(), 3) for x in want]))
    with pytest.raises(ValueError, match="seed labels"):
        cues_on_grid(torch.full((1, 4, 4), 5), 3, (2, 2))


def _hand_case():
    """6x6 grid, classes bg/1/2/3; the image has {bg, 1, 3}; cues: bg at (0,0), class 1 at (3,3).

    A (rows 2-4, cols 2-4): class 1 at 0.9 around the class-1 cue -> grows (9 px);
    B (rows 0-1, cols 0-2): background at 0.995 around the bg cue -> grows (6 px);
    C (5,0): class 1 at 0.9 but not 8-connected to A -> does not grow;
    D (5,3),(5,4): class 2 at 0.95 next to A, but class 2 is not in the image -> nothing.
    """
    P = torch.tensor([0.4, 0.3, 0.2, 0.1]).view(4, 1, 1).repeat(1, 6, 6)
    cls1 = torch.tensor([0.05, 0.9, 0.03, 0.02])
    P[:, 2:5, 2:5] = cls1.view(4, 1, 1)
    P[:, 0:2, 0:3] = torch.tensor([0.995, 0.002, 0.002, 0.001]).view(4, 1, 1)
    P[:, 5, 0] = cls1
    P[:, 5, 3:5] = torch.tensor([0.01, 0.02, 0.95, 0.02]).view(4, 1)
    labels = torch.full((1, 6, 6), 255)
    labels[0, 0, 0] = 0
    labels[0, 3, 3] = 1
    classes = torch.tensor([[True, True, False, True]])
    expect = torch.zeros(1, 4, 6, 6, dtype=torch.bool)
    expect[0, 0, 0:2, 0:3] = True
    expect[0, 1, 2:5, 2:5] = True
    return P.log()[None], labels, classes, expect


def test_hand_made_growing_and_seeding_loss():
    logits, labels, classes, expect = _hand_case()
    logits.requires_grad_(True)
    cfg = reference(grow_on="probs", boundary_weight=0.0)
    out = dsrg_losses(logits, labels, classes, np.zeros((1, 6, 6, 3), np.uint8), cfg, None)
    assert "loss_boundary" not in out
    assert out["cov_before"].item() == pytest.approx(2 / 36)
    assert out["cov_after"].item() == pytest.approx(15 / 36)       # 6 bg + 9 class-1 pixels
    p = stable_softmax_probs(logits.detach())
    want = -p[0, 0][expect[0, 0]].log().mean() - p[0, 1][expect[0, 1]].log().mean()
    assert out["loss_seed"].item() == pytest.approx(want.item(), rel=1e-5)
    assert out["seed_bg"].item() == pytest.approx(-p[0, 0][expect[0, 0]].log().mean().item(), rel=1e-5)
    out["loss_seed"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # the thresholds come from the config: a 0.95 foreground threshold stops class 1 growing
    out = dsrg_losses(logits, labels, classes, None, reference(grow_on="probs", boundary_weight=0,
                                                                 fg_threshold=0.95), None)
    assert out["cov_after"].item() == pytest.approx((6 + 1) / 36)


def test_grow_start_trains_on_the_seeds_alone_before_growing():
    logits, labels, classes, expect = _hand_case()
    cfg = reference(grow_on="probs", boundary_weight=0.0, grow_start=10)
    warm = dsrg_losses(logits, labels, classes, None, cfg, None, iteration=9)
    assert warm["cov_after"].item() == pytest.approx(2 / 36) == warm["cov_before"].item()
    p = stable_softmax_probs(logits)
    assert warm["seed_fg"].item() == pytest.approx(-p[0, 1, 3, 3].log().item(), rel=1e-5)
    for it in (10, None):                      # from grow_start on (None: no schedule) it grows
        out = dsrg_losses(logits, labels, classes, None, cfg, None, iteration=it)
        assert out["cov_after"].item() == pytest.approx(15 / 36)
    with pytest.raises(ValueError, match="grow_start"):
        reference(grow_start=-1)


def _random_case(seed=0, B=3, C=4, S=24):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(B, C, 5, 5, generator=g)).requires_grad_(True)
    labels = torch.randint(0, C, (B, S, S), generator=g)
    labels[torch.rand(B, S, S, generator=g) < 0.7] = 255
    classes = torch.ones(B, C, dtype=torch.bool)
    classes[0, 2] = False
    raw = torch.randint(0, 256, (B, S, S, 3), dtype=torch.uint8, generator=g)
    return logits, labels, classes, raw


def test_crf_growing_and_boundary_loss_finite_and_pool_equal():
    logits, labels, classes, raw = _random_case()
    cfg = reference(grow_on="crf")
    out = dsrg_losses(logits, labels, classes, raw, cfg, None)
    assert set(out) >= {"loss_seed", "loss_boundary", "cov_before", "cov_after", "crf_wait_s"}
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["cov_after"] >= out["cov_before"] > 0
    (out["loss_seed"] + out["loss_boundary"]).backward()
    assert torch.isfinite(logits.grad).all()
    with ThreadPoolExecutor(2) as pool:          # any executor: the asynchronous path
        out2 = dsrg_losses(logits, labels, classes, raw, cfg, pool)
    for k in ("loss_seed", "loss_boundary", "cov_after"):
        assert out2[k].item() == pytest.approx(out[k].item(), rel=1e-6)


def test_config_from_sections():
    ref = reference()
    assert (ref.fg_threshold, ref.bg_threshold, ref.grow_on) == (0.85, 0.99, "crf")   # DSRG §5
    assert ref.crf == CRFParams.preset("dsrg_train") and ref.boundary_clip == (0.05, 20.0)
    sec = apply_overrides({"segmenter": BASE}, {"segmenter.dsrg.fg_threshold": 0.8,
                                                "segmenter.dsrg.boundary_clip": None,
                                                "segmenter.crf.iterations": 5})["segmenter"]
    cfg = SegmenterSettings.from_dict(sec, "segmenter").dsrg_config()
    assert cfg.fg_threshold == 0.8 and cfg.boundary_clip is None
    assert cfg.crf == CRFParams.preset("dsrg_train", iterations=5)
    bad = apply_overrides({"segmenter": BASE}, {"segmenter.dsrg.fg_thresh": 0.8})["segmenter"]
    with pytest.raises(ConfigError, match="did you mean segmenter.dsrg.fg_threshold"):
        SegmenterSettings.from_dict(bad, "segmenter")
    with pytest.raises(ValueError, match="grow_on"):
        reference(grow_on="q")


def test_ce_loss_resolutions_and_all_ignored():
    logits, labels, _, _ = _random_case(1)
    up = ce_loss(logits, labels, "input")
    down = ce_loss(logits, labels, "output")
    assert torch.isfinite(up) and torch.isfinite(down)
    same = torch.randint(0, 4, (3, 5, 5))
    assert ce_loss(logits, same, "input").item() == pytest.approx(ce_loss(logits, same, "output").item())
    zero = ce_loss(logits, torch.full((3, 24, 24), 255), "input")
    assert zero.item() == 0.0
    zero.backward()
    with pytest.raises(ValueError, match="resolution"):
        ce_loss(logits, labels, "full")


def test_collapse_diagnostics_on_the_hand_made_case():
    """The hand case above, counted by hand on its 36 cells (image classes {bg, 1, 3}):
    cues 1 bg + 1 class-1 cell; grown 6 bg (B) + 9 class-1 (A); argmax not background in A (9),
    C (1) and D (2, class 2); confident background (> 0.99) in B (6); confident foreground
    (> 0.85 over the image's classes) in A and C (10; D's class 2 is not in the image)."""
    logits, labels, classes, _ = _hand_case()
    out = dsrg_losses(logits, labels, classes, None, reference(grow_on="probs", boundary_weight=0))
    want = {"cov_bg_before": 1, "cov_fg_before": 1, "cov_bg_after": 6, "cov_fg_after": 9,
            "pred_fg": 12, "conf_bg": 6, "conf_fg": 10}
    for key, cells in want.items():
        assert out[key].item() == pytest.approx(cells / 36), key
        assert "loss" not in key and not out[key].requires_grad
    # growing off (thresholds above 1): after == before, the confident cells stay the same
    off = dsrg_losses(logits, labels, classes, None, reference(
        grow_on="probs", boundary_weight=0, fg_threshold=1.01, bg_threshold=1.01))
    assert off["cov_bg_after"].item() == pytest.approx(1 / 36)
    assert off["cov_fg_after"].item() == pytest.approx(1 / 36)
    assert off["conf_bg"].item() == off["conf_fg"].item() == 0.0


def test_confusion_fg_fractions():
    from pipeline.dsrg_diagnostics import confusion_fg_fractions

    # rows GT, columns prediction: 10 bg pixels (8 predicted bg, 2 class 1), 6 class-1 pixels
    # (4 predicted bg, 1 class 1, 1 class 2), 4 class-2 pixels (all predicted class 2)
    mat = [[8, 2, 0], [4, 1, 1], [0, 0, 4]]
    got = confusion_fg_fractions(mat)
    assert got["pred_fg"] == pytest.approx(8 / 20) and got["gt_fg"] == pytest.approx(10 / 20)
    assert confusion_fg_fractions(np.zeros((3, 3))) == {"pred_fg": None, "gt_fg": None}


def test_grid_label_counts_by_hand():
    from pipeline.dsrg_diagnostics import grid_label_counts, grid_label_rates

    gt = torch.tensor([[[0, 1, 1], [2, 2, 255]]])
    lab = torch.zeros(1, 3, 2, 3, dtype=torch.bool)
    lab[0, 0, 0, 0] = lab[0, 0, 0, 1] = True         # bg on GT bg, bg on GT class 1
    lab[0, 0, 0, 2] = lab[0, 1, 0, 2] = True         # bg and class 1 on GT class 1
    lab[0, 2, 1, 0] = True                           # class 2 on GT class 2; (1,1) unlabelled
    lab[0, 0, 1, 2] = True                           # bg on a void cell: not counted
    counts = grid_label_counts(lab, gt)
    assert counts == {"gt_fg_cells": 4, "bg_cells": 3, "bg_on_gt_fg": 2, "gt_fg_bg_only": 1,
                      "gt_fg_correct": 2, "gt_fg_unlabelled": 1}
    assert grid_label_rates(counts) == pytest.approx(
        {"bg_precision_loss": 2 / 3, "fg_as_bg": 1 / 4, "fg_correct": 2 / 4, "fg_unlabelled": 1 / 4})
    assert grid_label_rates(grid_label_counts(lab[:, :, :1, :1], gt[:, :1, :1]))["fg_as_bg"] is None
