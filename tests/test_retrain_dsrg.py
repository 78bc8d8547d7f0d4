"""Stage `retrain` as DSRG's second round: the first round's DeepLab-ASPP, started from its
weights, trained with cross-entropy on its own CRF pseudo-labels by the segmenter code (no
mmseg); scored by `eval` with eval.model=retrain. Also the mmseg switch's weight checks."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import stages.retrain as retrain
from pipeline.data.files import read_label_png
from pipeline.data.index import DatasetIndex
from pipeline.models.deeplab import build_segmenter
from pipeline.runtime.checkpoint import load_model
from pipeline.runtime.stage import StageError, run_stage
from pipeline.settings import ConfigError, Settings, apply_overrides
from stage_helpers import seeds_from_masks

REPO = Path(__file__).resolve().parent.parent
DATA = dict(dataset="synthetic", root=None, sbd_root=None, label_source="xml",
            synthetic=dict(seed=2, image_size=48, n_train=6, n_val=3, n_test=2, n_classes=3))
TINY = {"segmenter.model.width": 1 / 16, "segmenter.model.batch_norm": False,
        "segmenter.model.fc_channels": 16, "segmenter.model.pretrained": None,
        "segmenter.model.rates": (1, 2), "segmenter.loss": "ce",
        "segmenter.train.crop": 48, "segmenter.train.resize": None, "segmenter.train.batch_size": 3,
        "segmenter.train.max_iters": 1, "segmenter.train.num_workers": 0, "segmenter.crf.workers": 0,
        "segmenter.val.size": 48,
        "retrain.pseudo.protocol": "resized-square", "retrain.pseudo.size": 48,
        "retrain.pseudo.scales": (1.0,), "retrain.pseudo.crf.workers": 0,
        "retrain.train.crop": 48, "retrain.train.batch_size": 3, "retrain.train.max_iters": 2,
        "retrain.train.num_workers": 0, "retrain.train.log_interval": 1, "retrain.val.size": 48,
        "retrain.train.optimizer": dict(type="SGD", lr=0.0, momentum=0.0, weight_decay=0.0)}


def make_raw(**overrides) -> dict:
    raw = dict(experiment=dict(seed=0, device="cpu"), data=DATA)
    for name in ("segmenter_dsrg_vgg16", "retrain_dsrg", "eval_submit"):
        base = Config.fromfile(str(REPO / f"configs/_base_/{name}.py")).to_dict()
        raw.update({k: v for k, v in base.items() if k in ("segmenter", "retrain", "eval")})
    return apply_overrides(raw, {**TINY, **overrides})


def make_cfg(**overrides) -> Settings:
    return Settings.from_dict(make_raw(**overrides))


@pytest.fixture(scope="module")
def first_round(tmp_path_factory):
    """data + fake seeds + a one-iteration first-round segmenter (cross-entropy on the seeds)."""
    import stages.data
    import stages.segmenter as seg

    wd = tmp_path_factory.mktemp("round1")
    cfg = make_cfg()
    run_stage("data", (), stages.data.run, cfg, cfg.data, wd)
    run_stage("seeds", ("data",), seeds_from_masks, cfg, {"fake": 1}, wd)
    run_stage("segmenter", seg.UPSTREAM, seg.run, cfg, cfg.segmenter, wd)
    return wd


def _run(cfg, wd, **kw):
    return run_stage("retrain", retrain.UPSTREAM, retrain.run, cfg, cfg.retrain, wd, device="cpu",
                     **kw)


def _state(path):
    return load_model(path, kind="segmenter")[0].state_dict()


def test_second_round_starts_from_the_first_round_and_is_scored_by_eval(first_round):
    cfg = make_cfg()
    man = _run(cfg, first_round)
    out = first_round / "retrain"
    index = DatasetIndex.load(first_round / "data")
    for img_id in index.ids("trainaug"):
        p = read_label_png(out / "pseudo" / f"{img_id}.png")
        assert p.shape == (48, 48) and p.max() < index.num_classes
    assert man["metrics"]["model_type"] == "DeepLabV2VGG16"
    assert man["metrics"]["pseudo_protocol"]["protocol"].startswith("resized-square")
    assert man["counts"]["iterations"] == 2 and man["counts"]["val_scored"] == 3
    assert (out / "train" / "iter_2.pth").is_file()
    # lr 0: two iterations leave the first round's weights (no BatchNorm, dropout only in the
    # forward pass), so the second round started from them, fc8 included
    first, second = _state(first_round / "segmenter" / "model.pth"), _state(out / "model.pth")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    log = (out / "log.txt").read_text()
    assert "loss=ce" in log and "retrain/pseudo" in log.replace("/.partial", "")
    # eval.model=retrain scores it with the eval protocol
    import stages.eval as ev
    esec = cfg.with_overrides({"eval.model": "retrain", "eval.protocol": "resized-square",
                               "eval.size": 48, "eval.scales": (1.0,), "eval.flip": False,
                               "eval.batch_size": 3, "eval.amp": False, "eval.n_overlays": 0,
                               "eval.save_predictions": False, "eval.crf.enabled": False}).eval
    eman = run_stage("eval", ev.upstream_for(esec), ev.run, cfg, esec, first_round, device="cpu")
    assert set(eman["upstream"]) == {"data", "retrain"} and eman["counts"]["scored"] == 3


def test_second_round_from_the_pretrained_start_and_with_a_learning_rate(first_round, tmp_path):
    for stage in ("data", "seeds", "segmenter"):
        (tmp_path / stage).symlink_to(first_round / stage)
    cfg = make_cfg(**{"retrain.model.init": "pretrained"})
    _run(cfg, tmp_path)
    model_cfg = load_model(first_round / "segmenter" / "model.pth")[1]["model_cfg"]
    torch.manual_seed(0)                     # experiment.seed: the segmenter's own start
    fresh = build_segmenter(model_cfg, 4)
    second = _state(tmp_path / "retrain" / "model.pth")
    assert all(torch.equal(v, second[k]) for k, v in fresh.state_dict().items())
    cfg = make_cfg(**{"retrain.train.optimizer": dict(type="SGD", lr=0.1, momentum=0.9)})
    _run(cfg, tmp_path)                      # the section changed: re-runs, from the first round
    first = _state(first_round / "segmenter" / "model.pth")
    trained = _state(tmp_path / "retrain" / "model.pth")
    assert not torch.equal(first["aspp.0.fc8.weight"], trained["aspp.0.fc8.weight"])


def test_bad_model_settings_are_named(first_round, tmp_path):
    for stage in ("data", "seeds", "segmenter"):
        (tmp_path / stage).symlink_to(first_round / stage)
    # the config keys are checked when the experiment is loaded
    with pytest.raises(ConfigError, match=r"retrain.model.init='imagenet' is not allowed: it must "
                                          r"be one of 'segmenter', 'pretrained'"):
        make_cfg(**{"retrain.model.init": "imagenet"})
    with pytest.raises(ConfigError, match=r"retrain.model.width is not a key of type "
                                          r"'DeepLabV2VGG16'"):
        make_cfg(**{"retrain.model.width": 0.5})

    def with_model(model) -> Settings:
        raw = make_raw()
        raw["retrain"]["model"] = model
        return Settings.from_dict(raw)

    remote = dict(type="EncoderDecoder", pretrained="open-mmlab://resnet50_v1c",
                  backbone=dict(type="ResNetV1c"))
    with pytest.raises(StageError, match="retrain.model.pretrained.*downloaded at run time"):
        _run(with_model(remote), tmp_path)
    assert not (tmp_path / ".partial" / "retrain" / "pseudo").exists()   # stopped before any work
    local = dict(remote, pretrained=None,
                 backbone=dict(type="ResNetV1c", init_cfg=dict(type="Pretrained",
                                                               checkpoint="no/such/r50.pth")))
    with pytest.raises(StageError, match=r"retrain.model.backbone.init_cfg.checkpoint: weight file "
                                         r".*no/such/r50.pth not found"):
        _run(with_model(local), tmp_path)
    try:
        import mmseg  # noqa: F401
    except ImportError:                      # the core environment: the stage says what to build
        (tmp_path / "r50.pth").write_bytes(b"x")
        local["backbone"]["init_cfg"]["checkpoint"] = str(tmp_path / "r50.pth")
        with pytest.raises(StageError, match="needs mmsegmentation.*make env-mm"):
            _run(with_model(local), tmp_path)


def test_local_weights_resolves_paths_without_touching_the_config(tmp_path):
    (tmp_path / "r50.pth").write_bytes(b"x")
    cfg = dict(type="EncoderDecoder", pretrained=str(tmp_path / "r50.pth"),
               backbone=dict(init_cfg=[dict(type="Pretrained", checkpoint=str(tmp_path / "r50.pth"))]))
    out = retrain.local_weights(cfg)
    assert out["pretrained"] == str(tmp_path / "r50.pth")
    assert out["backbone"]["init_cfg"][0]["checkpoint"] == str(tmp_path / "r50.pth")
    assert retrain.local_weights(dict(type="X", pretrained=None))["pretrained"] is None
    with pytest.raises(StageError, match=r"retrain.model.backbone.init_cfg\[0\].checkpoint"):
        retrain.local_weights(dict(backbone=dict(init_cfg=[dict(checkpoint="https://x/r50.pth")])))


def test_voc_and_demo_retrain_is_the_dsrg_second_round():
    from stages.common import load_experiment

    for name in ("voc_ep_dsrg", "voc_gap_dsrg", "demo_synthetic"):
        r = load_experiment(REPO / "configs" / f"{name}.py").retrain
        assert r.model == dict(type="DeepLabV2VGG16", init="segmenter"), name
        assert r.ce.resolution == "output" and r.train.schedule.type == "poly"
    r = load_experiment(REPO / "configs/voc_ep_dsrg.py").retrain
    # DSRG's solver-f.prototxt / train-f.prototxt / run.sh
    assert (r.train.max_iters, r.train.batch_size, r.train.crop) == (20000, 10, 321)
    assert r.train.optimizer == dict(type="SGD", lr=1e-3, momentum=0.9, weight_decay=5e-4)
    assert r.train.schedule.power == 0.9 and r.pseudo.protocol == "test-ms"
    mm = load_experiment(REPO / "configs/voc_ep_dsrg_mmseg.py").retrain
    assert mm.model["type"] == "EncoderDecoder" and "://" not in mm.model["pretrained"]
