"""Segmenter stage: training (DSRG and the GT/CE upper bound), resume, the quick val mIoU and
model.pth; mmseg registrations (where mmseg is installed); the DeepLab lr/decay multipliers."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config

import stages.segmenter as seg_stage
from pipeline.data.files import write_label_png
from pipeline.data.index import DatasetIndex
from pipeline.models.deeplab import DeepLabV2VGG16, build_segmenter
from pipeline.runtime.checkpoint import load_segmenter
from pipeline.runtime.stage import run_stage
from pipeline.settings import ConfigError, Settings, apply_overrides

REPO = Path(__file__).resolve().parent.parent
DATA = dict(dataset="synthetic", root=None, sbd_root=None, label_source="xml",
            synthetic=dict(seed=0, image_size=48, n_train=12, n_val=4, n_test=2, n_classes=3))
SMALL = {"segmenter.model.width": 1 / 16, "segmenter.model.batch_norm": True,
         "segmenter.model.pretrained": None, "segmenter.model.rates": (1, 2),
         "segmenter.train.crop": 48, "segmenter.train.resize": None, "segmenter.train.batch_size": 4,
         "segmenter.train.max_iters": 1, "segmenter.train.num_workers": 0,
         "segmenter.train.log_interval": 1, "segmenter.train.checkpoint_interval": 100,
         "segmenter.crf.workers": 0, "segmenter.val.size": 48, "segmenter.val.batch_size": 4}


BASE = Config.fromfile(str(REPO / "configs/_base_/segmenter_dsrg_vgg16.py")).to_dict()


def make_cfg(**overrides) -> Settings:
    raw = dict(experiment=dict(name="test", seed=0, device="cpu"), data=DATA,
               segmenter=BASE["segmenter"])
    return Settings.from_dict(apply_overrides(raw, {**SMALL, **overrides}))


def fake_seeds(ctx):
    """Seeds from the GT masks with ~75% of the pixels unlabelled (255)."""
    index = DatasetIndex.load(ctx.upstream_dir("data"))
    rng = np.random.default_rng(0)
    (ctx.out / "labels").mkdir()
    for img_id in index.ids("trainaug"):
        m = index.read_mask(img_id).copy()
        m[rng.random(m.shape) < 0.75] = 255
        write_label_png(ctx.out / "labels" / f"{img_id}.png", m)
    return {"counts": {"images": len(index.ids("trainaug"))}}


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    import stages.data

    wd = tmp_path_factory.mktemp("segwork")
    cfg = Settings.from_dict(dict(experiment=dict(seed=0, device="cpu"), data=DATA))
    run_stage("data", (), stages.data.run, cfg, cfg.data, wd)
    run_stage("seeds", ("data",), fake_seeds, cfg, {"fake": True}, wd)
    return wd


def fake_ctx(cfg, out):
    return SimpleNamespace(cfg=cfg, out=Path(out), log=print, rank=0, world_size=1, device="cpu")


def _changed(a: dict, b: dict, keys) -> bool:
    return all(not torch.equal(a[k], b[k]) for k in keys)


def test_stage_one_iteration_updates_weights_and_writes_model(work_dir):
    cfg = make_cfg()
    man = run_stage("segmenter", seg_stage.UPSTREAM, seg_stage.run, cfg, cfg.segmenter, work_dir)
    out = work_dir / "segmenter"
    assert man["counts"]["iterations"] == 1 and man["counts"]["train_images"] == 12
    assert 0.0 <= man["metrics"]["val_mIoU"] <= 1.0 and man["metrics"]["loss"] == "dsrg"
    assert (out / "train" / "iter_1.pth").is_file()
    net, meta = load_segmenter(out / "model.pth")
    index = DatasetIndex.load(work_dir / "data")
    assert isinstance(net, DeepLabV2VGG16) and meta["num_classes"] == index.num_classes == 4
    assert meta["classes"] == index.classes
    torch.manual_seed(0)                                  # the stage's initial weights
    init = build_segmenter(seg_stage.model_config(cfg.segmenter), 4).state_dict()
    trained = net.state_dict()
    assert _changed(init, trained, ["features.0.weight", "aspp.0.fc8.weight", "aspp.1.fc8.bias"])


def test_resume_continues_from_the_last_iteration(work_dir, tmp_path, monkeypatch):
    import pipeline.dsrg

    calls = []
    real = pipeline.dsrg.dsrg_losses

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(pipeline.dsrg, "dsrg_losses", counting)   # what segmenter_loss_fn calls
    index = DatasetIndex.load(work_dir / "data")
    labels = work_dir / "seeds" / "labels"
    cfg = make_cfg(**{"segmenter.train.max_iters": 2})
    seg_stage.train_segmenter(fake_ctx(cfg, tmp_path), index, labels, cfg.segmenter)
    assert len(calls) == 2 and (tmp_path / "train" / "iter_2.pth").is_file()
    cfg = make_cfg(**{"segmenter.train.max_iters": 4})
    net = seg_stage.train_segmenter(fake_ctx(cfg, tmp_path), index, labels, cfg.segmenter)
    assert len(calls) == 4                                # iterations 3 and 4 only
    ckpt = torch.load(tmp_path / "train" / "iter_4.pth", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["iter"] == 4
    assert isinstance(net, DeepLabV2VGG16)


def test_upper_bound_gt_ce_trains(work_dir, tmp_path):
    cfg = make_cfg(**{"segmenter.loss": "ce", "segmenter.train.labels": "gt",
                      "segmenter.ce.resolution": "output"})
    index = DatasetIndex.load(work_dir / "data")
    torch.manual_seed(0)
    init = build_segmenter(seg_stage.model_config(cfg.segmenter), 4).state_dict()
    net = seg_stage.train_segmenter(fake_ctx(cfg, tmp_path), index, None, cfg.segmenter)
    assert _changed(init, net.state_dict(), ["features.0.weight", "aspp.0.fc8.weight"])
    res = seg_stage.evaluate_and_save(fake_ctx(cfg, tmp_path), net, index, cfg.segmenter)
    assert (tmp_path / "model.pth").is_file() and res["counts"]["val_scored"] == 4


def test_bad_options_are_clear_errors():
    with pytest.raises(ConfigError, match=r"segmenter\.train\.labels='pseudo' is not allowed: "
                                          r"it must be one of 'seeds', 'gt'"):
        make_cfg(**{"segmenter.train.labels": "pseudo"})
    with pytest.raises(ConfigError, match=r"segmenter\.loss='sec'"):
        make_cfg(**{"segmenter.loss": "sec"})


def _settings(opt) -> dict:
    return {id(p): (g["lr"], g.get("weight_decay", 0.0)) for g in opt.param_groups for p in g["params"]}


def test_optimizer_groups_match_deeplab_prototxt_multipliers():
    from pipeline.runtime.training import build_optimizer

    tr = make_cfg().segmenter.train
    for bn in (False, True):
        net = DeepLabV2VGG16(5, width=1 / 16, batch_norm=bn, rates=(1, 2))
        got = _settings(build_optimizer(net, tr.optimizer, tr.lr_mult, tr.paramwise))
        want = {id(p): (g["lr"], g["weight_decay"]) for g in net.param_groups(5e-4, 5e-4)
                for p in g["params"]}
        assert got.keys() == want.keys()
        for k, (lr, wd) in want.items():
            assert got[k] == pytest.approx((lr, wd))
    # plain float multipliers, no paramwise options
    net = DeepLabV2VGG16(5, width=1 / 16, rates=(1,))
    lrs = {k: v[0] for k, v in _settings(build_optimizer(net, dict(type="SGD", lr=1e-3),
                                                         {"fc8.weight": 10})).items()}
    assert lrs[id(net.aspp[0].fc8.weight)] == pytest.approx(1e-2)
    assert lrs[id(net.aspp[0].fc8.bias)] == pytest.approx(1e-3)


PSEUDO_IDS = 8          # of the 12 training images, the ones the fake seeds stage scores


def fake_seeds_with_pseudo(ctx):
    """fake_seeds plus argmax "pseudo-masks" for the first PSEUDO_IDS images and an unreachable
    pseudo-mask mIoU in the manifest (a one-iteration segmenter must score below it)."""
    out = fake_seeds(ctx)
    index = DatasetIndex.load(ctx.upstream_dir("data"))
    (ctx.out / "pseudo").mkdir()
    for img_id in index.ids("trainaug")[:PSEUDO_IDS]:
        write_label_png(ctx.out / "pseudo" / f"{img_id}.png", index.read_mask(img_id))
    return {**out, "metrics": {"pseudo": {"mIoU": 0.99}}}


def test_train_score_and_collapse_diagnostics_on_a_tiny_run(tmp_path):
    import stages.data
    from pipeline.inference import predict_probs
    from pipeline.metrics import ConfusionMatrix
    from pipeline.report.plots import read_scalars

    cfg = make_cfg(**{"segmenter.train.max_iters": 2})
    run_stage("data", (), stages.data.run, cfg, cfg.data, tmp_path)
    run_stage("seeds", ("data",), fake_seeds_with_pseudo, cfg, {"fake": "pseudo"}, tmp_path)
    man = run_stage("segmenter", seg_stage.UPSTREAM, seg_stage.run, cfg, cfg.segmenter, tmp_path)
    m = man["metrics"]
    # scored on exactly the pseudo-mask images, with the stage's single-scale no-CRF settings
    index = DatasetIndex.load(tmp_path / "data")
    ids = index.ids("trainaug")[:PSEUDO_IDS]
    net, _ = load_segmenter(tmp_path / "segmenter" / "model.pth")
    probs = predict_probs(net.eval(), [index.read_image(i) for i in ids], flip=False, size=48)
    cm = ConfusionMatrix(index.num_classes)
    for i, p in zip(ids, probs):
        cm.update(p.argmax(0), index.read_mask(i))
    assert m["train_scored"] == PSEUDO_IDS
    assert m["train_mIoU"] == pytest.approx(cm.summary(index.classes)["mIoU"])
    assert m["train_pred_fg"] == pytest.approx(cm.mat[:, 1:].sum() / cm.mat.sum())
    assert m["train_gt_fg"] == pytest.approx(cm.mat[1:].sum() / cm.mat.sum())
    assert 0 <= m["val_pred_fg"] <= 1 and 0 < m["val_gt_fg"] < 1
    # compared with the seeds stage's pseudo-mask mIoU, with a warning in the log when lower
    assert m["pseudo_mIoU"] == 0.99 and m["train_below_pseudo"] is True
    assert "WARNING: the segmenter scores below its own pseudo-masks" in (
        tmp_path / "segmenter" / "log.txt").read_text()
    # the training log carries the diagnostics at every logging interval (log_interval 1)
    recs = read_scalars(tmp_path / "segmenter" / "train")
    keys = ("pred_fg", "conf_bg", "conf_fg", "cov_bg_before", "cov_fg_before", "cov_bg_after",
            "cov_fg_after", "seed_bg", "seed_fg")
    assert [r["iter"] for r in recs] == [1, 2]
    for r in recs:
        assert all(0 <= r[k] <= 1 for k in keys[:-2]), r
        assert r["cov_bg_after"] >= r["cov_bg_before"] and r["cov_fg_after"] >= r["cov_fg_before"]
    # no warning when the pseudo-masks score lower; score_train=False skips the train score
    ctx = SimpleNamespace(**vars(fake_ctx(cfg, tmp_path / "x")), upstream_dir=lambda s: tmp_path / s,
                          upstream_manifests={"seeds": {"metrics": {"pseudo": {"mIoU": 0.0}}}})
    logs = []
    ctx.log = logs.append
    got = seg_stage.score_on_train(ctx, net, index, cfg.segmenter)
    assert got["train_below_pseudo"] is False and got["train_mIoU"] == m["train_mIoU"]
    assert not any("WARNING" in x for x in logs)
    # the offline growing check on the same run: shares in [0, 1]
    from stages.growing_check import ROWS, check, format_check

    res = check(tmp_path, cfg.segmenter, 5)
    assert res["images"] == 5 and res["grid"] == (net.output_size(48),) * 2
    for row in ROWS:
        assert all(v is None or 0 <= v <= 1 for v in res[row].values()), row
    assert res["grid_gt_mIoU"] > 0.3 and "grown on CRF(P)" in format_check(res)
    off = make_cfg(**{"segmenter.train.max_iters": 2, "segmenter.val.score_train": False})
    man = run_stage("segmenter", seg_stage.UPSTREAM, seg_stage.run, off, off.segmenter, tmp_path)
    assert "train_mIoU" not in man["metrics"] and "val_pred_fg" in man["metrics"]
