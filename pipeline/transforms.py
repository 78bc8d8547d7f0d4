"""Image/label transforms on numpy arrays (HxWx3 uint8 images, HxW uint8 label maps).

Training follows the DSRG/DeepLab recipe (docs/ALGORITHMS.md §10): random rescale, random crop
padded with the ImageNet mean (labels padded with 255 = ignore), horizontal flip; test images
are either resized to a fixed square (DSRG ignores the aspect ratio) or kept at their size.
OpenCV is imported by the functions that use it, so :func:`to_tensor` (and the test-time code
that needs no resizing) runs on a plain torch + numpy install.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.voc import IGNORE_INDEX

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0


def parse_size(size) -> tuple[int, int] | None:
    """A ``size`` setting as ``(h, w)``: a number s → (s, s), a pair → (h, w); None, 0,
    ``"none"`` or ``"original"`` (any case) → None, meaning each image keeps its own size.
    Raises ValueError for anything else (negative sides, a triple, an unknown word)."""
    if size is None or (isinstance(size, str) and size.strip().lower() in ("none", "original")):
        return None
    try:
        if isinstance(size, (list, tuple)):
            if len(size) != 2:
                raise ValueError
            h, w = int(size[0]), int(size[1])
        else:
            h = w = int(size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be an int, an (h, w) pair, None or 'original'; "
                         f"got {size!r}") from None
    if h == w == 0:
        return None
    if h <= 0 or w <= 0:
        raise ValueError(f"size sides must be positive, got {size!r}")
    return h, w


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to ``size = (h, w)``."""
    import cv2
    h, w = size
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to ``size = (h, w)``."""
    import cv2
    h, w = size
    return cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)


def random_scale(image, label, scale_range, rng: np.random.Generator):
    """Rescale image (bilinear) and label (nearest) by a factor drawn from ``scale_range``."""
    lo, hi = scale_range
    s = float(rng.uniform(lo, hi))
    h, w = image.shape[:2]
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return resize_image(image, size), (None if label is None else resize_label(label, size))


def random_crop(image, label, crop: int, rng: np.random.Generator):
    """Pad (image with the mean colour, label with 255) to at least ``crop`` and crop randomly."""
    h, w = image.shape[:2]
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    if ph or pw:
        import cv2
        mean = tuple(float(v) for v in IMAGENET_MEAN)
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=mean)
        if label is not None:
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
    h, w = image.shape[:2]
    y = int(rng.integers(0, h - crop + 1))
    x = int(rng.integers(0, w - crop + 1))
    image = image[y:y + crop, x:x + crop]
    return image, (None if label is None else label[y:y + crop, x:x + crop])


def random_hflip(image, label, rng: np.random.Generator):
    if rng.random() < 0.5:
        image = image[:, ::-1]
        label = None if label is None else label[:, ::-1]
    return np.ascontiguousarray(image), (None if label is None else np.ascontiguousarray(label))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 3xHxW float tensor normalised with the ImageNet mean/std."""
    x = (image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def train_augment(image, label, crop: int, scale_range, rng, resize: int | None = None):
    """Resize (optional, square) → random scale → random crop → flip."""
    if resize:
        image = resize_image(image, (resize, resize))
        label = None if label is None else resize_label(label, (resize, resize))
    if scale_range and tuple(scale_range) != (1.0, 1.0):
        image, label = random_scale(image, label, scale_range, rng)
    image, label = random_crop(image, label, crop, rng)
    return random_hflip(image, label, rng)
