"""Tests for pipeline.data.prepare (VOC/SBD preparation) and pipeline.data.vocxml."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from pipeline.data.files import read_label_png
from pipeline.data.prepare import DatasetError, load_sbd_segmentation, prepare_dataset
from pipeline.data.vocxml import VocAnnotation, VocObject, read_voc_xml, write_voc_xml


def _lists(out):
    return {s: (out / "lists" / f"{s}.txt").read_text().split() for s in ("train", "val", "test", "trainaug")}


def test_vocxml_roundtrip(tmp_path):
    ann = VocAnnotation("x.jpg", 10, 7, objects=[VocObject("cat", (1, 2, 10, 7), True, False),
                                                  VocObject("dog", None)])
    write_voc_xml(tmp_path / "x.xml", ann)
    back = read_voc_xml(tmp_path / "x.xml")
    assert (back.width, back.height) == (10, 7) and back.objects == ann.objects
    (tmp_path / "bad.xml").write_text("<annotation><object><bndbox></bndbox></object>")
    with pytest.raises(ValueError, match="bad.xml"):
        read_voc_xml(tmp_path / "bad.xml")


def test_voc_only(tiny_voc, tmp_path):
    out = tmp_path / "data"
    s = prepare_dataset(tiny_voc.root, out)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == "wsss-dataset/1" and meta["classes"] == tiny_voc.classes
    assert meta["seg_dirs"] == [str(tiny_voc.root.resolve() / "SegmentationClass")]
    assert meta["sbd_root"] is None and meta["heldout_seg_dir"] is None
    lists = _lists(out)
    assert lists["trainaug"] == lists["train"] == ["img_a", "img_b", "img_c"]
    assert lists["test"] == ["img_f"] and meta["splits"]["test"] == 1
    labels = json.loads((out / "labels.json").read_text())
    assert set(labels) == {"img_a", "img_b", "img_c", "img_d", "img_e"}
    assert labels["img_c"] == [1] and labels["img_e"] == [1, 2]  # XML; difficult cat kept
    assert s["label_disagreements"] == meta["label_disagreements"] == 2  # img_c, img_e
    assert {d["id"] for d in s["disagreement_examples"]} == {"img_c", "img_e"}
    assert not (out / "SegmentationClassAug").exists()


def test_voc_mask_labels_and_trainaug_file(tiny_voc, tmp_path):
    (tiny_voc.root / "ImageSets/Segmentation/trainaug.txt").write_text("img_a\nimg_c\n")
    out = tmp_path / "data"
    s = prepare_dataset(tiny_voc.root, out, label_source="mask")
    labels = json.loads((out / "labels.json").read_text())
    assert labels["img_c"] == [1, 3] and labels["img_e"] == [2] and labels["img_a"] == [1]
    assert _lists(out)["trainaug"] == ["img_a", "img_c"] and s["label_disagreements"] == 2


def test_voc_class_names_default(tmp_path, data_helpers):
    tree = data_helpers.build_tiny_voc(tmp_path / "voc", voc_classes=True)
    s = prepare_dataset(tree.root, tmp_path / "data", label_source="mask")
    labels = json.loads((tmp_path / "data" / "labels.json").read_text())
    assert len(s["classes"]) == 21 and labels["img_c"] == [7, 8]  # car, cat in VOC indices


def test_sbd_merge(tiny_voc, tiny_sbd, tmp_path, data_helpers):
    TINY_TRAINAUG = data_helpers.trainaug
    out = tmp_path / "data"
    s = prepare_dataset(tiny_voc.root, out, sbd_root=tiny_sbd.root)
    aug = out / "SegmentationClassAug"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["seg_dirs"] == [str(aug.resolve())] and meta["sbd_root"] == str(tiny_sbd.root.resolve())
    assert _lists(out)["trainaug"] == TINY_TRAINAUG and meta["splits"]["trainaug"] == 6
    for i in ("img_g", "img_h", "img_i"):  # converted from .mat, values identical
        with Image.open(aug / f"{i}.png") as im:
            assert im.mode == "P"
        np.testing.assert_array_equal(read_label_png(aug / f"{i}.png"), tiny_sbd.masks[i])
    for i in ("img_b", "img_d"):  # in both: VOC wins, copied byte for byte
        assert (aug / f"{i}.png").read_bytes() == (tiny_voc.root / "SegmentationClass" / f"{i}.png").read_bytes()
    assert sorted(p.stem for p in aug.iterdir()) == sorted(set(TINY_TRAINAUG) | {"img_d", "img_e"})
    assert s["counts"]["sbd_converted"] == 3 and s["counts"]["voc_masks"] == 5
    labels = json.loads((out / "labels.json").read_text())
    assert set(labels) == set(TINY_TRAINAUG) | {"img_d", "img_e"}
    assert labels["img_h"] == [3] and labels["img_b"] == [2]
    assert s["label_disagreements"] == 3  # img_c, img_e, img_h
    s2 = prepare_dataset(tiny_voc.root, tmp_path / "data2", sbd_root=tiny_sbd.root, label_source="mask")
    labels = json.loads((tmp_path / "data2" / "labels.json").read_text())
    assert labels["img_h"] == [1, 3] and labels["img_b"] == [2] and s2["label_disagreements"] == 3


@pytest.mark.parametrize("layout", ["dict", "record"])
def test_load_sbd_layouts(tmp_path, layout, data_helpers):
    seg = np.arange(12, dtype=np.uint8).reshape(3, 4)
    data_helpers.write_sbd_mat(tmp_path / "x.mat", seg, layout)
    np.testing.assert_array_equal(load_sbd_segmentation(tmp_path / "x.mat"), seg)
    (tmp_path / "y.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match="y.mat"):
        load_sbd_segmentation(tmp_path / "y.mat")


def _break_dir(voc, sbd):
    import shutil
    shutil.rmtree(voc.root / "Annotations")
    return "Annotations"


def _break_jpeg(voc, sbd):
    (voc.root / "JPEGImages" / "img_e.jpg").unlink()
    return "img_e.jpg"


def _break_sbd_jpeg(voc, sbd):
    (voc.root / "JPEGImages" / "img_g.jpg").unlink()
    return "img_g.jpg"


def _break_mat(voc, sbd):
    (sbd.root / "dataset" / "cls" / "img_g.mat").write_bytes(b"\x00garbage")
    return "img_g.mat"


def _break_missing_mat(voc, sbd):
    (sbd.root / "dataset" / "cls" / "img_h.mat").unlink()
    return "img_h.mat"


def _break_mask_range(voc, sbd):
    from pipeline.data.files import write_label_png
    m = voc.masks["img_b"].copy()
    m[0, 0] = 7
    write_label_png(voc.root / "SegmentationClass" / "img_b.png", m)
    return "img_b.png: mask values [7]"


def _break_mask_missing(voc, sbd):
    (voc.root / "SegmentationClass" / "img_d.png").unlink()
    return "img_d.png"


def _break_xml_class(voc, sbd):
    write_voc_xml(voc.root / "Annotations" / "img_a.xml", VocAnnotation("img_a.jpg", 8, 6, objects=[VocObject("zebra")]))
    return "img_a.xml: unknown class name 'zebra'"


def _break_sbd_values(voc, sbd):
    sbd.write_sbd_mat(sbd.root / "dataset" / "cls" / "img_i.mat", np.full((6, 8), 9, np.uint8))
    return "img_i.mat"


@pytest.mark.parametrize("breaker", [_break_dir, _break_jpeg, _break_sbd_jpeg, _break_mat, _break_missing_mat,
                                     _break_mask_range, _break_mask_missing, _break_xml_class, _break_sbd_values])
def test_errors_name_the_file_and_leave_nothing(tiny_voc, tiny_sbd, tmp_path, breaker, data_helpers):
    tiny_sbd.write_sbd_mat = data_helpers.write_sbd_mat
    expected = breaker(tiny_voc, tiny_sbd)
    parent = tmp_path / "work"
    parent.mkdir()
    with pytest.raises((FileNotFoundError, ValueError), match=re.escape(expected)):
        prepare_dataset(tiny_voc.root, parent / "data", sbd_root=tiny_sbd.root)
    assert list(parent.iterdir()) == []  # neither out_dir nor a tmp dir


def test_missing_test_list_and_existing_out(tiny_voc, tmp_path):
    (tiny_voc.root / "ImageSets/Segmentation/test.txt").unlink()
    out = tmp_path / "data"
    s = prepare_dataset(tiny_voc.root, out, heldout_seg_dir=tiny_voc.root / "SegmentationClass")
    assert s["splits"]["test"] == 0 and any("test.txt" in w for w in s["warnings"])
    assert (out / "lists" / "test.txt").read_text() == ""
    with pytest.raises(FileExistsError, match="data"):
        prepare_dataset(tiny_voc.root, out)
    prepare_dataset(tiny_voc.root, out, label_source="mask", overwrite=True)
    assert json.loads((out / "dataset.json").read_text())["label_source"] == "mask"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "voc"]


def test_sbd_with_voc_class_indices(tmp_path, data_helpers):
    """No classes.txt: VOC class indices, in the XML and the SBD .mat alike."""
    tree = data_helpers.build_tiny_voc(tmp_path / "voc", voc_classes=True)
    sbd = data_helpers.build_tiny_sbd(tmp_path / "sbd", tree.index)
    s = prepare_dataset(tree.root, tmp_path / "data", sbd_root=sbd.root, label_source="mask")
    labels = json.loads((tmp_path / "data" / "labels.json").read_text())
    assert labels["img_h"] == [7, 8] and s["splits"]["trainaug"] == 6
