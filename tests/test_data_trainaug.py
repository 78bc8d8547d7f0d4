"""VOC + SegmentationClassAug (DeepLab's trainaug PNGs + train_aug.txt) as a dataset layout."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data.files import write_label_png
from pipeline.data.index import DatasetIndex
from pipeline.data.prepare import prepare_dataset
from pipeline.data.trainaug import read_id_list

# SBD-like masks of the ids VOC's SegmentationClass lacks, and a differing one for img_b
AUG_ONLY = ("img_g", "img_h", "img_i")


def _aug_tree(voc, sbd_masks, list_name="train_aug.txt", list_dir=None, deeplab_lines=True):
    """SegmentationClassAug with every trainaug id (VOC masks for VOC ids, "SBD" masks for the
    others, img_b's SBD mask differing from VOC's), plus its list, which also holds val id img_d."""
    aug = voc.root / "SegmentationClassAug"
    aug.mkdir()
    for i in ("img_a", "img_b", "img_c", "img_d", "img_e"):
        write_label_png(aug / f"{i}.png", sbd_masks["img_b"] if i == "img_b" else voc.masks[i])
    for i in AUG_ONLY:
        write_label_png(aug / f"{i}.png", sbd_masks[i])
    ids = ["img_i", "img_a", "img_b", "img_d", "img_c", "img_g", "img_h"]
    if list_name is not None:
        lines = [f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" if deeplab_lines else i for i in ids]
        ((list_dir or voc.root / "ImageSets/Segmentation") / list_name).write_text("\n".join(lines) + "\n")
    (voc.root / "Annotations" / "img_g.xml").unlink()          # labels of img_g from its mask
    return aug


def test_aug_layout_lists_masks_and_labels(tiny_voc, tiny_sbd, tmp_path):
    aug = _aug_tree(tiny_voc, tiny_sbd.masks)
    out = tmp_path / "data"
    s = prepare_dataset(tiny_voc.root, out)                    # found by itself ("auto")
    meta = json.loads((out / "dataset.json").read_text())
    root = tiny_voc.root.resolve()
    assert meta["seg_dirs"] == [str(root / "SegmentationClass"), str(aug.resolve())]
    assert meta["aug_dir"] == str(aug.resolve()) and meta["sbd_root"] is None
    lists = (out / "lists" / "trainaug.txt").read_text().split()
    assert lists == ["img_i", "img_a", "img_b", "img_c", "img_g", "img_h"]   # list order, no val
    assert any("1 val ids" in w for w in s["warnings"])
    assert s["counts"]["aug_masks"] == 3 and s["counts"]["labels_from_mask"] == 1
    labels = json.loads((out / "labels.json").read_text())
    assert labels["img_g"] == [2] and labels["img_h"] == [3]   # mask (no XML) | XML (car)
    assert s["label_disagreements"] == 3                       # img_c, img_e, img_h (car + cat)
    index = DatasetIndex.load(out)
    np.testing.assert_array_equal(index.read_mask("img_b"), tiny_voc.masks["img_b"])  # VOC wins
    np.testing.assert_array_equal(index.read_mask("img_h"), tiny_sbd.masks["img_h"])
    assert meta["name"].endswith("+SegmentationClassAug")


def test_plain_id_list_next_to_the_folder_and_no_list(tiny_voc, tiny_sbd, tmp_path):
    aug = _aug_tree(tiny_voc, tiny_sbd.masks, "trainaug.txt", list_dir=tiny_voc.root, deeplab_lines=False)
    s = prepare_dataset(tiny_voc.root, tmp_path / "a", aug_dir=aug)
    assert s["splits"]["trainaug"] == 6
    (tiny_voc.root / "trainaug.txt").unlink()
    s = prepare_dataset(tiny_voc.root, tmp_path / "b", label_source="mask")
    trainaug = (tmp_path / "b" / "lists" / "trainaug.txt").read_text().split()
    assert trainaug == ["img_a", "img_b", "img_c", "img_g", "img_h", "img_i"]   # masks ∪ train − val
    assert any("no train_aug.txt" in w for w in s["warnings"])
    labels = json.loads((tmp_path / "b" / "labels.json").read_text())
    assert labels["img_h"] == [1, 3]
    s = prepare_dataset(tiny_voc.root, tmp_path / "c", aug_dir=None)           # layout off
    assert s["splits"]["trainaug"] == 3 and s["aug_dir"] is None


def test_aug_layout_errors_name_the_file(tiny_voc, tiny_sbd, tmp_path):
    aug = _aug_tree(tiny_voc, tiny_sbd.masks)
    (aug / "img_h.png").unlink()
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug/img_h.png"):
        prepare_dataset(tiny_voc.root, tmp_path / "a")
    bad = tmp_path / "list.txt"
    bad.write_text("img_a\n/JPEGImages/img_b.jpg /SegmentationClassAug/img_c.png\n")
    with pytest.raises(ValueError, match="list.txt:2"):
        read_id_list(bad)
    with pytest.raises(FileNotFoundError, match="data.aug_list"):
        prepare_dataset(tiny_voc.root, tmp_path / "b", aug_list=tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="data.aug_dir"):
        prepare_dataset(tiny_voc.root, tmp_path / "c", aug_dir=tmp_path / "nowhere")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt", "sbd", "voc"]


def test_data_stage_reads_the_aug_layout(tiny_voc, tiny_sbd, tmp_path):
    from stages.common import main_for

    aug = _aug_tree(tiny_voc, tiny_sbd.masks, "my_list.txt", list_dir=tmp_path)
    exp = tmp_path / "exp.py"
    exp.write_text(f'experiment = dict(name="aug", seed=0, device="cpu")\n'
                   f'data = dict(dataset="voc", root="{tiny_voc.root}", sbd_root=None, '
                   f'aug_dir="{aug}", aug_list="{tmp_path / "my_list.txt"}", label_source="xml")\n')
    man = main_for("stages.data", ["--exp", str(exp), "--work-dir", str(tmp_path / "work")])
    assert man["counts"]["trainaug"] == 6
    meta = json.loads((tmp_path / "work" / "data" / "dataset.json").read_text())
    assert meta["aug_dir"] == str(aug.resolve())
