"""`make report` (stages/report.py) and `make ablation` (stages/ablation.py) on a tiny work dir.

One module-scoped work dir: synthetic data (48 px, 12 train images, 3 classes) through the data
stage, and a fake classifier stage (untrained tiny classifier + a fake scalars log);
the "ep" variant has the main classifier's config, so the ablation links that one.
The report is built with most stages missing, then again after the ablation (2-iteration
classifiers, three variants incl. "EP inference" on the GAP model) and with main-dir heatmaps,
seeds and a fake (untrained) segmenter, so the examples grid has every column.
"""
from __future__ import annotations

import json
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from pipeline.data.index import DatasetIndex
from pipeline.runtime.stage import read_manifest, run_stage
from stage_helpers import save_untrained_classifier, tiny_work_dir

BASE = Path(__file__).resolve().parent.parent / "configs" / "_base_"
BASES = ("classifier_vgg16_ep.py", "cues.py", "segmenter_dsrg_vgg16.py", "eval_submit.py")
EXP = f"_base_ = {[str(BASE / f) for f in BASES]!r}\n" + textwrap.dedent("""
    experiment = dict(name="report_test", seed=0, device="cpu")
    data = dict(dataset="synthetic", root=None, sbd_root=None, label_source="xml",
                synthetic=dict(seed=0, image_size=48, n_train=12, n_val=4, n_test=4, n_classes=3))
    classifier = dict(
        model=dict(backbone=dict(width=0.125, batch_norm=True), pooling=dict(type="ep"),
                   pretrained=None),
        train=dict(split="trainaug", crop=40, scale_range=(1.0, 1.0), batch_size=4, max_iters=2,
                   num_workers=0,
                   optimizer=dict(_delete_=True, type="Adam", lr=1e-3, weight_decay=0.0),
                   schedule=dict(_delete_=True, type="poly", power=0.9),
                   amp=False, log_interval=1, checkpoint_interval=100),
        val=dict(split="val", size=40, batch_size=4))
    heatmaps = dict(split="trainaug", size=40, scales=(1.0,), flip=False, pooling=None,
                    class_specific_lambda=False, batch_size=6, num_workers=0, amp=False)
    saliency = dict(split="trainaug", dir=None, rbd=dict(n_segments=30), workers=1)
    seeds = dict(heatmap_source="cam", fg_top=0.30, fg_mode="relative", bg_sal=0.06,
                 normalise_saliency=True, overlap="max", pseudo_bg_threshold=0.15,
                 export_dsrg_pickle=False, n_overlays=0)
    segmenter = dict(model=dict(width=0.0625, batch_norm=True, fc_channels=32, rates=(1, 2),
                                pretrained=None),
                     dsrg=dict(fg_threshold=0.85, bg_threshold=0.99))
    eval = dict(split="val", size=40, scales=(1.0,), flip=False, batch_size=4, amp=False,
                crf=dict(enabled=False))
    ablation = dict(
        variants=dict(
            gap={"label": "GAP (CAM)", "classifier.model.pooling.type": "gap",
                 "classifier.val.extra_poolings": ("ep",)},
            ep={"label": "EP", "classifier.model.pooling.type": "ep"},
            ep_inference={"label": "EP inference on the GAP model", "classifier_from": "gap",
                          "heatmaps.pooling": "ep"}),
        common={"classifier.train.max_iters": 2},
        full=False)
""")


class _Page(HTMLParser):
    """Collects <img src>, checks that non-void tags are closed in order."""
    VOID = {"img", "br", "meta", "link", "hr", "input"}

    def __init__(self):
        super().__init__()
        self.imgs, self.stack, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def check_page(report_dir: Path) -> tuple[str, list[str]]:
    text = (report_dir / "index.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    page = _Page()
    page.feed(text)
    page.close()
    assert not page.errors and not page.stack, (page.errors, page.stack)
    for src in page.imgs:
        assert not src.startswith(("/", "http")) and ".." not in src, src
        assert (report_dir / src).is_file(), src
    return text, page.imgs


def _fake_classifier(ctx):
    """An untrained tiny classifier and a fake scalars log (iterations 1-5 in an older run's
    mmengine file, 4-9 in the training loop's scalars.jsonl, whose lines win)."""
    save_untrained_classifier(ctx)
    index = DatasetIndex.load(ctx.upstream_dir("data"))

    def lines(its, loss_scale=1.0):
        return "".join(json.dumps({"iter": i, "loss": loss_scale / i, "cls_loss": 1.0 / i,
                                   "lr": 1e-3 * (1 - i / 10), "time": 0.1}) + "\n" for i in its)
    vis = ctx.out / "train" / "20250101_000000" / "vis_data"
    vis.mkdir(parents=True)
    vis.joinpath("scalars.json").write_text(lines(range(1, 6), loss_scale=5.0))
    (ctx.out / "train" / "scalars.jsonl").write_text(lines(range(4, 10)) + '{"iter": 10, "lo')   # cut line
    return {"counts": {"iterations": 9}, "metrics": {"val_mAP": 0.5, "pooling": "ep",
                                                     "val_AP": {c: 0.5 for c in index.fg_classes}}}


def _fake_segmenter(ctx):
    from pipeline.models.deeplab import build_segmenter
    from pipeline.runtime.checkpoint import save_model

    index = DatasetIndex.load(ctx.upstream_dir("data"))
    torch.manual_seed(0)
    cfg = ctx.section.model.to_dict()
    net = build_segmenter(cfg, index.num_classes)
    save_model(ctx.out / "model.pth", net, "segmenter", cfg, index.num_classes, index.classes)
    vis = ctx.out / "train" / "20250101_000000" / "vis_data"       # with the DSRG diagnostics
    vis.mkdir(parents=True)
    vis.joinpath("scalars.json").write_text("".join(
        json.dumps({"iter": i, "loss": 1.0 / i, "loss_seed": 0.5 / i, "seed_bg": 0.1, "seed_fg": 0.4 / i,
                    "cov_bg_before": 0.5, "cov_fg_before": 0.05, "cov_bg_after": 0.5 + 0.05 * i,
                    "cov_fg_after": 0.05, "pred_fg": 0.3 / i, "conf_bg": 0.4, "conf_fg": 0.01,
                    "lr": 1e-3}) + "\n" for i in range(1, 10)))
    return {"counts": {}, "metrics": {"val_mIoU": 0.1, "val_pred_fg": 0.02, "val_gt_fg": 0.2,
                                      "train_mIoU": 0.12, "train_scored": 7, "pseudo_mIoU": 0.3,
                                      "train_below_pseudo": True, "train_pred_fg": 0.03,
                                      "train_gt_fg": 0.21}}


def _fake_scores(miou):
    """A fake eval / upper_bound stage: summaries as pipeline.runtime.evaluation writes them."""
    def run(ctx):
        names = DatasetIndex.load(ctx.upstream_dir("data")).classes
        s = {"class_names": names, "IoU": [miou] * len(names), "mIoU": miou, "aAcc": 0.9, "mAcc": 0.8}
        return {"metrics": {"mIoU": miou, "mIoU_no_crf": miou, "mIoU_crf": None, "no_crf": s,
                            "crf": None}}
    return run


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    torch.set_num_threads(1)
    exp, wd, cfg = tiny_work_dir(tmp_path_factory.mktemp("report"), EXP, _fake_classifier)
    return type("Work", (), dict(exp=exp, wd=wd, cfg=cfg))


def test_report_with_missing_stages(work):
    from stages.report import main

    assert main(["--exp", str(work.exp), "--work-dir", str(work.wd)]) == 0
    rep = work.wd / "report"
    text, imgs = check_page(rep)
    assert "curves_classifier.png" in imgs
    missing = read_manifest(rep)["metrics"]["missing_stages"]
    assert {"segmenter", "eval", "upper_bound", "submit", "localize"} <= set(missing)
    assert "Missing stages:" in text and "<b>upper_bound</b>" in text
    assert "experiment = {" in text and "fg_top" in text      # the resolved config
    assert not list(work.wd.glob(".report*"))                 # no temporary folder left


def test_ablation_table_and_rerun_skips(work, capsys):
    from stages.ablation import main

    argv = ["--exp", str(work.exp), "--work-dir", str(work.wd)]
    assert main(argv) == 0
    root = work.wd / "ablation"
    res = json.loads((root / "results.json").read_text())
    names = ["gap", "ep", "ep_inference"]
    assert [r["variant"] for r in res["rows"]] == names
    md = (root / "results.md").read_text()
    assert sum(line.startswith(f"| {n} |") for n in names for line in md.splitlines()) == 3
    rows = {r["variant"]: r for r in res["rows"]}
    for r in rows.values():
        assert r["status"].startswith("ran"), r
        for key in ("mAP", "seed_precision", "seed_recall", "seed_mIoU", "pseudo_mIoU"):
            assert r[key] is not None and 0 <= r[key] <= 1, (r["variant"], key)
    assert rows["gap"]["pooling"] == "gap" and rows["ep_inference"]["pooling"] == "gap → ep"
    assert (root / "ep_inference" / "classifier").is_symlink()
    assert (root / "gap" / "data").resolve() == (work.wd / "data").resolve()
    # the GAP model scored with EP pooling; identical CAMs -> identical seeds
    assert rows["ep_inference"]["mAP"] == read_manifest(root / "gap" / "classifier")["metrics"]["other_poolings"]["ep"]
    assert rows["ep_inference"]["seed_mIoU"] == rows["gap"]["seed_mIoU"]
    # gap trains its own classifier (2 iterations); ep's config equals the main one: linked
    assert read_manifest(root / "gap" / "classifier")["counts"]["iterations"] == 2
    assert not (root / "gap" / "classifier").is_symlink()
    assert (root / "ep" / "classifier").resolve() == (work.wd / "classifier").resolve()
    assert rows["ep"]["mAP"] == 0.5 and rows["ep"]["classifier_link"]
    assert read_manifest(work.wd / "saliency") is not None

    digests = {n: dict(rows[n]["run_digest"]) for n in names}
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    res2 = json.loads((root / "results.json").read_text())
    for r in res2["rows"]:
        assert r["run_digest"] == digests[r["variant"]]
        assert r["status"] == "fresh (skipped)"
    assert "fresh" in out and "| gap |" in out
    # a subset: the others keep their rows, marked as not run now
    assert main(argv + ["--variants", "ep"]) == 0
    rows3 = {r["variant"]: r for r in json.loads((root / "results.json").read_text())["rows"]}
    assert rows3["ep"]["status"] == "fresh (skipped)"
    assert rows3["gap"]["status"] == "fresh (not run now)" and rows3["gap"]["mAP"] is not None
    assert main(argv + ["--variants", "nope"]) == 2


def test_full_report_with_examples_and_ablation(work):
    import stages.heatmaps
    import stages.seeds
    from stages.ablation import main as ablation_main
    from stages.report import build_report

    cfg, wd = work.cfg, work.wd
    if not (wd / "ablation" / "results.json").is_file():
        assert ablation_main(["--exp", str(work.exp), "--work-dir", str(wd), "--variants", "ep"]) == 0
    run_stage("heatmaps", ("data", "classifier"), stages.heatmaps.run, cfg, cfg.heatmaps, wd)
    run_stage("seeds", ("data", "heatmaps", "saliency"), stages.seeds.run, cfg, cfg.seeds, wd)
    run_stage("segmenter", ("data", "seeds"), _fake_segmenter, cfg, cfg.segmenter, wd)
    run_stage("eval", ("data", "segmenter"), _fake_scores(0.25), cfg, cfg.eval, wd)
    run_stage("upper_bound", ("data",), _fake_scores(0.5), cfg, {"x": 1}, wd)
    build_report(cfg, wd, device="cpu", exp_path=str(work.exp))
    text, imgs = check_page(wd / "report")
    examples = [s for s in imgs if s.startswith("examples/")]
    cols = ["image", "heatmap", "λ", "saliency", "seeds", "grown seeds", "prediction", "GT"]
    assert len(examples) == 6 * len(cols)
    for c in cols:
        assert f"<th class=l>{c}</th>" in text, c
    assert "Columns left out" not in text
    assert "EP inference on the GAP model" in text                # the ablation table
    assert "WSSS / upper bound = 0.500" in text and "iou_bars.png" in imgs
    assert "dsrg_segmenter.png" in imgs and "dsrg_classifier.png" not in imgs
    assert "segmenter on the 7 pseudo-mask images" in text and "scores below its own argmax" in text
    assert "3.00 % of the pseudo-mask images' pixels" in text
    assert "<b>submit</b>" in text and "<b>eval</b>" not in text   # still missing / now present
    states = {s: read_manifest(wd / s) is not None for s in ("heatmaps", "seeds", "segmenter")}
    assert all(states.values())
