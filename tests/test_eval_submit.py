"""Stages eval / submit, pipeline.runtime.evaluation and the check_submission CLI on a tiny synthetic set."""
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image
from torch import nn

from pipeline.data.files import read_label_png, write_label_png
from pipeline.data.index import DatasetIndex
from pipeline.data.submission import SUBMISSION_SUBDIR, validate_submission, write_prediction_png
from pipeline.models.deeplab import DeepLabV2VGG16
from pipeline.runtime.checkpoint import save_model
from pipeline.runtime.evaluation import evaluate_segmenter, score_label_dir
from pipeline.runtime.stage import StageError, read_manifest, run_stage
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SUB = SUBMISSION_SUBDIR.format(comp="comp6")
DATA_SEC = dict(dataset="synthetic", root=None, sbd_root=None, label_source="xml",
                synthetic=dict(seed=1, image_size=48, n_train=2, n_val=4, n_test=3, n_classes=3))
BASE = Config.fromfile(str(REPO / "configs/_base_/eval_submit.py")).to_dict()
EVAL_SEC = dict(split="val", size=32, scales=(0.75, 1.0), flip=True, batch_size=4, amp=False,
                crf=dict(enabled=True, preset="dsrg_test", workers=0), n_overlays=2,
                save_predictions=True, save_no_crf=True)
MODEL_CFG = dict(width=0.125, batch_norm=True)


def make_cfg(eval_changes=None, submit_changes=None) -> Settings:
    """Settings with the base eval / submit sections, EVAL_SEC and the changes on top."""
    return Settings.from_dict(dict(
        experiment=dict(name="t", seed=0, device="cpu"), data=DATA_SEC,
        eval={**BASE["eval"], **EVAL_SEC, **(eval_changes or {})},
        submit={**BASE["submit"], **(submit_changes or {})}))


def evaluate(net, index, ev, out_dir=None) -> dict:
    """:func:`evaluate_segmenter` with the protocol of the typed eval section ``ev``."""
    inf = ev.inference()
    return evaluate_segmenter(net, index, ev.split, inf.settings, crf=inf.crf, workers=inf.workers,
                              out_dir=out_dir, n_overlays=ev.n_overlays,
                              save_predictions=ev.save_predictions, save_no_crf=ev.save_no_crf)


def tiny_net(num_classes):
    torch.manual_seed(0)
    net = DeepLabV2VGG16(num_classes, width=0.125, batch_norm=True)
    with torch.no_grad():
        for br in net.aspp:
            br.fc8.weight.mul_(30)
    return net.eval()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """WORK_DIR with finished data, segmenter (tiny untrained net) and submit stages."""
    import stages.data
    import stages.submit

    wd = tmp_path_factory.mktemp("work")
    cfg = make_cfg()
    run_stage("data", (), stages.data.run, cfg, cfg.data, wd)
    index = DatasetIndex.load(wd / "data")

    def fake_segmenter(ctx):
        save_model(ctx.out / "model.pth", tiny_net(index.num_classes), "segmenter", MODEL_CFG,
                   index.num_classes, index.classes)
        return {}

    run_stage("segmenter", ("data",), fake_segmenter, cfg, {"fake": 1}, wd)
    run_stage("submit", ("data", "segmenter"), stages.submit.run, cfg,
              cfg.stage_section("submit", stages.submit.SECTIONS), wd)
    exp = wd / "exp.py"
    exp.write_text(f"_base_ = [{str(REPO / 'configs/_base_/eval_submit.py')!r}]\n"
                   "experiment = dict(name='t', seed=0, device='cpu')\n")
    return dict(wd=wd, cfg=cfg, index=index, exp=exp)


def hand_scores(preds, gts, C):
    """IoU per class / mIoU / pixel accuracy counted pixel by pixel (no ConfusionMatrix)."""
    tp, fp, fn = np.zeros(C), np.zeros(C), np.zeros(C)
    valid = 0
    for p, g in zip(preds, gts):
        v = g != 255
        valid += v.sum()
        for c in range(C):
            tp[c] += ((p == c) & (g == c) & v).sum()
            fp[c] += ((p == c) & (g != c) & v).sum()
            fn[c] += ((p != c) & (g == c) & v).sum()
    iou = [tp[c] / (tp[c] + fp[c] + fn[c]) if tp[c] + fp[c] + fn[c] else None for c in range(C)]
    defined = [x for x in iou if x is not None]
    return {"IoU": iou, "mIoU": sum(defined) / len(defined), "aAcc": tp.sum() / valid}


def assert_scores(res, ref):
    assert res["mIoU"] == pytest.approx(ref["mIoU"], abs=1e-9)
    assert res["aAcc"] == pytest.approx(ref["aAcc"], abs=1e-9)
    for a, b in zip(res["IoU"], ref["IoU"]):
        assert (a is None and b is None) or a == pytest.approx(b, abs=1e-9)


def test_score_label_dir_matches_hand_computed(work, tmp_path):
    index = work["index"]
    ids, C = index.ids("val"), index.num_classes
    gts = [index.read_mask(i) for i in ids]
    preds, seeds = [], []
    d, sd = tmp_path / "pred", tmp_path / "seeds"
    d.mkdir(), sd.mkdir()
    for k, (i, g) in enumerate(zip(ids, gts)):
        p = np.where(g == 255, 0, g).astype(np.uint8)
        p[: 10 + k, : 12] = 1
        p[:, -5:] = (k % (C - 1)) + 1
        preds.append(p)
        write_label_png(d / f"{i}.png", p)
        s = p.copy()
        s[20:30, 20:40] = 255
        seeds.append(s)
        write_label_png(sd / f"{i}.png", s)
    res = score_label_dir(index, "val", d)
    assert res["images"] == len(ids) and res["unlabelled_fraction"] == 0
    assert_scores(res, hand_scores(preds, gts, C))
    assert res["class_names"] == index.classes
    # seeds: 255 = background (default) or dropped ('ignore')
    bg = score_label_dir(index, "val", sd)
    assert_scores(bg, hand_scores([np.where(s == 255, 0, s) for s in seeds], gts, C))
    ign = score_label_dir(index, "val", sd, unlabelled="ignore")
    assert_scores(ign, hand_scores(seeds, [np.where(s == 255, 255, g) for s, g in zip(seeds, gts)], C))
    assert 0 < bg["unlabelled_fraction"] < 1
    with pytest.raises(ValueError, match="255"):
        score_label_dir(index, "val", sd, unlabelled="error")
    (d / f"{ids[1]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"{ids[1]}.png"):
        score_label_dir(index, "val", d)
    assert score_label_dir(index, "val", d, missing="skip")["images"] == len(ids) - 1
    write_label_png(d / f"{ids[1]}.png", preds[1][:-1])
    with pytest.raises(ValueError, match=ids[1]):
        score_label_dir(index, "val", d)


class ConstNet(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.C = C

    def forward(self, x):
        z = torch.zeros(x.shape[0], self.C, x.shape[2] // 8 + 1, x.shape[3] // 8 + 1)
        z[:, 0] = 5.0
        return z


def test_evaluate_segmenter_end_to_end(work, tmp_path):
    index = work["index"]
    ids, C = index.ids("val"), index.num_classes
    gts = [index.read_mask(i) for i in ids]
    # an all-background predictor: numbers by hand
    res = evaluate(ConstNet(C), index, make_cfg({"crf": dict(enabled=False, preset="dsrg_test",
                                                             workers=0)}).eval)
    assert res["crf"] is None and res["scored"] == len(ids) and not res["crf_enabled"]
    assert_scores(res["no_crf"], hand_scores([np.zeros_like(g) for g in gts], gts, C))
    assert res["mIoU"] == res["no_crf"]["mIoU"]
    # the tiny network, with CRF: written predictions re-score to the same numbers
    net = tiny_net(C)
    res = evaluate(net, index, make_cfg().eval, out_dir=tmp_path)
    assert sorted(p.stem for p in (tmp_path / "pred").iterdir()) == sorted(ids)
    assert sorted(p.stem for p in (tmp_path / "overlays").iterdir()) == sorted(ids[:2])
    preds = [read_label_png(tmp_path / "pred" / f"{i}.png") for i in ids]
    raw = [read_label_png(tmp_path / "pred_nocrf" / f"{i}.png") for i in ids]
    assert all(p.shape == g.shape for p, g in zip(preds, gts))
    assert_scores(res["crf"], hand_scores(preds, gts, C))
    assert_scores(res["no_crf"], hand_scores(raw, gts, C))
    assert res["mIoU"] == res["crf"]["mIoU"]
    again = score_label_dir(index, "val", tmp_path / "pred")
    assert again["mIoU"] == pytest.approx(res["crf"]["mIoU"]) and again["fwIoU"] == pytest.approx(res["crf"]["fwIoU"])
    assert np.array(res["confusion"]["crf"]).sum() == again["pixels"]
    with Image.open(tmp_path / "pred" / f"{ids[0]}.png") as im:
        assert im.mode == "P"


def test_parts_score_like_separate_runs(work):
    """Each part's numbers equal a run on that part's ids alone, and the parts' confusion
    matrices add up to the whole split's."""
    index = work["index"]
    ids = index.ids("val")
    net, ev = tiny_net(index.num_classes), make_cfg().eval
    inf = ev.inference()
    parts = {"a": ids[:1], "b": ids[1:]}
    res = evaluate_segmenter(net, index, "val", inf.settings, crf=inf.crf, parts=parts)
    for name, part_ids in parts.items():
        alone = evaluate_segmenter(net, index, "val", inf.settings, crf=inf.crf, ids=part_ids)
        got = res["parts"][name]
        assert got["images"] == len(part_ids)
        for key in ("mIoU", "mIoU_no_crf", "mIoU_crf"):
            assert got[key] == pytest.approx(alone[key])
        assert got["crf"]["pixels"] == alone["crf"]["pixels"]
    assert res["parts"]["a"]["crf"]["pixels"] + res["parts"]["b"]["crf"]["pixels"] == res["crf"]["pixels"]
    assert "parts" not in evaluate_segmenter(net, index, "val", inf.settings, crf=None)


def test_two_ranks_score_like_one_process(work, tmp_path):
    """Under DDP (gloo, 2 CPU processes) the ranks split the ids and sum their matrices and
    counts, the parts' too: every rank returns what one process returns."""
    from pipeline.inference_settings import InferenceSettings
    from stage_helpers import ddp_eval_worker, free_port, spawn_ranks

    spawn_ranks(ddp_eval_worker, (2, free_port(), str(tmp_path), str(work["wd"])))
    index, ids = work["index"], work["index"].ids("val")
    torch.manual_seed(0)
    net = DeepLabV2VGG16(index.num_classes, width=0.125, batch_norm=True).eval()
    one = evaluate_segmenter(net, index, "val", InferenceSettings(size=(32, 32)), crf=None,
                             parts={"a": ids[:1], "b": ids[1:]})
    one.pop("confusion")
    for r in (0, 1):
        got = json.loads((tmp_path / f"eval_rank{r}.json").read_text())
        assert got["images"] == got["scored"] == len(ids)
        assert got["mIoU"] == pytest.approx(one["mIoU"])
        for name in ("a", "b"):
            assert got["parts"][name]["images"] == one["parts"][name]["images"]
            assert got["parts"][name]["mIoU"] == pytest.approx(one["parts"][name]["mIoU"])


def test_eval_stage_writes_metrics(work):
    import stages.eval

    wd, cfg = work["wd"], work["cfg"]
    sec = make_cfg({"crf": dict(enabled=True, preset="dsrg_test", workers=2)}).eval   # CRF pool
    man = run_stage("eval", ("data", "segmenter"), stages.eval.run, cfg, sec, wd)
    m = man["metrics"]
    assert m["split"] == "val" and m["crf_enabled"] and m["mIoU"] == m["mIoU_crf"]
    assert m["no_crf"]["class_names"] == work["index"].classes and "fwIoU" in m["crf"]
    assert "confusion" not in m
    saved = json.loads((wd / "eval" / "metrics.json").read_text())
    assert saved["mIoU"] == m["mIoU"] and len(saved["confusion"]["crf"]) == work["index"].num_classes
    assert len(list((wd / "eval" / "pred").glob("*.png"))) == len(work["index"].ids("val"))
    assert man["counts"]["images"] == len(work["index"].ids("val"))
    # the select / report halves (pipeline.data.holdout) partition the split
    assert set(m["parts"]) == {"select", "report"}
    assert sum(p["images"] for p in m["parts"].values()) == m["scored"]


def test_submit_output(work):
    wd, index = work["wd"], work["index"]
    ids = index.ids("test")
    res_dir = wd / "submit" / SUB
    assert sorted(p.name for p in res_dir.iterdir()) == sorted(f"{i}.png" for i in ids)
    assert validate_submission(res_dir, ids, index.root / "JPEGImages", index.num_classes) == []
    for i in ids:
        with Image.open(res_dir / f"{i}.png") as im:
            assert im.mode == "P" and im.size[::-1] == index.read_image(i).shape[:2]
            assert np.array(im).max() < index.num_classes
    with tarfile.open(wd / "submit" / "results.tgz") as tar:
        assert sorted(tar.getnames()) == sorted(f"{SUB}/{i}.png" for i in ids)
    man = read_manifest(wd / "submit")
    assert man["counts"]["archived"] == len(ids)
    ref = score_label_dir(index, "test", res_dir)          # held-out synthetic test masks
    assert man["metrics"]["mIoU"] == pytest.approx(ref["mIoU"]) and man["metrics"]["scored"] == len(ids)


def test_submit_stage_fails_naming_bad_files(work, monkeypatch):
    import stages.submit

    bad = work["index"].ids("test")[1]

    def writer(path, label, num_classes):
        write_prediction_png(path, label, num_classes)
        if Path(path).stem == bad:
            Image.fromarray(np.zeros((*label.shape, 3), np.uint8)).save(path)

    monkeypatch.setattr(stages.submit, "write_prediction_png", writer)
    cfg = make_cfg(submit_changes={"crf": dict(enabled=False)})
    sub = cfg.stage_section("submit", stages.submit.SECTIONS)
    with pytest.raises(StageError, match=f"{bad}.png"):
        run_stage("submit", ("data", "segmenter"), stages.submit.run, work["cfg"], sub, work["wd"])
    assert read_manifest(work["wd"] / "submit")["counts"]["archived"] == 3   # previous output kept


def _defect(kind, d: Path, index):
    ids = index.ids("test")
    f = d / f"{ids[0]}.png"
    h, w = index.read_image(ids[0]).shape[:2]
    if kind == "rgb":
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(f)
    elif kind == "size":
        write_prediction_png(f, np.zeros((h + 1, w), np.uint8), index.num_classes)
    elif kind == "value255":
        lab = np.zeros((h, w), np.uint8)
        lab[0, 0] = 255
        write_label_png(f, lab)
    elif kind == "missing":
        f.unlink()
    elif kind == "extra":
        f = d / "syn_999999.png"
        write_prediction_png(f, np.zeros((h, w), np.uint8), index.num_classes)
    return f.name


@pytest.mark.parametrize("kind", ["rgb", "size", "value255", "missing", "extra"])
def test_check_submission_names_each_defect(work, tmp_path, capsys, kind):
    from stages.check_submission import main

    d = tmp_path / "res"
    shutil.copytree(work["wd"] / "submit" / SUB, d)
    name = _defect(kind, d, work["index"])
    rc = main(["--dir", str(d), "--work-dir", str(work["wd"]), "--exp", str(work["exp"])])
    out = capsys.readouterr().out
    assert rc == 1 and name in out


def test_check_submission_ok_default_dir_and_archive(work, tmp_path, capsys):
    from stages.check_submission import main

    args = ["--work-dir", str(work["wd"]), "--exp", str(work["exp"])]
    assert main(args) == 0                                            # WORK_DIR/submit/...
    assert main(args + ["--dir", str(work["wd"] / "submit")]) == 0    # results root
    assert main(args + ["--dir", str(work["wd"] / "submit" / "results.tgz")]) == 0
    bad = tmp_path / "bad.tgz"
    with tarfile.open(bad, "w:gz") as tar:
        for p in sorted((work["wd"] / "submit" / SUB).iterdir()):
            tar.add(p, arcname=f"{SUB}/{p.name}")
        tar.add(p, arcname="stray.png")
    capsys.readouterr()
    assert main(args + ["--dir", str(bad)]) == 1
    assert "stray.png" in capsys.readouterr().out


def test_check_submission_cli_exit_status(work, tmp_path):
    d = tmp_path / "res"
    shutil.copytree(work["wd"] / "submit" / SUB, d)
    name = _defect("value255", d, work["index"])
    r = subprocess.run([sys.executable, "-m", "stages.check_submission", "--dir", str(d),
                        "--work-dir", str(work["wd"]), "--exp", str(work["exp"])],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and name in r.stdout and "problem" in r.stderr
