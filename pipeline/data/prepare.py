"""Prepare the dataset directory (docs/DESIGN.md "Dataset directory") from a VOC-style tree.

``prepare_dataset`` validates a VOC2012-style tree, optionally merges the SBD masks into
``SegmentationClassAug`` (docs/ALGORITHMS.md §9.1), builds the ``trainaug`` list

    trainaug = sorted((SBD train ∪ SBD val ∪ VOC train) − VOC val)      (10,582 ids on VOC)

or takes it from a ``SegmentationClassAug`` folder of palette PNGs + ``train_aug.txt``
(DeepLab's trainaug files, :mod:`pipeline.data.trainaug`), or from
``ImageSets/Segmentation/trainaug.txt``, else uses VOC train,

and writes ``dataset.json``, ``lists/<split>.txt`` and ``labels.json``. Everything is built in
a temporary sibling of ``out_dir`` and renamed into place at the end, so after any error
nothing exists at ``out_dir``.

Mask precedence: with SBD, ``SegmentationClassAug/<id>.png`` is the VOC
``SegmentationClass/<id>.png`` (copied byte for byte) when the VOC tree has it, else the SBD
``GTcls.Segmentation`` of ``cls/<id>.mat``: the finer VOC annotation (with its 255 void
band) wins for ids in both. With a SegmentationClassAug folder, ``seg_dirs`` lists the VOC
``SegmentationClass`` first, then the folder (same precedence, nothing copied).

Image labels come from the XML annotation (``label_source='xml'``) or, for an id without one,
from its mask (counted as ``labels_from_mask``).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.errors import DatasetError
from pipeline.data.files import read_class_list, read_label_png, write_label_png
from pipeline.data.io_utils import atomic_dir
from pipeline.data.trainaug import collect_aug_masks, find_aug_layout, read_id_list, trainaug_ids
from pipeline.data.validate import decode_problem, split_problem
from pipeline.data.vocxml import read_voc_xml
from pipeline.voc import IGNORE_INDEX, VOC_CLASSES

__all__ = ["DatasetError", "prepare_dataset", "load_sbd_segmentation", "FORMAT"]

FORMAT = "wsss-dataset/1"
SPLITS = ("train", "val", "test", "trainaug")
_MAX_EXAMPLES = 20


def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing {what}")


def load_sbd_segmentation(path: str | os.PathLike) -> np.ndarray:
    """Return ``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` as an ``HxW`` uint8 array.

    Handles both layouts ``scipy.io.loadmat`` can return for a MATLAB struct (a
    ``mat_struct`` object with ``squeeze_me``, or a 1x1 structured array).
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
        gt = mat["GTcls"]
        if isinstance(gt, np.ndarray):  # structured / object array layout
            gt = gt.reshape(-1)[0]
        seg = gt["Segmentation"] if isinstance(gt, np.void) else getattr(gt, "Segmentation")
        seg = np.asarray(seg)
        if seg.dtype == object:
            seg = np.asarray(seg.reshape(-1)[0])
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
        raise DatasetError(f"{path}: unreadable SBD .mat (need GTcls.Segmentation): {exc}") from exc
    seg = np.squeeze(seg)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.number):
        raise DatasetError(f"{path}: GTcls.Segmentation is not a 2-D numeric array ({seg.shape})")
    if seg.size and (seg.min() < 0 or seg.max() > 255 or not np.all(seg == np.round(seg))):
        raise DatasetError(f"{path}: GTcls.Segmentation values are not integers in 0..255")
    return seg.astype(np.uint8)


def _mask_classes(label: np.ndarray, path, num_classes: int, image: Path | None) -> list[int]:
    """Validate a label map (values, size vs. its image); return the classes >= 1 present."""
    values = np.unique(label)
    bad = [int(v) for v in values if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        raise DatasetError(f"{path}: mask values {bad} outside 0..{num_classes - 1} and {IGNORE_INDEX}")
    if image is not None and image.exists():
        with Image.open(image) as im:
            if im.size != (label.shape[1], label.shape[0]):
                raise DatasetError(f"{path}: mask size {label.shape[1]}x{label.shape[0]} differs "
                                   f"from its image {image} ({im.size[0]}x{im.size[1]})")
    return [int(v) for v in values if 0 < v < num_classes]


def _xml_classes(path: Path, index: dict[str, int]) -> list[int]:
    labels = set()
    for obj in read_voc_xml(path).objects:
        if obj.name not in index or index[obj.name] == 0:
            raise DatasetError(f"{path}: unknown class name {obj.name!r} (known: {list(index)[1:]})")
        labels.add(index[obj.name])
    return sorted(labels)


def prepare_dataset(root, out_dir, sbd_root=None, label_source: str = "xml", name: str | None = None,
                    heldout_seg_dir=None, overwrite: bool = False, aug_dir="auto",
                    aug_list=None, workers: int = 1,
                    required_splits: dict[str, list[str]] | None = None) -> dict:
    """Validate a VOC-style tree (+ optional SBD) and write the dataset directory ``out_dir``.

    Args:
        root: VOC2012-style root (``JPEGImages``, ``Annotations``, ``SegmentationClass``,
            ``ImageSets/Segmentation/{train,val}.txt``; ``test.txt``, ``trainaug.txt`` and
            ``classes.txt`` optional).
        out_dir: the dataset directory to create (must not exist, be empty, or ``overwrite``).
        sbd_root: SBD ``benchmark_RELEASE`` root (``dataset/{cls/<id>.mat,train.txt,val.txt}``).
        aug_dir, aug_list: the SegmentationClassAug layout when there is no ``sbd_root``
            (:func:`pipeline.data.trainaug.find_aug_layout`: "auto" = ``<root>/SegmentationClassAug``
            if it exists, None = not used, else a folder; the list is found next to it).
        label_source: ``"xml"`` (object names, difficult kept; the mask for an id without XML)
            or ``"mask"`` (classes in the GT mask) for ``labels.json``; the other source, where
            present, is only compared.
        name: dataset name for ``dataset.json`` (default: the root folder name, "+SBD").
        heldout_seg_dir: folder of test-split masks kept aside for scoring only.
        workers: processes decoding every listed JPEG (:func:`~pipeline.data.validate.decode_failures`).
        required_splits: ``{split: [config keys]}`` that must be non-empty (``submit`` keys
            only warn), checked before any image is read.
    Returns the summary: the ``dataset.json`` content plus ``out_dir``, ``counts``,
    ``disagreement_examples`` and ``warnings``.
    """
    if label_source not in ("xml", "mask"):
        raise ValueError(f"label_source must be 'xml' or 'mask', got {label_source!r}")
    root, out_dir = Path(root).resolve(), Path(out_dir).resolve()
    warnings: list[str] = []
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Segmentation"):
        _require(root / sub, "directory of the VOC-style tree")
    lists_dir = root / "ImageSets" / "Segmentation"
    _require(lists_dir / "train.txt", "split list")
    _require(lists_dir / "val.txt", "split list")
    classes = read_class_list(root / "classes.txt") if (root / "classes.txt").exists() else list(VOC_CLASSES)
    index = {c: i for i, c in enumerate(classes)}

    splits = {s: read_id_list(lists_dir / f"{s}.txt") for s in ("train", "val")}
    if (lists_dir / "test.txt").exists():
        splits["test"] = read_id_list(lists_dir / "test.txt")
    else:
        splits["test"] = []
        warnings.append(f"{lists_dir / 'test.txt'} missing: the test split is empty")
    if set(splits["train"]) & set(splits["val"]):
        warnings.append("train and val lists overlap")

    sbd_ids: set[str] = set()
    aug = None if sbd_root is not None else find_aug_layout(root, aug_dir, aug_list)
    if sbd_root is not None:
        sbd_root = Path(sbd_root).resolve()
        sbd_data = sbd_root / "dataset"
        _require(sbd_data / "cls", "SBD directory")
        for f in ("train.txt", "val.txt"):
            _require(sbd_data / f, "SBD split list")
            sbd_ids |= set(read_id_list(sbd_data / f))
        trainaug = sorted((sbd_ids | set(splits["train"])) - set(splits["val"]))
    elif aug is not None:
        trainaug = trainaug_ids(aug, splits["train"], splits["val"], warnings)
    elif (lists_dir / "trainaug.txt").exists():
        trainaug = read_id_list(lists_dir / "trainaug.txt")
        if set(trainaug) & set(splits["val"]):
            warnings.append(f"{lists_dir / 'trainaug.txt'} contains val ids")
    else:
        trainaug = list(splits["train"])
        warnings.append("no SBD, SegmentationClassAug folder or trainaug list: trainaug = train")
    splits["trainaug"] = trainaug

    if problem := split_problem(splits, required_splits or {}, lists_dir, warnings):
        raise DatasetError(problem)
    for split in SPLITS:
        for i in splits[split]:
            _require(root / "JPEGImages" / f"{i}.jpg", f"JPEG for id {i!r} listed in {split}")
    if problem := decode_problem(root, splits, lists_dir, workers):
        raise DatasetError(problem)
    for split in ("train", "val"):
        for i in splits[split]:
            _require(root / "SegmentationClass" / f"{i}.png", f"mask for id {i!r} listed in {split}")
    if heldout_seg_dir is not None:
        heldout_seg_dir = Path(heldout_seg_dir).resolve()
        _require(heldout_seg_dir, "held-out mask directory")
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        summary = _build(tmp, root, out_dir, classes, index, splits, sbd_root, sbd_ids,
                         label_source, heldout_seg_dir, warnings, aug)
        summary["name"] = name or (root.name + ("+SBD" if sbd_root is not None else "")
                                   + ("+SegmentationClassAug" if aug is not None else ""))
        meta = {k: summary[k] for k in ("name", "root", "classes", "seg_dirs", "heldout_seg_dir",
                                        "splits", "label_source", "label_disagreements", "sbd_root",
                                        "aug_dir")}
        (tmp / "dataset.json").write_text(json.dumps({"format": FORMAT, **meta}, indent=1) + "\n")
    return {"format": FORMAT, **summary, "out_dir": str(out_dir)}


def _build(tmp: Path, root: Path, out_dir: Path, classes, index, splits, sbd_root, sbd_ids,
           label_source, heldout_seg_dir, warnings, aug=None) -> dict:
    C = len(classes)
    jpeg = lambda i: root / "JPEGImages" / f"{i}.jpg"  # noqa: E731
    used = sorted(set(splits["train"]) | set(splits["val"]) | set(splits["trainaug"]))
    mask_labels: dict[str, list[int]] = {}
    counts = {"voc_masks": 0, "sbd_converted": 0, "aug_masks": 0, "heldout_masks": 0}

    # VOC masks: validate every used one (streaming); copy into SegmentationClassAug with SBD.
    aug_dir = tmp / "SegmentationClassAug"
    if sbd_root is not None:
        aug_dir.mkdir()
    for i in used:
        src = root / "SegmentationClass" / f"{i}.png"
        if not src.exists():
            continue
        mask_labels[i] = _mask_classes(read_label_png(src), src, C, jpeg(i))
        counts["voc_masks"] += 1
        if sbd_root is not None:
            shutil.copyfile(src, aug_dir / f"{i}.png")
    if sbd_root is not None:
        trainaug = set(splits["trainaug"])
        for i in sorted(sbd_ids):
            if i in mask_labels or i not in trainaug:
                continue  # VOC precedence; SBD ids in VOC val have VOC masks
            mat = sbd_root / "dataset" / "cls" / f"{i}.mat"
            _require(mat, f"SBD mask for id {i!r}")
            seg = load_sbd_segmentation(mat)
            mask_labels[i] = _mask_classes(seg, mat, C, jpeg(i))
            write_label_png(aug_dir / f"{i}.png", seg)
            counts["sbd_converted"] += 1
        seg_dirs = [str(out_dir / "SegmentationClassAug")]
    else:
        seg_dirs = [str(root / "SegmentationClass")]
        if aug is not None:
            counts["aug_masks"] = collect_aug_masks(
                aug, splits["trainaug"], mask_labels,
                lambda p: _mask_classes(read_label_png(p), p, C, jpeg(p.stem)))
            seg_dirs.append(str(aug.dir))
        leaked = [i for i in splits["test"] if (root / "SegmentationClass" / f"{i}.png").exists()]
        if leaked:
            warnings.append(f"{len(leaked)} test ids have masks in {root / 'SegmentationClass'} "
                            "(reachable through seg_dirs)")

    if heldout_seg_dir is not None:
        for i in splits["test"]:
            p = heldout_seg_dir / f"{i}.png"
            if p.exists():
                _mask_classes(read_label_png(p), p, C, jpeg(i))
                counts["heldout_masks"] += 1
        if counts["heldout_masks"] < len(splits["test"]):
            warnings.append(f"{len(splits['test']) - counts['heldout_masks']} test ids have no "
                            f"mask in {heldout_seg_dir}")

    labels, disagree, empty = {}, [], 0
    n_disagree = n_from_mask = 0
    for i in used:
        xml = root / "Annotations" / f"{i}.xml"
        xml_labels = _xml_classes(xml, index) if xml.exists() else None
        m_labels = mask_labels.get(i)
        if label_source == "xml" and (xml_labels is not None or m_labels is None):
            _require(xml, f"annotation for id {i!r} (and no mask to take its labels from)")
            labels[i] = xml_labels
        elif label_source == "xml":
            labels[i] = m_labels            # no XML: the classes in the mask
            n_from_mask += 1
        else:
            if m_labels is None:
                where = Path(seg_dirs[0]) / f"{i}.png"
                raise FileNotFoundError(f"{where}: missing mask for id {i!r} (label_source='mask')")
            labels[i] = m_labels
        if xml_labels is not None and m_labels is not None and xml_labels != m_labels:
            n_disagree += 1
            disagree.append({"id": i, "xml": [classes[c] for c in xml_labels],
                             "mask": [classes[c] for c in m_labels]})
        empty += not labels[i]
    if empty:
        warnings.append(f"{empty} images have no image-level label")
    counts["images_without_labels"] = empty
    counts["labels_from_mask"] = n_from_mask
    if n_from_mask:
        warnings.append(f"{n_from_mask} ids have no XML annotation: image labels from their masks")

    lists = tmp / "lists"
    lists.mkdir()
    for split in SPLITS:
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in splits[split]))
    (tmp / "labels.json").write_text(json.dumps(labels, sort_keys=True) + "\n")
    (tmp / "label_disagreements.json").write_text(json.dumps(disagree, indent=0) + "\n")
    return {
        "root": str(root), "classes": list(classes), "seg_dirs": seg_dirs,
        "heldout_seg_dir": None if heldout_seg_dir is None else str(heldout_seg_dir),
        "splits": {s: len(splits[s]) for s in SPLITS}, "label_source": label_source,
        "label_disagreements": n_disagree, "sbd_root": None if sbd_root is None else str(sbd_root),
        "aug_dir": None if aug is None else str(aug.dir),
        "counts": counts, "disagreement_examples": disagree[:_MAX_EXAMPLES], "warnings": warnings,
    }
