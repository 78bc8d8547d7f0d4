"""PASCAL VOC 2012 test-server submission: prediction PNGs, validation, tar.gz archive.

Server format (docs/ALGORITHMS.md §9.1): ``results/VOC2012/Segmentation/comp6_test_cls/<id>.png``,
single-channel palette PNG with the VOC palette, the original image size, values
``0..num_classes-1`` only (no 255), every test id present; uploaded as a tar.gz of ``results/``.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.files import write_label_png
from pipeline.data.io_utils import atomic_file
from pipeline.voc import voc_palette

SUBMISSION_SUBDIR = "results/VOC2012/Segmentation/{comp}_test_cls"


def write_prediction_png(path, label, num_classes: int) -> None:
    """Write an (H, W) prediction as a VOC palette PNG (atomically: tmp file + rename).

    Values must lie in ``0..num_classes-1``; 255 (ignore) and anything else raise ValueError.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{path}: prediction must be 2-D, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() >= num_classes):
        bad = np.unique(label[(label < 0) | (label >= num_classes)])
        raise ValueError(f"{path}: prediction values must lie in 0..{num_classes - 1}, found {bad[:10].tolist()}")
    with atomic_file(path) as tmp:
        write_label_png(tmp, label)


def _check_png(f: Path, jpg: Path, num_classes: int, ref_pal: list) -> list:
    problems = []
    try:
        with Image.open(f) as img:
            fmt, mode, size = img.format, img.mode, img.size
            pal = img.getpalette() if mode == "P" else None
            arr = np.array(img) if mode in ("P", "L") else None
    except (OSError, SyntaxError, ValueError) as exc:
        return [f"{f}: not a readable image ({exc})"]
    if fmt != "PNG":
        problems.append(f"{f}: not a PNG file (format {fmt})")
    if mode != "P":
        problems.append(f"{f}: image mode {mode!r}, expected a single-channel palette ('P') PNG")
    elif pal is None or pal[: 3 * num_classes] != ref_pal:
        problems.append(f"{f}: palette is not the VOC palette (first {num_classes} entries differ)")
    try:
        with Image.open(jpg) as im:
            jsize = im.size
        if size != jsize:
            problems.append(f"{f}: size {size[0]}x{size[1]} (WxH) differs from image {jpg} {jsize[0]}x{jsize[1]}")
    except FileNotFoundError:
        problems.append(f"{f}: reference image {jpg} not found")
    except (OSError, SyntaxError) as exc:
        problems.append(f"{f}: reference image {jpg} unreadable ({exc})")
    if arr is not None and arr.size and int(arr.max()) >= num_classes:
        bad = np.unique(arr[arr >= num_classes])
        problems.append(f"{f}: values outside 0..{num_classes - 1}: {bad[:10].tolist()}")
    return problems


def validate_submission(result_dir, test_ids, image_dir, num_classes: int) -> list:
    """Check a folder of test predictions; return a list of problems (empty = valid).

    Each problem string names the offending file: missing ``<id>.png``; extra files (any file
    whose name is not ``<id>.png`` for a test id); unreadable / not PNG; mode other than 'P';
    palette entries ``0..num_classes-1`` not equal to the VOC palette (entries beyond are not
    checked); size different from ``<image_dir>/<id>.jpg``; values outside ``0..num_classes-1``
    (255 included).
    """
    rd, idir = Path(result_dir), Path(image_dir)
    if not rd.is_dir():
        return [f"{rd}: result directory not found"]
    ids = [str(i) for i in test_ids]
    wanted = {f"{i}.png" for i in ids}
    ref_pal = voc_palette(num_classes).reshape(-1).tolist()
    problems = []
    present = {p.name for p in rd.iterdir()}
    for name in sorted(present - wanted):
        problems.append(f"{rd / name}: extra file (not a test id)")
    for i in ids:
        f = rd / f"{i}.png"
        if f.name not in present:
            problems.append(f"{f}: missing prediction for test id {i}")
            continue
        if not f.is_file():
            problems.append(f"{f}: not a regular file")
            continue
        problems.extend(_check_png(f, idir / f"{i}.jpg", num_classes, ref_pal))
    return problems


def make_submission_archive(results_root, tgz_path, comp: str = "comp6") -> int:
    """Pack predictions into a tar.gz for the VOC server; return the number of PNGs packed.

    ``results_root`` is either a folder containing ``results/VOC2012/Segmentation/<comp>_test_cls``
    or the folder of ``<id>.png`` files itself. Every member is a file named
    ``results/VOC2012/Segmentation/<comp>_test_cls/<id>.png`` (no directory entries; tar
    extraction creates the folders). Written to a tmp file, then renamed.
    """
    root = Path(results_root)
    sub = SUBMISSION_SUBDIR.format(comp=comp)
    src = root / sub if (root / sub).is_dir() else root
    if not src.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {src}")
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix == ".png" and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{src}: no PNG predictions to pack")
    with atomic_file(tgz_path) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for p in files:
            tar.add(p, arcname=f"{sub}/{p.name}", recursive=False)
    return len(files)
