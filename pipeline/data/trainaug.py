"""The "SegmentationClassAug" dataset layout: VOC 2012 + DeepLab's trainaug masks and list.

Most WSSS users hold VOC2012 plus the 10,582 ``SegmentationClassAug`` palette PNGs (SBD's masks
converted by DeepLab, with the VOC ones) and a ``train_aug.txt`` list rather than SBD's ``.mat``
files. :func:`find_aug_layout` finds them:

* the mask folder: ``aug_dir`` when given, else ``<root>/SegmentationClassAug``;
* the list: ``aug_list`` when given, else the first of ``train_aug.txt`` / ``trainaug.txt`` in
  ``<root>/ImageSets/Segmentation/``, then next to the mask folder; lines are either ``<id>`` or
  DeepLab's ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`` (:func:`read_id_list`).

``trainaug`` is the list minus the VOC val ids (:func:`trainaug_ids`); without a list,
``(ids with a mask in the folder ∪ VOC train) − VOC val`` (the same 10,582 ids on the full data).
Masks are searched in ``SegmentationClass`` first (the finer VOC annotation wins for ids in
both, as with SBD), then in the folder; :func:`collect_aug_masks` validates the folder's masks
(docs/ALGORITHMS.md §9.1).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.data.errors import DatasetError

__all__ = ["AugLayout", "find_aug_layout", "read_id_list", "trainaug_ids", "collect_aug_masks",
           "LIST_NAMES"]

LIST_NAMES = ("train_aug.txt", "trainaug.txt")


@dataclasses.dataclass(frozen=True)
class AugLayout:
    """A SegmentationClassAug mask folder and its id list (None: derive the ids)."""
    dir: Path
    list: Path | None


def _id_of(token: str) -> str:
    return Path(token).stem


def read_id_list(path: Path) -> list[str]:
    """Ids of a list file whose lines are ``<id>`` or ``<image path> <mask path>`` (the id is the
    image file's stem); blank lines are skipped. Raises :class:`~pipeline.data.errors.DatasetError`
    (a ``ValueError``) naming the file and line for a line of another form, and for duplicate ids."""
    ids, seen = [], set()
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2 or (len(parts) == 2 and _id_of(parts[0]) != _id_of(parts[1])):
            raise DatasetError(f"{path}:{n}: expected '<id>' or '/JPEGImages/<id>.jpg "
                               f"/SegmentationClassAug/<id>.png', got {line.strip()!r}: fix that line")
        i = _id_of(parts[0])
        if i in seen:
            raise DatasetError(f"{path}:{n}: duplicate id {i!r} (listed on an earlier line too): "
                               f"delete one of the lines")
        seen.add(i)
        ids.append(i)
    return ids


def find_aug_layout(root: Path, aug_dir="auto", aug_list=None) -> AugLayout | None:
    """The layout under ``root`` (module doc), or None when there is no mask folder and
    ``aug_dir`` is "auto" / None. A given ``aug_dir`` / ``aug_list`` that does not exist raises
    ``FileNotFoundError`` naming it."""
    if aug_dir in (None, "none", False):
        return None
    if aug_dir == "auto":
        folder = root / "SegmentationClassAug"
        if not folder.is_dir():
            return None
    else:
        folder = Path(aug_dir).expanduser().resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: missing SegmentationClassAug folder (data.aug_dir)")
    if aug_list is not None:
        path = Path(aug_list).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing trainaug list (data.aug_list)")
        return AugLayout(folder, path)
    folders = (root / "ImageSets" / "Segmentation", folder.parent)
    candidates = [d / n for d in folders for n in LIST_NAMES]
    return AugLayout(folder, next((c for c in candidates if c.is_file()), None))


def trainaug_ids(layout: AugLayout, train: list[str], val: list[str],
                 warnings: list[str]) -> list[str]:
    """The trainaug ids of the layout: its list, else the masks' ids ∪ ``train``; val removed."""
    if layout.list is not None:
        ids = read_id_list(layout.list)
    else:
        ids = sorted({p.stem for p in layout.dir.glob("*.png")} | set(train))
        warnings.append(f"no {' / '.join(LIST_NAMES)} found: trainaug = masks in {layout.dir} "
                        f"∪ train − val ({len(set(ids) - set(val))} ids)")
    in_val = set(ids) & set(val)
    if in_val:
        warnings.append(f"{len(in_val)} val ids of {layout.list or layout.dir} left out of trainaug")
    return [i for i in ids if i not in in_val]


def collect_aug_masks(layout: AugLayout, ids, mask_labels: dict, check_mask) -> int:
    """Validate the folder's mask of every id that has no VOC mask yet (``mask_labels`` holds the
    classes of those already read) with ``check_mask(path) -> classes``, storing the classes;
    returns how many were read. A missing mask raises ``FileNotFoundError`` naming it."""
    n = 0
    for i in ids:
        if i in mask_labels:
            continue
        path = layout.dir / f"{i}.png"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing mask for trainaug id {i!r} (listed in "
                                    f"{layout.list or 'the trainaug ids'})")
        mask_labels[i] = check_mask(path)
        n += 1
    return n
