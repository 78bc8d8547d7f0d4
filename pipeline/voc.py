"""PASCAL VOC conventions: class names, colour palette and palette-PNG I/O.

Palette formula (VOC devkit ``VOClabelcolormap``): for index i, bits of i are spread
over the high bits of r, g, b (docs/ALGORITHMS.md §9.1): 1 -> (128,0,0), 2 -> (0,128,0),
255 -> (224,224,192). Pillow is imported by the PNG functions only.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
    "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def voc_palette(n: int = 256) -> np.ndarray:
    """Return the VOC colour map as an ``(n, 3)`` uint8 array."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


_PALETTE_FLAT = voc_palette().reshape(-1).tolist()


def write_label_png(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write an ``HxW`` integer label map as a single-channel palette ('P') PNG."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{path}: label map must be 2-D, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"{path}: label values must lie in 0..255")
    from PIL import Image
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(_PALETTE_FLAT)
    img.save(path)


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a palette (or grey) PNG label map as ``HxW`` uint8 indices (no colour conversion)."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise ValueError(f"{path}: expected a palette ('P') or grey ('L') PNG, got mode {img.mode!r}")
            return np.array(img, dtype=np.uint8)
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: unreadable label PNG ({exc})") from exc


def colorize(label: np.ndarray) -> np.ndarray:
    """Map an ``HxW`` label map to an ``HxWx3`` uint8 RGB image with the VOC palette."""
    return voc_palette()[np.asarray(label, dtype=np.uint8)]


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Read a class file: one name per line in index order, line 0 is the background."""
    names = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if len(names) < 2:
        raise ValueError(f"{path}: a class file needs the background and at least one class")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate class names")
    if len(names) > 255:
        raise ValueError(f"{path}: at most 255 classes (255 is the ignore index)")
    return names
