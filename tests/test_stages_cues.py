"""End-to-end tests of the cue stages (heatmaps, saliency, seeds) on a tiny synthetic dataset.

One module-scoped work dir: data stage (synthetic, 48 px, 12 train images) -> a fake
classifier stage saving an untrained tiny classifier -> heatmaps -> saliency -> seeds, all
through the stage runner / command line entry (``main_for``).
"""
from __future__ import annotations

import pickle
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.files import load_heatmap, read_label_png
from pipeline.data.index import DatasetIndex
from pipeline.runtime.stage import StageError, read_manifest, run_stage, stage_status
from pipeline.visualize import heatmap_rgb, label_rgb, panel_row
from stages.common import main_for
from stage_helpers import expect_one_line_error, tiny_work_dir

BASE = Path(__file__).resolve().parent.parent / "configs" / "_base_"
EXP = f"_base_ = {[str(BASE / f) for f in ('classifier_vgg16_ep.py', 'cues.py')]!r}\n" + textwrap.dedent("""
    experiment = dict(name="cues_test", seed=0, device="cpu")
    data = dict(dataset="synthetic", root=None, sbd_root=None, label_source="xml",
                synthetic=dict(seed=0, image_size=48, n_train=12, n_val=4, n_test=4, n_classes=3))
    classifier = dict(model=dict(backbone=dict(width=0.125, batch_norm=True),
                                 pooling=dict(type="ep"), pretrained=None))
    heatmaps = dict(split="trainaug", size=40, scales=(1.0, 0.75), flip=True, pooling="gap",
                    class_specific_lambda=True, batch_size=5, num_workers=0, amp=False)
    saliency = dict(split="trainaug", dir=None, rbd=dict(n_segments=40), workers=2)
    seeds = dict(heatmap_source="cam", fg_top=0.30, fg_mode="relative", bg_sal=0.06,
                 normalise_saliency=True, overlap="max", pseudo_bg_threshold=0.15,
                 export_dsrg_pickle=True, dsrg_grid=11, dsrg_mode="nearest", n_overlays=2)
""")
SIZE = 48


def _cli(stage, exp, wd, *opts):
    argv = ["--exp", str(exp), "--work-dir", str(wd)] + (["--opts", *opts] if opts else [])
    return main_for(f"stages.{stage}", argv)


@pytest.fixture(scope="module")
def cues(tmp_path_factory):
    exp, wd, cfg = tiny_work_dir(tmp_path_factory.mktemp("cues"), EXP)
    man = {s: _cli(s, exp, wd) for s in ("heatmaps", "saliency", "seeds")}
    index = DatasetIndex.load(wd / "data")
    return type("Cues", (), dict(exp=exp, wd=wd, cfg=cfg, man=man, index=index,
                                 ids=index.ids("trainaug")))


def test_heatmap_files(cues):
    assert len(cues.ids) == 12
    files = sorted(p.stem for p in (cues.wd / "heatmaps" / "maps").glob("*.npz"))
    assert files == sorted(cues.ids)
    nonzero = 0
    for img_id in cues.ids:
        hm = load_heatmap(cues.wd / "heatmaps" / "maps" / f"{img_id}.npz")
        classes = cues.index.labels(img_id)
        assert hm["classes"] == classes
        assert hm["cam"].shape == (len(classes), SIZE, SIZE)
        assert hm["cam"].min() >= 0 and hm["cam"].max() <= 1
        nonzero += int((hm["cam"].reshape(len(classes), -1).max(1) > 0.99).sum())
        assert hm["lam"].shape == (SIZE, SIZE) and 0 <= hm["lam"].min() and hm["lam"].max() <= 1
        assert hm["extra"]["pooling"] == "gap" and set(hm["extra"]["scores"]) == {str(c) for c in classes}
        lc = load_heatmap(cues.wd / "heatmaps" / "lambda_c" / f"{img_id}.npz")
        assert lc["classes"] == classes and lc["cam"].shape == (len(classes), SIZE, SIZE)
        assert lc["cam"].min() >= 0 and lc["cam"].max() <= 1
    assert nonzero > 0           # max-normalised maps peak at 1
    m = cues.man["heatmaps"]
    assert m["counts"]["images"] == 12 and m["metrics"]["inference_pooling"] == "gap"
    assert m["metrics"]["trained_pooling"] == "ep"


def test_saliency_maps_and_quality(cues):
    for img_id in cues.ids:
        with Image.open(cues.wd / "saliency" / "maps" / f"{img_id}.png") as im:
            assert im.mode == "L" and im.size == (SIZE, SIZE)
    met = cues.man["saliency"]["metrics"]
    assert met["source"] == "rbd" and met["gt_images"] == 12
    assert 0 <= met["MAE"] <= 1 and 0 < met["maxF"] <= 1


def test_seed_labels_pseudo_and_metrics(cues):
    out = cues.wd / "seeds"
    any_fg = False
    for img_id in cues.ids:
        classes = set(cues.index.labels(img_id))
        seeds = read_label_png(out / "labels" / f"{img_id}.png")
        pseudo = read_label_png(out / "pseudo" / f"{img_id}.png")
        assert seeds.shape == pseudo.shape == (SIZE, SIZE)
        assert set(np.unique(seeds).tolist()) <= {0, 255} | classes
        assert set(np.unique(pseudo).tolist()) <= {0} | classes
        any_fg |= bool(np.isin(seeds, list(classes)).any())
    assert any_fg
    assert len(list((out / "overlays").glob("*.png"))) == 2
    met = cues.man["seeds"]["metrics"]
    for key in ("precision", "recall", "fraction_labelled", "mIoU"):
        assert 0 <= met["seeds"][key] <= 1, key
    assert set(met["seeds"]["IoU"]) == set(cues.index.classes)
    assert 0 <= met["pseudo"]["mIoU"] <= 1
    assert cues.man["seeds"]["counts"]["evaluated"] == 12
    # DSRG export: one entry pair per image, input list "<id>.jpg <index>"
    cues_pk = pickle.loads((out / "dsrg_cues.pickle").read_bytes())
    lines = (out / "input_list.txt").read_text().splitlines()
    assert lines[0] == f"{cues.ids[0]}.jpg 0" and len(lines) == 12
    assert len(cues_pk) == 24 and cues_pk["0_cues"].shape[0] == 3
    assert cues_pk["0_cues"][1:].max() < 11


def test_new_fg_top_reruns_seeds_only_and_downstream_goes_stale(cues, tmp_path):
    wd = tmp_path / "work"
    for stage in ("data", "classifier", "heatmaps", "saliency", "seeds"):
        shutil.copytree(cues.wd / stage, wd / stage)
    run_stage("segmenter", ("data", "seeds"), lambda ctx: {}, cues.cfg, {"x": 1}, wd)
    before = {s: read_manifest(wd / s)["run_digest"] for s in ("heatmaps", "saliency", "seeds")}
    old = read_label_png(wd / "seeds" / "labels" / f"{cues.ids[0]}.png")
    man = {s: _cli(s, cues.exp, wd, "seeds.fg_top=0.2", "seeds.bg_sal=0.05")
           for s in ("heatmaps", "saliency", "seeds")}
    assert man["heatmaps"]["run_digest"] == before["heatmaps"]
    assert man["saliency"]["run_digest"] == before["saliency"]
    assert man["seeds"]["run_digest"] != before["seeds"]
    assert man["seeds"]["config"]["fg_top"] == 0.2 and man["seeds"]["config"]["bg_sal"] == 0.05
    new = read_label_png(wd / "seeds" / "labels" / f"{cues.ids[0]}.png")
    assert np.isin(new, [1, 2, 3]).sum() <= np.isin(old, [1, 2, 3]).sum()   # smaller fg top
    state, reason = stage_status(wd, "segmenter", ("data", "seeds"),
                                 read_manifest(wd / "segmenter")["config_digest"])
    assert state == "stale" and "seeds" in reason


def test_lambda_c_source(cues, tmp_path):
    import stages.seeds

    wd = tmp_path / "work"
    for stage in ("data", "classifier", "heatmaps", "saliency"):
        shutil.copytree(cues.wd / stage, wd / stage)
    sec = cues.cfg.seeds.replace(heatmap_source="lambda_c", export_dsrg_pickle=False, n_overlays=0)
    m = run_stage("seeds", stages.seeds.UPSTREAM, stages.seeds.run, cues.cfg, sec, wd)
    assert m["counts"]["images"] == 12 and "seeds" in m["metrics"]
    shutil.rmtree(wd / "heatmaps" / "lambda_c")
    with pytest.raises(StageError, match="class_specific_lambda"):
        run_stage("seeds", stages.seeds.UPSTREAM, stages.seeds.run, cues.cfg, sec, wd, force=True)


def test_cam_background_needs_no_saliency_stage(cues, tmp_path, capsys):
    from pipeline.data.files import read_saliency
    from pipeline.heatmaps import normalise_per_class
    from pipeline.seeds import make_seeds

    wd = tmp_path / "work"
    for stage in ("data", "classifier", "heatmaps"):          # no saliency stage at all
        shutil.copytree(cues.wd / stage, wd / stage)
    man = _cli("seeds", cues.exp, wd, "seeds.bg_source=cam", "seeds.bg_cam=0.1",
               "seeds.export_dsrg_pickle=False")
    assert set(man["upstream"]) == {"data", "heatmaps"} and man["metrics"]["bg_source"] == "cam"
    first = cues.ids[0]
    hm = load_heatmap(wd / "heatmaps" / "maps" / f"{first}.npz")
    maps = normalise_per_class(hm["cam"])
    seeds = read_label_png(wd / "seeds" / "labels" / f"{first}.png")
    rule = dict(fg_top=0.30, fg_mode="relative", bg_sal=0.06, overlap="max")     # EXP's seeds
    assert (seeds == make_seeds(maps, hm["classes"], None, bg_source="cam", bg_cam=0.1, **rule)).all()
    assert ((seeds == 0) == (maps.max(0) <= 0.1)).all()        # the relative fg never reaches 0.1
    assert 0 < man["metrics"]["seeds_bg_fraction"] < 1
    # 'both' needs the saliency stage; with it, its background is where both rules hold
    capsys.readouterr()
    expect_one_line_error(capsys, lambda: _cli("seeds", cues.exp, wd, "seeds.bg_source=both"),
                          "needs the output of stage 'saliency'")
    shutil.copytree(cues.wd / "saliency", wd / "saliency")
    both = _cli("seeds", cues.exp, wd, "seeds.bg_source=both", "seeds.bg_cam=0.1",
                "seeds.export_dsrg_pickle=False")
    assert set(both["upstream"]) == {"data", "heatmaps", "saliency"}
    sal = read_saliency(wd / "saliency" / "maps" / f"{first}.png", size=maps.shape[1:], normalise=True)
    seeds = read_label_png(wd / "seeds" / "labels" / f"{first}.png")
    assert ((seeds == 0) == ((maps.max(0) <= 0.1) & (sal < cues.cfg.seeds.bg_sal))).all()
    assert both["metrics"]["seeds_bg_fraction"] <= man["metrics"]["seeds_bg_fraction"]
    capsys.readouterr()
    expect_one_line_error(capsys, lambda: _cli("seeds", cues.exp, wd, "seeds.bg_source=depth"),
                          "seeds.bg_source='depth' is not allowed: it must be one of 'saliency', 'cam', 'both'")


def test_saliency_import(cues, tmp_path):
    import stages.saliency

    wd = tmp_path / "work"
    shutil.copytree(cues.wd / "data", wd / "data")
    src = tmp_path / "drfi"
    src.mkdir()
    ids = cues.ids
    for img_id in ids[1:]:                     # any size; resized to the image
        Image.fromarray(np.full((30, 20), 200, np.uint8)).save(src / f"{img_id}.png")
    sec = cues.cfg.saliency.replace(dir=str(src), workers=1)
    with pytest.raises(StageError, match=f"{ids[0]}.png"):
        run_stage("saliency", ("data",), stages.saliency.run, cues.cfg, sec, wd)
    (src / f"{ids[0]}.png").write_bytes(b"not a png")
    with pytest.raises(StageError, match=f"{ids[0]}.png"):
        run_stage("saliency", ("data",), stages.saliency.run, cues.cfg, sec, wd)
    Image.fromarray(np.full((60, 70), 200, np.uint8)).save(src / f"{ids[0]}.png")
    sec = sec.replace(workers=2)
    m = run_stage("saliency", ("data",), stages.saliency.run, cues.cfg, sec, wd)
    assert m["metrics"]["source"] == "import" and m["counts"]["images"] == 12
    for img_id in ids:
        arr = np.asarray(Image.open(wd / "saliency" / "maps" / f"{img_id}.png"))
        assert arr.shape == (SIZE, SIZE) and (arr == 200).all()


def test_panel_row_shapes():
    img = np.zeros((20, 30, 3), np.uint8)
    lab = np.zeros((10, 15), np.uint8)
    lab[2:5, 2:5] = 1
    lab[0] = 255
    row = panel_row([img, heatmap_rgb(np.linspace(0, 1, 300).reshape(20, 15)), label_rgb(lab)],
                    ["image", "heat", "labels"], gap=2)
    assert row.dtype == np.uint8 and row.ndim == 3 and row.shape[2] == 3
    assert row.shape[0] > 20                                  # caption strip on top
    assert row.shape[1] == 30 + 15 + 30 + 2 * 2               # label map scaled to height 20
    with pytest.raises(ValueError):
        panel_row([img], ["a", "b"])
