"""Tests for pipeline.data.index.DatasetIndex on tiny VOC/SBD trees and a synthetic tree."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data.index import DatasetIndex
from pipeline.data.prepare import prepare_dataset


def test_index_tiny_sbd(tiny_voc, tiny_sbd, tmp_path):
    out = tmp_path / "data"
    prepare_dataset(tiny_voc.root, out, sbd_root=tiny_sbd.root)
    ds = DatasetIndex.load(out)
    assert ds.classes == ["background", "cat", "dog", "car"] and ds.num_classes == 4
    assert ds.fg_classes == ["cat", "dog", "car"]
    assert ds.ids("val") == ["img_d", "img_e"] and len(ds.ids("trainaug")) == 6
    assert ds.image_path("img_a").is_file()
    assert ds.mask_path("img_g") == out.resolve() / "SegmentationClassAug" / "img_g.png"
    assert ds.mask_path("img_f") is None and ds.heldout_mask_path("img_f") is None
    np.testing.assert_array_equal(ds.read_mask("img_b"), tiny_voc.masks["img_b"])
    assert ds.labels("img_e") == [1, 2]
    np.testing.assert_array_equal(ds.label_vector("img_e"), np.array([1, 1, 0], np.float32))
    assert ds.label_vector("img_e").dtype == np.float32
    assert ds.xml_path("img_e").name == "img_e.xml"
    assert ds.boxes("img_e") == [(2, 1, 2, 4, 5), (1, 2, 2, 5, 5)]  # (cls, x1, y1, x2, y2), 1-based
    img = ds.read_image("img_a")
    assert img.shape == (6, 8, 3) and img.dtype == np.uint8
    with pytest.raises(KeyError, match="img_f"):
        ds.labels("img_f")  # test ids carry no labels
    with pytest.raises(KeyError, match="bogus"):
        ds.ids("bogus")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        DatasetIndex.load(tmp_path)
    (tmp_path / "dataset.json").write_text("{nope")
    with pytest.raises(ValueError, match="dataset.json"):
        DatasetIndex.load(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "wsss-dataset/1", "root": "/x"}))
    with pytest.raises(ValueError, match=r"dataset.json: missing keys \['classes'"):
        DatasetIndex.load(tmp_path)


def test_prepare_and_index_synthetic(synthetic_tree, tmp_path, data_helpers):
    s = prepare_dataset(synthetic_tree.voc, tmp_path / "data", heldout_seg_dir=synthetic_tree.heldout)
    cfg = synthetic_tree.cfg
    assert s["splits"] == {"train": cfg["n_train"], "val": cfg["n_val"], "test": cfg["n_test"],
                           "trainaug": cfg["n_train"]}
    assert s["label_disagreements"] == 0 and s["counts"]["heldout_masks"] == cfg["n_test"]
    assert not s["warnings"]
    ds = DatasetIndex.load(tmp_path / "data")
    assert ds.num_classes == cfg["n_classes"] + 1
    for i in ds.ids("train")[:10] + ds.ids("val")[:5]:
        label = ds.read_mask(i)
        assert label.shape == ds.read_image(i).shape[:2]
        assert ds.labels(i) == sorted({int(v) for v in np.unique(label) if 0 < v < 255})
        data_helpers.check_boxes(label, [(ds.classes[c], b) for c, *b in ds.boxes(i)], ds.classes)
    t = ds.ids("test")[0]
    assert ds.mask_path(t) is None and ds.heldout_mask_path(t) is not None and ds.boxes(t) == []
