"""End to end: every stage on a tiny synthetic dataset, through the stage runner.

Checks that each stage's outputs exist and are valid, that each stage consumes what its upstream
wrote (the segmenter records the run digest of the seeds it read, and those seeds are the seeds
stage's files), that a second pass skips every fresh stage, and that changing only the seed
thresholds re-runs seeds and what depends on them. Also: the classifier stage lowers the
training loss in a few iterations and resumes from its saved iteration.
"""
from __future__ import annotations

import importlib
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.datasets import ClassificationDataset
from pipeline.data.files import read_label_png
from pipeline.data.index import DatasetIndex
from pipeline.runtime.checkpoint import load_model
from pipeline.runtime.stage import read_manifest, run_stage
from stages.common import load_experiment

BASE = Path(__file__).resolve().parent.parent / "configs" / "_base_"
BASES = ("classifier_vgg16_ep.py", "data_synthetic.py", "cues.py", "eval_submit.py",
         "segmenter_dsrg_vgg16.py", "localize.py")
EXP = f"_base_ = {[str(BASE / f) for f in BASES]!r}\n" + textwrap.dedent("""
    experiment = dict(name="e2e", seed=0, device="cpu")
    data = dict(dataset="synthetic", root=None, sbd_root=None, label_source="xml",
                synthetic=dict(seed=1, image_size=48, n_train=12, n_val=4, n_test=4, n_classes=3))
    classifier = dict(
        model=dict(backbone=dict(width=0.125, batch_norm=True),
                   pooling=dict(type="ep", normalize="lambda"), pretrained=None),
        train=dict(split="trainaug", crop=48, resize=None, scale_range=(1.0, 1.0), batch_size=6,
                   max_iters=3, num_workers=0,
                   optimizer=dict(_delete_=True, type="Adam", lr=1e-3, weight_decay=0.0),
                   schedule=dict(_delete_=True, type="poly", power=0.9),
                   amp=False, log_interval=1, checkpoint_interval=2),
        val=dict(split="val", size=48, batch_size=4))
    heatmaps = dict(split="trainaug", size=48, scales=(1.0,), flip=True, pooling=None,
                    class_specific_lambda=False, batch_size=6, num_workers=0, amp=False)
    saliency = dict(split="trainaug", dir=None, rbd=dict(n_segments=30), workers=1)
    seeds = dict(heatmap_source="cam", fg_top=0.30, fg_mode="relative", bg_sal=0.15,
                 normalise_saliency=True, overlap="max", pseudo_bg_threshold=0.15,
                 export_dsrg_pickle=False, n_overlays=2)
    segmenter = dict(
        model=dict(width=0.0625, batch_norm=True, fc_channels=32, rates=(1, 2), pretrained=None),
        loss="dsrg",
        train=dict(labels="seeds", split="trainaug", crop=48, resize=48, scale_range=(1.0, 1.0),
                   batch_size=4, max_iters=2, num_workers=0, lr_mult=dict(_delete_=True),
                   paramwise=dict(_delete_=True),
                   optimizer=dict(_delete_=True, type="Adam", lr=1e-3, weight_decay=0.0),
                   schedule=dict(_delete_=True, type="poly", power=0.9),
                   amp=False, log_interval=1, checkpoint_interval=100),
        dsrg=dict(fg_threshold=0.85, bg_threshold=0.99),
        crf=dict(preset="dsrg_train", workers=0),
        val=dict(split="val", size=48, batch_size=4))
    upper_bound = dict(loss="ce", train=dict())
    eval = dict(split="val", size=48, scales=(1.0,), flip=False, batch_size=4, amp=False,
                crf=dict(enabled=True, preset="dsrg_test", workers=0), n_overlays=1)
    submit = dict(split="test", comp="comp6", size=None, scales=None, flip=None, batch_size=None,
                  amp=None, crf=dict())
    localize = dict(split="val", mass=0.98, topk=5, use_image_classes=False, cam_threshold=0.2,
                    iou_threshold=0.5, size=48, scales=(1.0,), flip=False, pooling=None,
                    max_images=None, n_overlays=1)
""")

CHAIN = ("data", "classifier", "heatmaps", "saliency", "seeds", "segmenter", "upper_bound",
         "eval", "submit", "localize")


def run(stage, cfg, work_dir, **kw):
    mod = importlib.import_module(f"stages.{stage}")
    section = cfg.stage_section(stage, getattr(mod, "SECTIONS", None))
    return run_stage(stage, tuple(mod.UPSTREAM), mod.run, cfg, section, work_dir, device="cpu", **kw)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("e2e")
    (root / "exp.py").write_text(EXP)
    cfg = load_experiment(root / "exp.py")
    work = root / "work"
    first = {s: run(s, cfg, work) for s in CHAIN}
    return cfg, work, first


def test_every_stage_writes_valid_outputs(pipeline_run):
    cfg, work, first = pipeline_run
    index = DatasetIndex.load(work / "data")
    train_ids = index.ids("trainaug")
    for img_id in train_ids:
        maps = np.load(work / "heatmaps" / "maps" / f"{img_id}.npz")
        assert sorted(maps["classes"].tolist()) == sorted(index.labels(img_id))
        seeds = read_label_png(work / "seeds" / "labels" / f"{img_id}.png")
        h, w = index.read_image(img_id).shape[:2]
        assert seeds.shape == (h, w)
        assert set(np.unique(seeds)) <= {0, 255, *index.labels(img_id)}
        assert (work / "saliency" / "maps" / f"{img_id}.png").is_file()
    for stage in ("classifier", "segmenter", "upper_bound"):
        net, meta = load_model(work / stage / "model.pth")
        assert meta["classes"] == index.classes
    assert 0.0 <= first["eval"]["metrics"]["mIoU"] <= 1.0
    assert first["upper_bound"]["metrics"]["mIoU_no_crf"] is not None
    sub = work / "submit" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert sorted(p.stem for p in sub.glob("*.png")) == sorted(index.ids("test"))
    assert (work / "submit" / "results.tgz").is_file() and first["submit"]["metrics"]["validated"]
    assert json.loads((work / "localize" / "boxes.json").read_text())
    assert "val_mAP" in first["classifier"]["metrics"]
    assert "seeds" in first["seeds"]["metrics"] and "pseudo" in first["seeds"]["metrics"]


def test_each_stage_consumed_its_upstream_outputs(pipeline_run):
    cfg, work, first = pipeline_run
    for stage in CHAIN:
        mod = importlib.import_module(f"stages.{stage}")
        for up in mod.UPSTREAM:
            assert first[stage]["upstream"][up] == first[up]["run_digest"], (stage, up)
    # the segmenter trained on the seeds stage's label maps (not GT masks)
    log = (work / "segmenter" / "log.txt").read_text()
    assert str(work / "seeds" / "labels") in log.replace("/.partial", "") or "seeds/labels" in log


def test_second_pass_skips_and_new_thresholds_rerun_only_downstream(pipeline_run):
    cfg, work, first = pipeline_run
    again = {s: run(s, cfg, work) for s in CHAIN}
    assert all(again[s]["run_digest"] == first[s]["run_digest"] for s in CHAIN)
    cfg2 = load_experiment(work.parent / "exp.py", {"seeds.fg_top": 0.2})
    seeds2 = run("seeds", cfg2, work)
    assert seeds2["run_digest"] != first["seeds"]["run_digest"]
    for s in ("classifier", "heatmaps", "saliency"):
        assert read_manifest(work / s)["run_digest"] == first[s]["run_digest"]
    seg2 = run("segmenter", cfg2, work)
    assert seg2["run_digest"] != first["segmenter"]["run_digest"]
    assert seg2["upstream"]["seeds"] == seeds2["run_digest"]
    assert run("upper_bound", cfg2, work)["run_digest"] == first["upper_bound"]["run_digest"]


def _mean_loss(net, index):
    ds = ClassificationDataset(index, "trainaug", 48, train=False)
    batch = torch.stack([ds[i]["image"] for i in range(len(ds))])
    target = torch.stack([ds[i]["target"] for i in range(len(ds))])
    net.eval()
    with torch.no_grad():
        return float(net.classification_loss(net(batch), target)[0])


def test_classifier_stage_lowers_the_loss_and_resumes(pipeline_run, tmp_path):
    from pipeline.models.classifier import build_classifier
    from stages.classifier import model_config

    cfg, work, _ = pipeline_run
    index = DatasetIndex.load(work / "data")
    (tmp_path / "data").symlink_to(work / "data")
    short = load_experiment(work.parent / "exp.py", {"classifier.train.max_iters": 2,
                                                      "classifier.train.checkpoint_interval": 2})
    long = load_experiment(work.parent / "exp.py", {"classifier.train.max_iters": 40,
                                                     "classifier.train.checkpoint_interval": 2})
    mod = importlib.import_module("stages.classifier")

    def interrupted_after_two_iterations(ctx):
        ctx.section = short.classifier
        mod.run(ctx)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage("classifier", ("data",), interrupted_after_two_iterations, long, long.classifier,
                  tmp_path, device="cpu")
    assert (tmp_path / ".partial" / "classifier" / "train" / "iter_2.pth").is_file()
    assert not (tmp_path / "classifier").exists()
    man = run_stage("classifier", ("data",), mod.run, long, long.classifier, tmp_path, device="cpu")
    assert man["resumed"] is True
    logs = (tmp_path / "classifier" / "train" / "train.log").read_text()
    assert "iter_2.pth (iteration 2)" in logs and "iter 40/40" in logs
    torch.manual_seed(0)
    untrained = build_classifier(model_config(long.classifier), index.num_classes - 1)
    trained = load_model(tmp_path / "classifier" / "model.pth")[0]
    assert _mean_loss(trained, index) < _mean_loss(untrained, index)
