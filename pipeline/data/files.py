"""The files the stages exchange, one reader / writer each (every write atomic:
:func:`pipeline.data.io_utils.atomic_file`).

* label maps: single-channel palette PNGs in the VOC palette (:func:`write_label_png`,
  :func:`read_label_png`; docs/ALGORITHMS.md §9.1) and class lists (:func:`read_class_list`);
* class heatmaps: one ``wsss-heatmap/1`` ``.npz`` per image (:func:`save_heatmap`,
  :func:`load_heatmap`);
* saliency maps: grey images of any bit depth (:func:`read_saliency`, :func:`load_saliency`,
  :func:`find_saliency_file`, :func:`import_saliency`);
* seeds as SEC/DSRG ``localization_cues.pickle`` (:func:`export_dsrg_cues`);
* RGB pictures (:func:`save_rgb`).

The arrays they hold are computed by the algorithm modules (:mod:`pipeline.heatmaps`,
:mod:`pipeline.saliency`, :mod:`pipeline.seeds`, :mod:`pipeline.visualize`), which do no I/O.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from pipeline.data.errors import DatasetError
from pipeline.data.io_utils import atomic_file
from pipeline.seeds import seeds_to_multihot
from pipeline.visualize import to_rgb
from pipeline.voc import IGNORE_INDEX, voc_palette

HEATMAP_FORMAT = "wsss-heatmap/1"
SALIENCY_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
GREY_TOLERANCE = 2      # 8-bit levels: an RGB map whose channels differ by no more is grey
_PALETTE_FLAT = voc_palette().reshape(-1).tolist()


def write_label_png(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write an ``HxW`` integer label map as a single-channel palette ('P') PNG."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{path}: label map must be 2-D, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"{path}: label values must lie in 0..255")
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(_PALETTE_FLAT)
    with atomic_file(path) as tmp:
        img.save(tmp)


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a palette (or grey) PNG label map as ``HxW`` uint8 indices (no colour conversion);
    a file of another mode or one that does not decode raises
    :class:`~pipeline.data.errors.DatasetError` (a ``ValueError``) naming it and the fix."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise DatasetError(f"{path}: expected a palette ('P') or grey ('L') PNG of class "
                                   f"indices, got mode {img.mode!r}: save the label map as class "
                                   f"indices (VOC's SegmentationClass format), not as colours")
            return np.array(img, dtype=np.uint8)
    except (OSError, SyntaxError) as exc:
        raise DatasetError(f"{path}: unreadable label PNG ({exc}): replace the file (a truncated "
                           f"copy?) or remove its id from the split lists") from exc


def label_pixel_counts(paths, num_classes: int) -> np.ndarray:
    """Labelled pixels per class (``num_classes``,) over the label PNGs ``paths`` (255 and
    values outside 0..num_classes-1 are not counted)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for path in paths:
        label = read_label_png(path)
        counts += np.bincount(label[label < num_classes].ravel(), minlength=num_classes)[:num_classes]
    return counts


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Read a class file: one name per line in index order, line 0 is the background."""
    names = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if len(names) < 2:
        raise DatasetError(f"{path}: a class file needs the background and at least one class, "
                           f"one name per line")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DatasetError(f"{path}: duplicate class names {twice}: list each class once")
    if len(names) > 255:
        raise DatasetError(f"{path}: at most 255 classes (255 is the ignore index)")
    return names


def save_heatmap(path, cam, classes, lam=None, extra: dict | None = None, compress: bool = True) -> None:
    """Store one image's heatmaps atomically as ``.npz`` (:func:`pipeline.data.io_utils.atomic_file`).

    Format ``wsss-heatmap/1`` (arrays in the npz):
      * ``cam``: float16 (k, H, W) — the maps of the image's classes only (normalised maps
        are expected; values beyond float16 range raise ValueError);
      * ``classes``: int16 (k,) — dataset indices (>= 1) of the ``cam`` maps, same order;
      * ``lam``: float16 (H, W), present only when given;
      * ``meta``: a 0-d unicode string, JSON ``{"format": "wsss-heatmap/1", "extra": {...}}``
        (``extra`` must be JSON-serialisable; no pickles are written).
    """
    cam = cam.detach().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam)
    if cam.ndim == 2:
        cam = cam[None]
    classes = np.asarray([int(c) for c in classes], dtype=np.int16)
    if cam.ndim != 3 or cam.shape[0] != classes.size:
        raise ValueError(f"{path}: cam shape {cam.shape} does not match {classes.size} classes")
    with np.errstate(over="ignore"):
        arrays = {"cam": cam.astype(np.float16), "classes": classes}
    if lam is not None:
        lam = lam.detach().cpu().numpy() if isinstance(lam, torch.Tensor) else np.asarray(lam)
        if lam.shape != cam.shape[1:]:
            raise ValueError(f"{path}: lam shape {lam.shape} != cam size {cam.shape[1:]}")
        with np.errstate(over="ignore"):
            arrays["lam"] = lam.astype(np.float16)
    for k in ("cam", "lam"):
        if k in arrays and not np.isfinite(arrays[k]).all():
            raise ValueError(f"{path}: {k} has non-finite values (or exceeds float16 range)")
    arrays["meta"] = np.array(json.dumps({"format": HEATMAP_FORMAT, "extra": extra or {}}))
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        (np.savez_compressed if compress else np.savez)(fh, **arrays)


def load_heatmap(path) -> dict:
    """Read a :func:`save_heatmap` file → ``{'cam': float32 (k,H,W), 'classes': list[int],
    'lam': float32 (H,W) or None, 'extra': dict}``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"heatmap file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != HEATMAP_FORMAT:
                raise ValueError(f"{path}: unknown heatmap format {meta.get('format')!r}")
            return {
                "cam": z["cam"].astype(np.float32),
                "classes": [int(c) for c in z["classes"]],
                "lam": z["lam"].astype(np.float32) if "lam" in z.files else None,
                "extra": meta.get("extra", {}),
            }
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable heatmap file ({exc})") from exc


class ColourSaliencyError(ValueError):
    """A saliency map with colour channels (not a grey map), and colour maps not allowed."""


def _grey_levels(img: Image.Image, path: Path, allow_colour: bool) -> tuple[np.ndarray, str | None]:
    """``(values in [0, 1], conversion applied or None)`` of an opened map.

    One channel (``L``, ``1``, 16/32-bit ``I``, a grey palette) is read as it is; an RGB(A)
    map whose channels agree within :data:`GREY_TOLERANCE` levels (a grey map stored as
    colour) is read as its luma. A real colour map (e.g. a colour-mapped heatmap) is rejected
    unless ``allow_colour``; then it is converted to luma (ITU-R 601-2:
    L = 0.299 R + 0.587 G + 0.114 B, PIL's ``convert("L")``) and the conversion is returned."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(img, dtype=np.float64) / 65535.0, None
    if img.mode in ("L", "1", "F"):
        return np.asarray(img.convert("L"), dtype=np.float64) / 255.0, None
    rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
    spread = int(np.abs(np.diff(rgb, axis=2)).max()) if rgb.size else 0
    luma = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    if spread <= GREY_TOLERANCE:
        return luma, None
    conversion = f"{path}: {img.mode} colour map converted to luma (0.299 R + 0.587 G + 0.114 B)"
    if not allow_colour:
        raise ColourSaliencyError(
            f"{path}: a saliency map must be one grey channel, this one is {img.mode} with channels "
            f"differing by up to {spread} levels (a colour-mapped picture?): export the grey map, or "
            f"set saliency.allow_colour=True to convert colour maps to luma")
    return luma, conversion


def load_saliency(path, size=None, normalise: bool = False,
                  allow_colour: bool = False) -> tuple[np.ndarray, str | None]:
    """:func:`read_saliency` that also returns the colour conversion applied (or None)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"saliency map not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            arr, conversion = _grey_levels(img, path, allow_colour)
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"unreadable saliency map {path}: {exc}") from exc
    arr = np.clip(arr, 0.0, 1.0).astype(np.float32)
    if size is not None and tuple(arr.shape) != (int(size[0]), int(size[1])):
        im = Image.fromarray(arr, mode="F").resize((int(size[1]), int(size[0])), Image.BILINEAR)
        arr = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
    if normalise:
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return arr.astype(np.float32), conversion


def read_saliency(path, size=None, normalise: bool = False, allow_colour: bool = False) -> np.ndarray:
    """Read one grey map as float32 in [0, 1] (8-bit / 255, 16-bit / 65535).

    ``size=(H, W)`` resizes bilinearly (PIL, half-pixel centres) when it differs.
    ``normalise`` rescales by min/max (a constant map becomes 0). A colour map raises
    :class:`ColourSaliencyError` unless ``allow_colour`` (then: luma, see :func:`_grey_levels`).
    Raises FileNotFoundError / ValueError naming the file.
    """
    return load_saliency(path, size, normalise, allow_colour)[0]


def find_saliency_file(directory, image_id: str) -> Path:
    """``<dir>/<id>.png`` (or .jpg/.jpeg/.bmp); FileNotFoundError naming the expected file."""
    d = Path(directory)
    for ext in SALIENCY_EXTS:
        p = d / f"{image_id}{ext}"
        if p.is_file():
            return p
    raise FileNotFoundError(f"saliency map not found: {d / (image_id + '.png')} (also tried {', '.join(SALIENCY_EXTS[1:])})")


def import_saliency(directory, ids, sizes, normalise: bool = False):
    """Yield ``(id, map)`` for each id: float32 (H, W) in [0, 1] resized to that image's size.

    ``sizes``: a sequence of (H, W) parallel to ``ids`` or a mapping id → (H, W).
    """
    for i, image_id in enumerate(ids):
        size = sizes[image_id] if isinstance(sizes, dict) else sizes[i]
        yield image_id, read_saliency(find_saliency_file(directory, image_id), size, normalise)


def export_dsrg_cues(label_maps: dict, path, grid: int = 41, num_classes: int | None = None,
                     image_labels: dict | None = None, index_of: dict | None = None,
                     mode: str = "nearest") -> dict:
    """Write seeds as a SEC/DSRG ``localization_cues.pickle``; return ``{id: index}``.

    Layout (SEC ``pylayers.AnnotationLayer`` and DSRG readers): one dict with, for each image
    of integer index ``i`` (its position in the training list, the second column of SEC/DSRG's
    ``input_list.txt``):
      * ``'%d_labels' % i``: int array of the image's classes **including background 0**
        (readers set ``labels[0, 0, labels_i] = 1``; SEC also sets index 0 itself);
      * ``'%d_cues' % i``: int array of shape (3, N), rows (class, y, x) on the ``grid × grid``
        map, used as ``cues[cues_i[0], cues_i[1], cues_i[2]] = 1``.
    Label maps are resampled to the grid with :func:`seeds_to_multihot` (``mode``).
    ``image_labels`` {id: [classes >= 1]} defaults to the foreground classes present in the
    label map; ``index_of`` {id: int} defaults to enumeration in ``label_maps`` order.
    Written with pickle protocol 2 (loadable by the Python-2 reference code) via tmp + rename.
    """
    if index_of is None:
        index_of = {k: i for i, k in enumerate(label_maps)}
    data = {}
    for key, lab in label_maps.items():
        lab = np.asarray(lab)
        n = num_classes if num_classes is not None else int(lab[lab != IGNORE_INDEX].max(initial=0)) + 1
        cues = seeds_to_multihot(lab, n, (grid, grid), mode)
        i = int(index_of[key])
        fg = image_labels[key] if image_labels is not None else np.unique(lab[(lab != IGNORE_INDEX) & (lab > 0)])
        data["%d_labels" % i] = np.array(sorted({0, *(int(c) for c in fg)}), dtype=np.int64)
        data["%d_cues" % i] = np.array(np.nonzero(cues), dtype=np.int64).reshape(3, -1)
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    return dict(index_of)


def save_rgb(path: str | os.PathLike, img) -> None:
    """Write an RGB uint8 image (format from the extension) via a temporary file; encoded in
    memory, so that a refused write raises the system's ``OSError`` (a full disk: ``ENOSPC``,
    naming ``path``) where ``cv2.imwrite`` only returned False."""
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or ".png", cv2.cvtColor(to_rgb(img), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode an image as {path.suffix!r}")
    with atomic_file(path) as tmp:
        tmp.write_bytes(data.tobytes())
