"""Drawing helpers for overlays and reports (numpy + OpenCV only; RGB uint8 in and out).

* :func:`heatmap_rgb` — a [0, 1] map through the jet colormap (``cv2.applyColorMap``).
* :func:`grey_rgb` — a [0, 1] map as a grey RGB image.
* :func:`label_rgb` — a label map in the VOC palette (255 = ignore, light grey).
* :func:`blend` — alpha blend of two RGB images.
* :func:`caption` — an image with a small text strip above it.
* :func:`panel_row` — images side by side at a common height, each with its caption.
"""
from __future__ import annotations


import cv2
import numpy as np

from pipeline.voc import colorize

__all__ = ["to_uint8", "heatmap_rgb", "grey_rgb", "label_rgb", "blend", "caption", "panel_row",
           "blank", "to_rgb"]


def to_uint8(x) -> np.ndarray:
    """A float map in [0, 1] (values outside are clipped; NaN → 0) as uint8 0..255."""
    a = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0)
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def heatmap_rgb(x) -> np.ndarray:
    """(H, W) map in [0, 1] → (H, W, 3) RGB jet colours (0 blue, 1 red)."""
    bgr = cv2.applyColorMap(to_uint8(x), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def grey_rgb(x) -> np.ndarray:
    """(H, W) map in [0, 1] → (H, W, 3) grey RGB."""
    g = to_uint8(x)
    return np.repeat(g[:, :, None], 3, axis=2)


def label_rgb(label) -> np.ndarray:
    """(H, W) label map (0..254, 255 ignore) → (H, W, 3) VOC palette colours."""
    return colorize(np.asarray(label))


def blank(shape_hw, value: int = 0) -> np.ndarray:
    """A uniform (H, W, 3) uint8 image (a placeholder panel)."""
    return np.full((int(shape_hw[0]), int(shape_hw[1]), 3), value, dtype=np.uint8)


def blend(image, overlay, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) · image + alpha · overlay`` for two RGB uint8 images of one size."""
    a, b = to_rgb(image), to_rgb(overlay)
    if a.shape != b.shape:
        raise ValueError(f"blend: shapes {a.shape} and {b.shape} differ")
    out = (1.0 - alpha) * a.astype(np.float32) + alpha * b.astype(np.float32)
    return np.round(out).clip(0, 255).astype(np.uint8)


def to_rgb(img) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 (or HxW) image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = to_uint8(a) if np.issubdtype(a.dtype, np.floating) else np.clip(a, 0, 255).astype(np.uint8)
    return a


def caption(img, text: str, height: int | None = None, bg: int = 255, fg=(0, 0, 0)) -> np.ndarray:
    """``img`` (RGB) with a ``height``-pixel strip above it holding ``text`` (small Hershey font,
    shrunk to fit the width). Default height: 14 px, or more for wide images."""
    a = to_rgb(img)
    w = a.shape[1]
    h = int(height) if height is not None else max(14, min(24, w // 12))
    strip = np.full((h, w, 3), bg, dtype=np.uint8)
    if text:
        font = cv2.FONT_HERSHEY_SIMPLEX
        scale = h / 30.0
        (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
        if tw > w - 2:
            scale *= (w - 2) / max(tw, 1)
            (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
        x = max(1, (w - tw) // 2)
        y = max(th + 1, (h + th) // 2)
        cv2.putText(strip, text, (x, y), font, scale, tuple(int(c) for c in fg), 1, cv2.LINE_AA)
    return np.concatenate([strip, a], axis=0)


def panel_row(images: list, labels: list[str] | None = None, height: int | None = None,
              gap: int = 2, bg: int = 255) -> np.ndarray:
    """Images side by side: each resized to a common ``height`` (default: the first image's;
    aspect ratio kept; label maps should be colourised first), captioned with its label and
    separated by ``gap`` background pixels. Returns one (H', W', 3) uint8 RGB image."""
    if not images:
        raise ValueError("panel_row needs at least one image")
    labels = list(labels) if labels is not None else [""] * len(images)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    imgs = [to_rgb(im) for im in images]
    h = int(height) if height is not None else imgs[0].shape[0]
    tiles = []
    for im in imgs:
        if im.shape[0] != h:
            w = max(1, int(round(im.shape[1] * h / im.shape[0])))
            im = cv2.resize(im, (w, h), interpolation=cv2.INTER_NEAREST)
        tiles.append(im)
    cap_h = max(14, min(24, min(t.shape[1] for t in tiles) // 6))
    tiles = [caption(t, lab, height=cap_h, bg=bg) for t, lab in zip(tiles, labels)]
    sep = np.full((tiles[0].shape[0], gap, 3), bg, dtype=np.uint8)
    parts = []
    for i, t in enumerate(tiles):
        if i and gap > 0:
            parts.append(sep)
        parts.append(t)
    return np.concatenate(parts, axis=1)
