"""The VOC configs run: every stage of configs/voc_ep_dsrg.py and configs/voc_gap_dsrg.py, from
`make data` to the second round, eval, submit, localize and the report, on a tiny VOC tree in
DeepLab's SegmentationClassAug layout (20 VOC classes, no classes.txt) with a generated
torchvision-layout VGG-16 file, on the CPU. The configs are used as they are; only sizes,
iteration counts, worker counts, the ASPP width and paths are overridden with `--opts`, as a user
would. The GAP config runs in the EP config's work dir, so the stages that do not depend on the
classifier stay fresh (checked) and the test stays short."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.files import read_label_png, write_label_png
from pipeline.data.vocxml import VocAnnotation, VocObject, write_voc_xml
from pipeline.runtime.checkpoint import load_model
from pipeline.voc import VOC_CLASSES
from stage_helpers import run_stage_cli, vgg16_layout_state

REPO = Path(__file__).resolve().parent.parent
# id -> (height, width, [(VOC class, (y0, y1, x0, x1))]); images of two sizes, none square
IMAGES = {
    "2007_000001": (44, 52, [("cat", (8, 36, 10, 40))]),
    "2007_000002": (48, 40, [("dog", (4, 30, 6, 34)), ("cat", (30, 46, 2, 20))]),
    "2007_000003": (44, 52, [("car", (20, 40, 4, 48))]),
    "2007_000004": (48, 40, [("dog", (10, 44, 8, 36))]),
    "2007_000005": (44, 52, [("cat", (6, 30, 20, 50))]),         # val
    "2007_000006": (48, 40, [("car", (12, 40, 2, 30))]),         # val
    "2008_000007": (44, 52, [("dog", (2, 40, 4, 30))]),          # SegmentationClassAug only
    "2008_000008": (48, 40, [("car", (16, 44, 10, 38))]),        # SegmentationClassAug only
    "2009_000009": (44, 52, []),                                 # test
    "2009_000010": (48, 40, []),                                 # test
}
SPLITS = {"train": ["2007_000001", "2007_000002", "2007_000003", "2007_000004"],
          "val": ["2007_000005", "2007_000006"], "test": ["2009_000009", "2009_000010"]}
AUG_ONLY = ["2008_000007", "2008_000008"]
COLOURS = {"cat": (200, 60, 40), "dog": (40, 170, 60), "car": (50, 60, 210)}


def build_voc_tree(root: Path) -> Path:
    """VOC2012 with JPEGImages, Annotations, SegmentationClass (train + val),
    ImageSets/Segmentation/{train,val,test}.txt, SegmentationClassAug (train + aug ids) and its
    train_aug.txt in DeepLab's line format."""
    voc = root / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationClassAug",
                "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for img_id, (h, w, objects) in IMAGES.items():
        image = rng.integers(90, 160, (h, w, 3)).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        for name, (y0, y1, x0, x1) in objects:
            noise = rng.integers(-20, 20, (y1 - y0, x1 - x0, 3))
            image[y0:y1, x0:x1] = np.clip(np.array(COLOURS[name]) + noise, 0, 255)
            mask[y0:y1, x0:x1] = VOC_CLASSES.index(name)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{img_id}.jpg", quality=95)
        write_voc_xml(voc / "Annotations" / f"{img_id}.xml", VocAnnotation(
            filename=f"{img_id}.jpg", width=w, height=h,
            objects=[VocObject(n, (x0 + 1, y0 + 1, x1, y1)) for n, (y0, y1, x0, x1) in objects]))
        if img_id in SPLITS["train"] + SPLITS["val"]:
            write_label_png(voc / "SegmentationClass" / f"{img_id}.png", mask)
        if img_id in SPLITS["train"] + AUG_ONLY:
            write_label_png(voc / "SegmentationClassAug" / f"{img_id}.png", mask)
    for split, ids in SPLITS.items():
        (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (voc / "ImageSets/Segmentation/train_aug.txt").write_text("".join(
        f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in SPLITS["train"] + AUG_ONLY))
    return voc


def tiny_opts(voc: Path, vgg: Path) -> list[str]:
    """`--opts` that shrink a VOC config to seconds on a CPU: the tree and weight file, 41 px
    inputs (8k + 1), one iteration of batch 2 per training stage, no worker processes."""
    train = "train.batch_size=2 train.max_iters=1 train.num_workers=0 train.log_interval=1"
    opts = [f"data.root={voc}", "experiment.device=cpu",
            f"classifier.model.pretrained={vgg}", f"segmenter.model.pretrained={vgg}",
            "classifier.train.crop=41", "classifier.val.size=41", "classifier.val.batch_size=4",
            "heatmaps.size=41", "heatmaps.scales=(1.0,)", "heatmaps.num_workers=0",
            "saliency.rbd.n_segments=20", "saliency.workers=1", "seeds.n_overlays=1",
            "segmenter.train.crop=41", "segmenter.train.resize=41", "segmenter.crf.workers=0",
            "segmenter.val.size=41", "segmenter.val.batch_size=4",
            "retrain.pseudo.sizes=(41,)", "retrain.pseudo.crf.workers=0",
            "retrain.train.crop=41", "retrain.val.size=41",
            "eval.crf.workers=0", "eval.n_overlays=1", "localize.size=41", "localize.n_overlays=1"]
    for sec in ("classifier", "segmenter", "retrain"):
        opts += [f"{sec}.{kv}" for kv in train.split()]
    return opts


CHAIN = ("data", "classifier", "heatmaps", "saliency", "seeds", "segmenter", "upper_bound",
         "retrain", "eval", "submit", "localize")


@pytest.fixture(scope="module")
def voc_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_tree")
    vgg = root / "vgg16-layout.pth"
    torch.save(vgg16_layout_state(seed=3), vgg)
    return build_voc_tree(root), vgg


def run_chain(config: str, wd: Path, opts: list[str]) -> dict:
    exp = REPO / "configs" / f"{config}.py"
    return {s: run_stage_cli(f"stages.{s}", exp, wd, *opts) for s in CHAIN}


def check_run(man: dict, wd: Path, voc: Path, vgg: Path, pooling: str) -> None:
    data = json.loads((wd / "data" / "dataset.json").read_text())
    assert len(data["classes"]) == 21 and data["splits"]["trainaug"] == 6
    assert data["aug_dir"] == str(voc / "SegmentationClassAug")   # DeepLab's trainaug layout
    # the recipe as configured: the pooling, ImageNet VGG-16 from the file (13 convs + fc6/fc7,
    # into the classifier and every ASPP branch), the protocols, the second round
    _, meta = load_model(wd / "classifier" / "model.pth")
    assert meta["model_cfg"]["pooling"]["type"] == pooling
    for s, n in (("classifier", 15), ("segmenter", 13 + 2 * 4)):
        log = (wd / s / "log.txt").read_text()
        assert f"ImageNet VGG-16 from {vgg}: {n} layers from the file" in log, s
    assert man["seeds"]["metrics"]["bg_source"] == "saliency"
    assert man["eval"]["metrics"]["protocol"]["protocol"] == "test-ms-f"
    assert man["retrain"]["metrics"]["pseudo_protocol"]["protocol"].startswith("test-ms+")
    assert man["retrain"]["metrics"]["model_type"] == "DeepLabV2VGG16"
    for s in ("segmenter", "upper_bound", "retrain"):
        _, m = load_model(wd / s / "model.pth", kind="segmenter")
        assert m["num_classes"] == 21 and m["model_cfg"]["rates"] == [6, 12, 18, 24], s
    pseudo = read_label_png(wd / "retrain" / "pseudo" / "2008_000007.png")
    assert pseudo.shape == (44, 52) and pseudo.max() < 21
    sub = wd / "submit" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert sorted(p.stem for p in sub.glob("*.png")) == SPLITS["test"]
    assert man["submit"]["metrics"]["validated"] and man["eval"]["counts"]["scored"] == 2
    assert (wd / "localize" / "boxes.json").is_file()


def test_every_stage_of_both_voc_configs_runs(voc_inputs, tmp_path):
    torch.set_num_threads(2)
    voc, vgg = voc_inputs
    wd = tmp_path / "work"
    # fc_channels 64 keeps the ASPP small on a CPU; fc6/fc7 are still decimated from the file
    opts = tiny_opts(voc, vgg) + ["segmenter.model.fc_channels=64"]
    ep = run_chain("voc_ep_dsrg", wd, opts)
    check_run(ep, wd, voc, vgg, "ep")
    # the second round is scored by eval with eval.model=retrain; the report reads everything
    exp = str(REPO / "configs" / "voc_ep_dsrg.py")
    r2 = run_stage_cli("stages.eval", exp, wd, *opts, "eval.model=retrain")
    assert set(r2["upstream"]) == {"data", "retrain"} and r2["counts"]["scored"] == 2
    import stages.report
    assert stages.report.main(["--exp", exp, "--work-dir", str(wd), "--opts", *opts]) == 0
    assert (wd / "report" / "index.html").is_file()
    # the GAP baseline in the same work dir: what does not depend on the classifier (data,
    # saliency, the GT upper bound) stays fresh; every other stage re-runs with GAP's cues
    gap = run_chain("voc_gap_dsrg", wd, opts)
    check_run(gap, wd, voc, vgg, "gap")
    for s in CHAIN:
        same = gap[s]["run_digest"] == ep[s]["run_digest"]
        assert same == (s in ("data", "saliency", "upper_bound")), s
