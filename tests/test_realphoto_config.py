"""configs/realphoto_cpu.py runs: data, classifier and segmenter on the cached frozen
EfficientNet-Lite2 trunk, heatmaps reading the cache, seeds, the upper bound, the second round
(pseudo-labels and training on the cache) and eval, on the small synthetic VOC tree with a
generated weight file in the package's layout; only sizes, iterations and paths are overridden."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.models.efficientnet_lite import EfficientNetLite
from stage_helpers import run_stage_cli

REPO = Path(__file__).resolve().parent.parent
EXP = REPO / "configs" / "realphoto_cpu.py"


def _package_file(path: Path) -> Path:
    """A random EfficientNet-Lite2 (the config's trunk) in the package's key layout."""
    top = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1"}
    state = {}
    for k, v in EfficientNetLite(variant=2).state_dict().items():
        parts = k.split(".")
        name = (f"_blocks.{parts[1]}._{parts[2]}.{parts[3]}" if parts[0] == "blocks"
                else f"{top[parts[0]]}.{parts[1]}")
        state[name] = v
    state["_fc.weight"], state["_fc.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    torch.save(state, path)
    return path


def _manifest(work: Path, stage: str) -> dict:
    return json.loads((work / stage / "manifest.json").read_text())


def test_the_real_photo_config_runs_every_stage_on_the_cached_trunk(tmp_path, synthetic_tree, one_thread):
    weights = _package_file(tmp_path / "lite2.pth")
    work = tmp_path / "work"
    size = "33"                                     # classifier and cues: 33 px -> 5x5 grid
    seg = "41"                                      # segmenter side: 41 px -> 6x6 (225 / 321 in the config)
    common = [f"data.root={synthetic_tree.voc}", "data.aug_dir=None",
              f"classifier.model.pretrained={weights}", f"segmenter.model.pretrained={weights}",
              f"classifier.train.crop={size}", f"classifier.train.resize={size}",
              "classifier.train.max_iters=2", "classifier.train.batch_size=4",
              f"classifier.val.size={size}", f"heatmaps.size={size}",
              "saliency.workers=0", "saliency.rbd.n_segments=20",
              f"segmenter.train.crop={seg}", f"segmenter.train.resize={seg}",
              "segmenter.train.max_iters=2", "segmenter.train.batch_size=4", "segmenter.model.rates=(1,2)",
              f"segmenter.val.size={seg}", f"eval.size={seg}", "eval.crf.workers=0",
              f"retrain.pseudo.size={seg}", "retrain.pseudo.crf.workers=0",
              f"retrain.train.crop={seg}", f"retrain.train.resize={seg}", "retrain.train.max_iters=2",
              f"retrain.val.size={seg}"]
    for stage in ("data", "classifier", "heatmaps", "saliency", "seeds", "segmenter", "upper_bound",
                  "retrain", "eval"):
        assert run_stage_cli(f"stages.{stage}", EXP, work, *common)["stage"] == stage
    n_train = synthetic_tree.cfg["n_train"]
    caches = list((work / "cache" / "trunk").iterdir())
    # two caches, one per input size: classifier + heatmaps, and segmenter + upper bound + retrain
    assert len(caches) == 2 and all(len(list(c.glob("*.pt"))) == n_train for c in caches)
    assert _manifest(work, "heatmaps")["metrics"]["trunk_cache_hits"] == n_train
    cls = torch.load(work / "classifier" / "model.pth", weights_only=True)
    assert cls["model_cfg"]["backbone"]["type"] == "efficientnet_lite2"
    seg = torch.load(work / "retrain" / "model.pth", weights_only=True)
    assert seg["model_cfg"]["backbone"] == {"type": "efficientnet_lite2", "frozen_blocks": 21,
                                            "taps": [14, 20, "head"]}
    assert len(list((work / "retrain" / "pseudo").glob("*.png"))) == n_train
    assert _manifest(work, "eval")["metrics"]["mIoU"] is not None
    assert _manifest(work, "upper_bound")["metrics"]["mIoU"] is not None


def test_the_gap_variant_shares_one_trunk_cache_with_the_segmenter(tmp_path, synthetic_tree, one_thread):
    """configs/realphoto_cpu_gap.py: a GAP classifier whose training, heatmaps and the segmenter
    read one trunk cache (all at the segmenter's input size; 41 px here, 321 in the config)."""
    from stages.common import load_experiment

    gap = REPO / "configs" / "realphoto_cpu_gap.py"
    cfg = load_experiment(gap)
    assert cfg.classifier.model.pooling.type == "gap"
    assert cfg.classifier.train.crop == cfg.heatmaps.size == cfg.segmenter.train.crop == cfg.eval.size
    weights = _package_file(tmp_path / "lite2.pth")
    work, seg = tmp_path / "work", "41"
    opts = [f"data.root={synthetic_tree.voc}", "data.aug_dir=None",
            f"classifier.model.pretrained={weights}", f"segmenter.model.pretrained={weights}",
            f"classifier.train.crop={seg}", f"classifier.train.resize={seg}",
            "classifier.train.max_iters=2", "classifier.train.batch_size=4",
            f"classifier.val.size={seg}", f"heatmaps.size={seg}",
            "saliency.workers=0", "saliency.rbd.n_segments=20",
            f"segmenter.train.crop={seg}", f"segmenter.train.resize={seg}",
            "segmenter.train.max_iters=2", "segmenter.train.batch_size=4", "segmenter.model.rates=(1,2)",
            f"segmenter.val.size={seg}"]
    for stage in ("data", "classifier", "heatmaps", "saliency", "seeds", "segmenter"):
        assert run_stage_cli(f"stages.{stage}", gap, work, *opts)["stage"] == stage
    caches = list((work / "cache" / "trunk").iterdir())
    assert len(caches) == 1 and len(list(caches[0].glob("*.pt"))) == synthetic_tree.cfg["n_train"]
    assert torch.load(work / "classifier" / "model.pth", weights_only=True)["model_cfg"]["pooling"]["type"] == "gap"
