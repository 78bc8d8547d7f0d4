"""Where the cells of the networks' output grid sit on the image (grid ↔ image mapping;
docs/ALGORITHMS.md §14).

Both VGG-16 networks (the cue classifier, DeepLab-ASPP) use "same"-padded convolutions and
3×3 / stride-2 / pad-1 max pools in ceil mode (DeepLab's prototxt: "(16k−15); (8k−7); (4k−3);
(2k−1); k … makes it easier to exactly align responses at different layers"): pool output cell
i is centred on its input pixel 2·i, so after three such pools

    output cell i sits on network-input pixel  u = STRIDE · i   (STRIDE = 8)

for any input size (321 → 41: cell 40 on pixel 320; 112 → 15: cell 14 on pixel 112, half a
cell beyond the last pixel). tests/test_geometry.py checks this on the networks themselves: the
response to a one-pixel impulse at 8·i is symmetric about cell i.

The network input is a bilinear resize of an image *frame* (the original image, or a 321×321
square made from it) with the half-pixel convention of OpenCV / ``F.interpolate(...,
align_corners=False)``: frame pixel y ↔ input pixel u = (y + ½)·n / L − ½ (frame length L,
input length n). Composed with the grid:

    grid coordinate of frame pixel y:   g(y) = ((y + ½)·n / L − ½) / STRIDE             (1)
    frame pixel of cell i:              y(i) = (STRIDE·i + ½)·L / n − ½                   (2)

:func:`grid_to_frame` samples maps bilinearly at (1) (clamped to the grid), which every
upsampling of CAMs / λ / logits uses (heatmaps, localisation, inference, the cross-entropy
loss); :func:`cell_pixels` rounds (2) to a pixel (seed cues on the grid, the training CRF's
image); :func:`pixel_cells` rounds (1) to a cell (majority cues). With n = L = 8·(h−1) + 1
(321 / 41) (1) is ``align_corners=True``; ``align_corners=False`` would shift maps by up to
3.5 px at the borders.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["STRIDE", "grid_coords", "cell_pixels", "pixel_cells", "grid_to_frame",
           "input_len_for_grid"]

STRIDE = 8


def input_len_for_grid(grid_len: int, stride: int = STRIDE) -> int:
    """The input length whose grid's last cell sits on the last pixel: stride·(h−1)+1 (321)."""
    return stride * (int(grid_len) - 1) + 1


def grid_coords(frame_len: int, input_len: int | None = None, stride: int = STRIDE) -> np.ndarray:
    """Eq. (1): the (float) grid coordinate of every pixel of a frame of ``frame_len`` pixels
    whose resize to ``input_len`` (default: the frame itself) was the network input."""
    L = int(frame_len)
    n = L if input_len is None else int(input_len)
    return ((np.arange(L, dtype=np.float64) + 0.5) * n / L - 0.5) / stride


def cell_pixels(grid_len: int, input_len: int, frame_len: int | None = None,
                stride: int = STRIDE) -> np.ndarray:
    """Eq. (2) rounded: the frame pixel (int64, clipped to the frame) each grid cell sits on."""
    n = int(input_len)
    L = n if frame_len is None else int(frame_len)
    y = (stride * np.arange(int(grid_len), dtype=np.float64) + 0.5) * L / n - 0.5
    return np.clip(np.floor(y + 0.5), 0, L - 1).astype(np.int64)


def pixel_cells(frame_len: int, grid_len: int, input_len: int | None = None,
                stride: int = STRIDE) -> np.ndarray:
    """Eq. (1) rounded: the nearest grid cell (int64, clipped to the grid) of every frame pixel."""
    g = grid_coords(frame_len, input_len, stride)
    return np.clip(np.floor(g + 0.5), 0, int(grid_len) - 1).astype(np.int64)


def _axis(frame_len: int, input_len: int, grid_len: int, stride: int, device):
    g = np.clip(grid_coords(frame_len, input_len, stride), 0, grid_len - 1)
    i0 = np.floor(g).astype(np.int64)
    i1 = np.minimum(i0 + 1, grid_len - 1)
    t = torch.as_tensor(g - i0, dtype=torch.float32, device=device)
    return torch.as_tensor(i0, device=device), torch.as_tensor(i1, device=device), t


def grid_to_frame(maps: torch.Tensor, input_size, out_size=None,
                  stride: int = STRIDE) -> torch.Tensor:
    """Bilinear upsampling of grid maps (…, h, w) to the frame (…, H, W), sampled at Eq. (1).

    ``input_size = (n_h, n_w)``: the network input that gave the grid; ``out_size = (H, W)``:
    the frame that input was resized from (default ``input_size``: the input itself). Values
    beyond the first / last cell repeat that cell. Float maps of any dtype stay on their device.
    """
    n_h, n_w = (int(v) for v in input_size)
    H, W = (n_h, n_w) if out_size is None else (int(v) for v in out_size)
    h, w = maps.shape[-2:]
    y0, y1, ty = _axis(H, n_h, h, stride, maps.device)
    x0, x1, tx = _axis(W, n_w, w, stride, maps.device)
    ty, tx = ty.to(maps.dtype)[:, None], tx.to(maps.dtype)
    rows = maps[..., y0, :] * (1 - ty) + maps[..., y1, :] * ty
    return rows[..., x0] * (1 - tx) + rows[..., x1] * tx
