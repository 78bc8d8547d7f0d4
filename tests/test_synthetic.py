"""Tests for pipeline.data.synthetic: determinism, VOC format, XML/mask consistency, difficulty."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.data.files import read_label_png
from pipeline.data.synthetic import class_specs, generate_synthetic, main
from pipeline.data.vocxml import read_voc_xml

TINY = dict(image_size=48, n_train=5, n_val=3, n_test=3)


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ids(voc, split):
    return (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def test_determinism(tmp_path):
    a = generate_synthetic(tmp_path / "a", TINY, seed=1)
    generate_synthetic(tmp_path / "b", TINY, seed=1)
    generate_synthetic(tmp_path / "c", TINY, seed=2)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert fa == fb and len(fa) > 30
    assert fa.keys() == fc.keys()
    differ = [k for k in fa if fa[k] != fc[k]]
    assert sum(k.endswith(".jpg") for k in differ) == 11
    assert a["splits"] == {"train": 5, "val": 3, "test": 3, "trainaug": 5}


def test_existing_out_root_and_bad_config(tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep").write_text("1")
    with pytest.raises(FileExistsError, match="x"):
        generate_synthetic(out, TINY)
    with pytest.raises(KeyError, match="n_trian"):
        generate_synthetic(tmp_path / "y", {"n_trian": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert [s["name"] for s in class_specs(6)] == ["glorp", "zint", "quabble", "mervin", "tassel", "yonk"]


def test_cli(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "--seed", "4", "--set", "n_train=2", "--set", "n_val=1",
                 "--set", "n_test=1", "--set", "image_size=40", "--set", "n_classes=3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"] == 2 and len(summary["classes"]) == 4
    assert (tmp_path / "cli" / "VOC2012" / "classes.txt").read_text().split() == summary["classes"]


def test_format(synthetic_tree, data_helpers):
    voc, held, cfg = synthetic_tree.voc, synthetic_tree.heldout, synthetic_tree.cfg
    S, classes = cfg["image_size"], (voc / "classes.txt").read_text().split()
    assert len(classes) == cfg["n_classes"] + 1
    tr, va, te = (set(_ids(voc, s)) for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (cfg["n_train"], cfg["n_val"], cfg["n_test"])
    assert not (tr & va or tr & te or va & te) and _ids(voc, "trainaug") == _ids(voc, "train")
    assert {p.stem for p in (voc / "SegmentationClass").iterdir()} == tr | va
    assert {p.stem for p in held.iterdir()} == te
    assert {p.stem for p in (voc / "JPEGImages").iterdir()} == tr | va | te
    values = set()
    for i in sorted(tr | va | te):
        with Image.open(voc / "JPEGImages" / f"{i}.jpg") as im:
            assert im.mode == "RGB" and im.size == (S, S)
        mp = (held if i in te else voc / "SegmentationClass") / f"{i}.png"
        with Image.open(mp) as im:
            assert im.mode == "P" and im.size == (S, S)
        label = read_label_png(mp)
        values |= set(np.unique(label).tolist())
        ann = read_voc_xml(voc / "Annotations" / f"{i}.xml")
        assert (ann.width, ann.height) == (S, S)
        if i in te:
            assert ann.objects == []  # no label leak for the test split
        else:
            data_helpers.check_boxes(label, [(o.name, o.bbox) for o in ann.objects], classes)
    assert values <= set(range(len(classes))) | {255} and 255 in values and len(values) == len(classes) + 1


def test_difficulty_properties(synthetic_tree):
    voc, cfg = synthetic_tree.voc, synthetic_tree.cfg
    meta = json.loads((synthetic_tree.out / "meta.json").read_text())
    n_obj, n_cls, border = [], [], 0
    for i in _ids(voc, "train") + _ids(voc, "val"):
        objs = read_voc_xml(voc / "Annotations" / f"{i}.xml").objects
        n_obj.append(len(objs))
        label = read_label_png(voc / "SegmentationClass" / f"{i}.png")
        n_cls.append(len({int(v) for v in np.unique(label) if 0 < v < 255}))
        edge = np.concatenate([label[0], label[-1], label[:, 0], label[:, -1]])
        border += bool(((edge > 0) & (edge < 255)).any())
    assert min(n_obj) == 1 and max(n_obj) == cfg["max_objects"] and len(set(n_obj)) >= 3
    assert min(n_cls) == 1 and max(n_cls) == cfg["max_classes_per_image"]
    assert 0.1 < border / len(n_obj) < 0.9  # objects touching / cut by the border
    objs = [o for im in meta["images"].values() for o in im["objects"]]
    occluded = sum(o[4] < o[3] for o in objs)  # visible < drawn
    assert 0.1 * len(objs) < occluded < 0.9 * len(objs)
    # context: each class's preferred background is much more frequent with it than without it
    specs = meta["class_specs"]
    for c, spec in enumerate(specs, start=1):
        with_c = [im["background"] == spec["background"] for im in meta["images"].values()
                  if any(o[0] == c for o in im["objects"])]
        without = [im["background"] == spec["background"] for im in meta["images"].values()
                   if not any(o[0] == c for o in im["objects"])]
        assert np.mean(with_c) > max(np.mean(without) + 0.15, 1.5 / len(meta["backgrounds"])), spec["name"]


def test_colour_overlaps_between_classes(synthetic_tree):
    """Mean object colour does not classify: a nearest-centroid rule is far from perfect and
    every pair of classes has overlapping per-channel colour ranges."""
    voc = synthetic_tree.voc
    feats, ys = [], []
    for i in _ids(voc, "train") + _ids(voc, "val"):
        img = np.asarray(Image.open(voc / "JPEGImages" / f"{i}.jpg"), np.float32)
        label = read_label_png(voc / "SegmentationClass" / f"{i}.png")
        for c in np.unique(label):
            if 0 < c < 255:
                feats.append(img[label == c].mean(0))
                ys.append(int(c))
    X, y = np.array(feats), np.array(ys)
    cls = np.unique(y)
    cents = np.stack([X[y == c].mean(0) for c in cls])
    acc = (cls[np.argmin(((X[:, None] - cents[None]) ** 2).sum(-1), 1)] == y).mean()
    assert acc < 0.65, acc  # resubstitution accuracy, optimistic; chance is 1/6
    lo = {c: np.percentile(X[y == c], 10, axis=0) for c in cls}
    hi = {c: np.percentile(X[y == c], 90, axis=0) for c in cls}
    for a in cls:
        for b in cls:
            assert np.all(np.maximum(lo[a], lo[b]) < np.minimum(hi[a], hi[b])), (a, b)
