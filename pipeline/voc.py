"""PASCAL VOC conventions: class names, colour palette and palette-PNG I/O.

Palette formula (VOC devkit ``VOClabelcolormap``): for index i, bits of i are spread
over the high bits of r, g, b (docs/ALGORITHMS.md §9.1): 1 -> (128,0,0), 2 -> (0,128,0),
255 -> (224,224,192). Pillow is imported by the PNG functions only.
"""
from __future__ import annotations


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


def colorize(label: np.ndarray) -> np.ndarray:
    """Map an ``HxW`` label map to an ``HxWx3`` uint8 RGB image with the VOC palette."""
    return voc_palette()[np.asarray(label, dtype=np.uint8)]
