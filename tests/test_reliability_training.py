"""Numerical failures stop a stage with a clear error and leave no model file: a classifier
trained with lr = 1e8 (SGD, Adam) stops within one logging interval; a loss that does not move
gets a warning; a non-finite classifier file or heatmap file stops the stage that reads it,
naming the stage to re-run."""
from __future__ import annotations

import numpy as np
import pytest

from stage_helpers import (expect_one_line_error as _expect_one_line_error,
                           run_stage_cli as _run_cli, write_exp as _exp)


TINY_CLASSIFIER = """
    experiment = dict(name="tiny", seed=0, device="cpu")
    data = dict(dataset="synthetic", root=None, sbd_root=None, label_source="xml",
                synthetic=dict(seed=1, image_size=32, n_train=8, n_val=4, n_test=2, n_classes=3))
    classifier = dict(
        model=dict(backbone=dict(width=0.0625, batch_norm=True),
                   pooling=dict(type="ep", normalize="lambda"), pretrained=None),
        train=dict(split="trainaug", crop=32, scale_range=(1.0, 1.0), batch_size=4, max_iters=6,
                   num_workers=0, optimizer=dict(_delete_=True, type="SGD", lr=1e-3, weight_decay=0.0),
                   schedule=dict(_delete_=True, type="poly", power=0.9),
                   amp=False, log_interval=2, checkpoint_interval=100),
        val=dict(split="val", size=32, batch_size=4))
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("diverge")
    exp = _exp(root, TINY_CLASSIFIER, bases=("classifier_vgg16_ep.py",))
    _run_cli("stages.data", exp, root / "work")
    return exp, root / "work"


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_lr_1e8_stops_the_classifier_without_a_model_file(tiny_data, optimizer, capsys, one_thread):
    exp, work = tiny_data
    err = _expect_one_line_error(
        capsys, lambda: _run_cli("stages.classifier", exp, work, f"classifier.train.optimizer.type={optimizer}",
                                 "classifier.train.optimizer.lr=1e8", force=True),
        "[classifier] error: classifier training diverged at iteration", "classifier.train.amp=False",
        "classifier.train.optimizer.lr=1e+08")
    it = int(err.split("diverged at iteration ")[1].split(":")[0])
    assert it <= 4                         # caught within the logging interval (2) it happened in
    assert not (work / "classifier").exists()
    assert not list(work.rglob("model.pth")), err


def test_a_loss_that_does_not_move_gets_a_warning(tiny_data, capsys, one_thread):
    exp, work = tiny_data
    _run_cli("stages.classifier", exp, work, "classifier.train.optimizer.lr=0.0",
             "classifier.train.stall_iters=4", force=True)
    out = capsys.readouterr().out
    assert "warning: the loss has not moved from its start value" in out
    assert "classifier.train.optimizer.lr" in out and "EP normalisation" in out and "frozen layers" in out


# ------------------------------------------------------------------ inference inputs -----------

CUES_BASES = ("classifier_vgg16_ep.py", "cues.py")
CUES_EXP = """
experiment = dict(name="nan_inputs", seed=0, device="cpu")
data = dict(dataset="synthetic", root=None, sbd_root=None, label_source="xml",
            synthetic=dict(seed=0, image_size=32, n_train=4, n_val=2, n_test=2, n_classes=2))
classifier = dict(model=dict(backbone=dict(width=0.0625, batch_norm=True), pooling=dict(type="ep"),
                             pretrained=None))
heatmaps = dict(split="trainaug", size=32, scales=(1.0,), flip=False, pooling=None,
                class_specific_lambda=False, batch_size=4, num_workers=0, amp=False, writers=0)
saliency = dict(split="trainaug", dir=None, rbd=dict(n_segments=20), workers=1)
seeds = dict(heatmap_source="cam", fg_top=0.3, fg_mode="relative", bg_sal=0.15,
             normalise_saliency=True, overlap="max", pseudo_bg_threshold=0.15, n_overlays=0)
"""


def _nan_classifier(ctx) -> dict:
    """A classifier file written by a run without the guards: inf BatchNorm statistics."""
    import torch

    from stage_helpers import save_untrained_classifier

    save_untrained_classifier(ctx)
    payload = torch.load(ctx.out / "model.pth", weights_only=False)
    key = next(k for k in payload["state_dict"] if k.endswith("running_var"))
    payload["state_dict"][key].fill_(float("inf"))
    torch.save(payload, ctx.out / "model.pth")
    return {}


def test_inference_stages_reject_nonfinite_inputs_naming_the_stage_to_rerun(tmp_path, capsys):
    from stage_helpers import tiny_work_dir

    (tmp_path / "bad").mkdir()
    (tmp_path / "good").mkdir()
    exp, work, _ = tiny_work_dir(tmp_path / "bad", CUES_EXP, classifier_run=_nan_classifier,
                                 bases=CUES_BASES)
    _expect_one_line_error(capsys, lambda: _run_cli("stages.heatmaps", exp, work),
                           str(work / "classifier" / "model.pth"), "non-finite weights",
                           "running_var = inf", "re-run `make classifier`")
    assert not (work / "heatmaps").exists()
    exp, work, _ = tiny_work_dir(tmp_path / "good", CUES_EXP, bases=CUES_BASES)
    _run_cli("stages.heatmaps", exp, work)
    _run_cli("stages.saliency", exp, work)
    path = sorted((work / "heatmaps" / "maps").glob("*.npz"))[1]
    with np.load(path) as z:                  # a file written without the finiteness check
        arrays = dict(z)
    arrays["cam"][0, 0, 0] = np.nan
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    _expect_one_line_error(capsys, lambda: _run_cli("stages.seeds", exp, work),
                           f"{path} (cam) holds 1 non-finite value", "re-run `make heatmaps`")
    assert not (work / "seeds").exists()
