"""Stage `retrain`: segmenter pseudo-labels (+CRF) -> an mmseg DeepLabV3+ trained by the project's
loop. These need mmsegmentation and a compiled mmcv (`make env-mm`; `make test-mm` runs them),
and are skipped, with that reason, where they are missing; the last test checks the stage's
one-line error without them."""
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from pipeline.data.files import read_label_png
from pipeline.data.index import DatasetIndex
from pipeline.runtime.stage import run_stage
from pipeline.settings import ConfigError, Settings, apply_overrides
from stage_helpers import seeds_from_masks

REPO = Path(__file__).resolve().parent.parent
DATA = dict(dataset="synthetic", root=None, sbd_root=None, label_source="xml",
            synthetic=dict(seed=1, image_size=48, n_train=8, n_val=4, n_test=2, n_classes=3))
BN = dict(type="SyncBN", requires_grad=True)
TINY_V3PLUS = dict(   # DeepLabV3+ with a ResNet-18-v1c trunk of width 8
    type="EncoderDecoder", pretrained=None,
    backbone=dict(type="ResNetV1c", depth=18, base_channels=8, stem_channels=8,
                  out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                  norm_cfg=BN, contract_dilation=True),
    decode_head=dict(type="DepthwiseSeparableASPPHead", in_channels=64, in_index=3, channels=16,
                     dilations=(1, 2), c1_in_channels=8, c1_channels=8, num_classes=99, norm_cfg=BN,
                     align_corners=False),
    auxiliary_head=dict(type="FCNHead", in_channels=32, in_index=2, channels=8, num_convs=1,
                        num_classes=99, norm_cfg=BN, align_corners=False,
                        loss_decode=dict(type="CrossEntropyLoss", loss_weight=0.4)),
    train_cfg=dict(), test_cfg=dict(mode="whole"))


def test_retrain_stage(tmp_path, mm_edge):
    import stages.data
    import stages.retrain as retrain
    import stages.segmenter as seg

    raw = {"experiment": dict(seed=0, device="cpu"), "data": DATA}
    for name in ("segmenter_dsrg_vgg16.py", "retrain_mmseg.py", "eval_submit.py"):
        raw.update(Config.fromfile(str(REPO / "configs/_base_" / name)).to_dict())
    raw = apply_overrides(raw, {
        "segmenter.model.width": 1 / 16, "segmenter.model.batch_norm": True,
        "segmenter.model.pretrained": None, "segmenter.model.rates": (1, 2),
        "segmenter.train.crop": 48, "segmenter.train.resize": None, "segmenter.train.batch_size": 4,
        "segmenter.train.max_iters": 1, "segmenter.train.num_workers": 0, "segmenter.crf.workers": 0,
        "segmenter.val.size": 48,
        "retrain.pseudo.size": 48, "retrain.pseudo.scales": (1.0,), "retrain.pseudo.crf.workers": 0,
        "retrain.train.crop": 48, "retrain.train.batch_size": 4, "retrain.train.max_iters": 2,
        "retrain.train.num_workers": 0, "retrain.train.log_interval": 1, "retrain.val.size": 48,
        "eval.size": 48, "eval.scales": (1.0,), "eval.batch_size": 2, "eval.amp": False,
        "eval.crf.workers": 0, "eval.n_overlays": 0, "eval.save_predictions": False,
        "eval.model": "retrain"})
    raw["retrain"]["model"] = TINY_V3PLUS
    cfg = Settings.from_dict(raw)
    run_stage("data", (), stages.data.run, cfg, cfg.data, tmp_path)
    run_stage("seeds", ("data",), seeds_from_masks, cfg, {"fake": 1}, tmp_path)
    run_stage("segmenter", seg.UPSTREAM, seg.run, cfg, cfg.segmenter, tmp_path)
    man = run_stage("retrain", retrain.UPSTREAM, retrain.run, cfg, cfg.retrain, tmp_path)

    out = tmp_path / "retrain"
    index = DatasetIndex.load(tmp_path / "data")
    pseudo = [read_label_png(out / "pseudo" / f"{i}.png") for i in index.ids("trainaug")]
    assert len(pseudo) == 8 and all(p.shape == (48, 48) and p.max() < 4 for p in pseudo)
    assert man["counts"]["iterations"] == 2 and man["counts"]["val_scored"] == 4
    assert 0 <= man["metrics"]["val_mIoU"] <= 1 and 0 <= man["metrics"]["pseudo_mIoU"] <= 1
    assert (out / "train" / "iter_2.pth").is_file()

    from pipeline.mm.segmentation import load_mmseg_model

    net, meta = load_mmseg_model(out / "model.pth")
    assert meta["num_classes"] == 4 and meta["classes"] == index.classes
    logits = net.eval()(torch.zeros(1, 3, 48, 48))
    assert logits.shape[1] == 4 and torch.isfinite(logits).all()
    # the DSRG-trained segmenter's pseudo-labels are resumable: existing files are not redone
    ctx = type("Ctx", (), dict(out=out, rank=0, world_size=1, device="cpu", log=print,
                               upstream_dir=lambda self, n: tmp_path / n))()
    assert retrain.make_pseudo_labels(ctx, index, cfg.retrain.pseudo) == 0

    # the retrained model goes through the full eval protocol (eval.model = 'retrain')
    import stages.eval as ev
    from pipeline.mm import load_any_model
    from pipeline.runtime.checkpoint import load_model

    net2, meta2 = load_any_model(out / "model.pth", kind="segmenter")
    assert torch.equal(net2.eval()(torch.zeros(1, 3, 48, 48)), logits)
    with pytest.raises(ValueError, match="mmseg segmentor, expected a classifier"):
        load_any_model(out / "model.pth", kind="classifier")
    with pytest.raises(ValueError, match="pipeline.mm.load_any_model"):    # the core names the edge
        load_model(out / "model.pth", kind="segmenter")
    esec = cfg.eval
    assert ev.upstream_for(esec) == ("data", "retrain")
    assert ev.upstream_for(esec.replace(model="segmenter")) == ("data", "segmenter")
    eman = run_stage("eval", ev.upstream_for(esec), ev.run, cfg, esec, tmp_path)
    assert set(eman["upstream"]) == {"data", "retrain"}
    assert eman["counts"]["scored"] == 4 and 0 <= eman["metrics"]["mIoU_crf"] <= 1
    with pytest.raises(ConfigError, match="eval.model='classifier' is not allowed"):
        cfg.with_overrides({"eval.model": "classifier"})
    import stages.submit as sub
    assert sub.upstream_for({"submit": cfg.submit, "eval": esec}) == ("data", "retrain")
    own = cfg.with_overrides({"submit.model": "segmenter"})
    assert sub.upstream_for({"submit": own.submit, "eval": esec}) == ("data", "segmenter")


@pytest.mark.parametrize("heads", ["decode", "both"])
def test_mmseg_losses_and_num_classes_override(heads, mm_edge):
    from pipeline.mm.segmentation import MMSegLogits, build_mmseg_model, mmseg_losses

    cfg = dict(TINY_V3PLUS, backbone=dict(TINY_V3PLUS["backbone"], norm_cfg=dict(type="BN")))
    cfg["decode_head"] = dict(cfg["decode_head"], norm_cfg=dict(type="BN"))
    cfg["auxiliary_head"] = (dict(cfg["auxiliary_head"], norm_cfg=dict(type="BN"))
                             if heads == "both" else None)
    model = build_mmseg_model(cfg, 5)
    labels = torch.full((2, 32, 32), 255)
    labels[:, :8] = 0
    labels[:, 20:, 20:] = 3
    losses = mmseg_losses(model, torch.randn(2, 3, 32, 32), labels)
    assert torch.isfinite(losses["decode.loss_ce"])
    assert ("aux.loss_ce" in losses) == (heads == "both")
    assert MMSegLogits(model).eval()(torch.randn(1, 3, 32, 32)).shape[1] == 5


def test_without_mmseg_the_stage_and_model_files_say_how_to_install_it(tmp_path, monkeypatch):
    import stages.retrain as retrain
    from pipeline.mm import MMSegUnavailable, load_any_model
    from pipeline.runtime.checkpoint import MMSEG_FORMAT
    from pipeline.runtime.stage import StageError

    # `import mmseg` (and any of its submodules, also those already imported) raises ImportError
    for name in [m for m in sys.modules if m == "mmseg" or m.startswith("mmseg.")] or ["mmseg"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "pipeline.mm.segmentation", raising=False)
    section = type("Retrain", (), {"model": dict(TINY_V3PLUS), "train": None})()   # typed keys read
    ctx = type("Ctx", (), {"section": section})()
    with pytest.raises(StageError, match="make env-mm") as info:
        retrain.run(ctx)                                     # before any work
    assert "\n" not in str(info.value)
    path = tmp_path / "model.pth"
    torch.save({"format": MMSEG_FORMAT, "kind": "mmseg", "model_cfg": {}, "num_classes": 2,
                "classes": ["a", "b"], "state_dict": {}}, path)
    with pytest.raises(MMSegUnavailable, match="make env-mm"):
        load_any_model(path, kind="segmenter")
