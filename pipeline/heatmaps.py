"""Class heatmaps (CAM) and entropy-weight maps (λ): test-time aggregation and normalisation.

* :func:`aggregate_heatmaps` — multi-scale / horizontal-flip averaging of a model's CAM and
  EP weight map (docs/ALGORITHMS.md §1.6).
* :func:`normalise_per_class` — ``ReLU(cam) / max(ReLU(cam))`` per class map.
* :func:`class_specific_lambda` — ``λ_i^c = λ_i · p̂_i(c)`` (EP paper, Eq. 5).
* :func:`infer_batch` — a classifier's aggregated CAM, λ, λ^c and image scores for a batch
  (what the heatmaps stage runs); :func:`image_heatmaps` the same for one image at its own size
  (what the localize stage runs).

The heatmap files are written and read by :func:`pipeline.data.files.save_heatmap` /
:func:`pipeline.data.files.load_heatmap`.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from pipeline.affinity import refine_cam
from pipeline.geometry import STRIDE, grid_to_frame
from pipeline.transforms import parse_size, resize_image, to_tensor


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _to_frame(grid: torch.Tensor, input_size, size, flipped: bool, stride: int) -> torch.Tensor:
    """Upsample a grid to the frame (cell i on input pixel stride·i); a mirrored input's grid
    to the mirrored frame, then mirrored back (its cells sit stride·i px from the right edge)."""
    up = grid_to_frame(grid.float(), input_size, size, stride)
    return up.flip(-1) if flipped else up


def aggregate_heatmaps(forward_fn, image: torch.Tensor, scales=(1.0,), flip: bool = True,
                       no_grad: bool = True, stride: int = STRIDE) -> dict:
    """Average ``forward_fn`` outputs over scales and horizontal flips at the input resolution
    (docs/ALGORITHMS.md §1.6).

    ``forward_fn(x)`` returns ``{'cam': (B, K, h, w), 'lam': (B, h, w)}`` ('lam' optional).
    For each scale s the input (B, 3, H, W) is resized to ``(round(sH), round(sW))``
    (bilinear, align_corners=False); with ``flip`` the mirrored input is also run. Every output
    grid is upsampled to (H, W) with the networks' alignment, cell i on input pixel ``stride``·i
    (:func:`pipeline.geometry.grid_to_frame`; a mirrored one to the mirrored frame, then
    mirrored back), and the ``len(scales) · (1 + flip)`` results are averaged (raw values;
    normalise afterwards).
    Returns ``{'cam': (B, K, H, W), 'lam': (B, H, W) or None}``.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
    H, W = image.shape[-2:]
    cam_sum, lam_sum, n = None, None, 0
    ctx = torch.no_grad() if no_grad else torch.enable_grad()
    with ctx:
        for s in scales:
            size = (max(1, int(round(H * s))), max(1, int(round(W * s))))
            x = _resize(image, size)
            for flipped in ((False, True) if flip else (False,)):
                out = forward_fn(x.flip(-1) if flipped else x)
                cam = _to_frame(out["cam"], size, (H, W), flipped, stride)
                cam_sum = cam if cam_sum is None else cam_sum + cam
                if out.get("lam") is not None:
                    lam = _to_frame(out["lam"], size, (H, W), flipped, stride)
                    lam_sum = lam if lam_sum is None else lam_sum + lam
                n += 1
    return {"cam": cam_sum / n, "lam": lam_sum / n if lam_sum is not None else None}


def normalise_per_class(cam, eps: float = 1e-5):
    """``ReLU(cam) / max_{x,y} ReLU(cam)`` for each map over the last two axes.

    The divisor is clamped to ``eps``, so all-zero (or all-negative) maps stay zero and any map
    whose max is >= eps peaks at exactly 1. Accepts torch tensors or numpy arrays (…, H, W).
    """
    if isinstance(cam, torch.Tensor):
        c = cam.clamp_min(0)
        m = c.amax(dim=(-2, -1), keepdim=True).clamp_min(eps)
        return c / m
    c = np.maximum(np.asarray(cam, dtype=np.float32), 0)
    m = np.maximum(c.max(axis=(-2, -1), keepdims=True, initial=0.0), eps)
    return c / m


def class_specific_lambda(lam, probs):
    """``λ^c = λ · p̂(c)`` (EP paper Eq. 5): lam (…, h, w), probs (…, K, h, w) softmax over K.

    Returns (…, K, h, w). Works for torch tensors and numpy arrays.
    """
    if isinstance(lam, torch.Tensor):
        return lam.unsqueeze(-3) * probs
    return np.asarray(lam)[..., None, :, :] * np.asarray(probs)


@torch.no_grad()
def infer_batch(net, images: torch.Tensor, scales, flip: bool, with_lambda_c: bool, amp: bool,
                refine: dict | None = None) -> dict:
    """Aggregated raw ``cam`` (B, K, h, w), ``lam`` (B, h, w), ``lambda_c`` (B, K, h, w) or None,
    and ``scores`` (B, K) = σ(mean logit over scales/flips). ``refine`` (``iterations``, ``beta``,
    ``radius``; iterations > 0): each view's CAM is replaced by its affinity refinement on the
    classifier's features (:func:`pipeline.affinity.refine_cam`; ReLU(CAM) propagated)."""
    K = net.num_classes
    logits = []
    use_amp = amp and images.device.type == "cuda"

    def forward(x):
        with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=use_amp):
            out = net(x)
        logits.append(out["logits"].float())
        cam, lam = out["cam"].float(), out["lam"].float()
        if refine and refine["iterations"] > 0:
            cam = refine_cam(cam, out["features"], refine["beta"], refine["radius"], refine["iterations"])
        if with_lambda_c:
            cam = torch.cat([cam, class_specific_lambda(lam, cam.softmax(dim=1))], dim=1)
        return {"cam": cam, "lam": lam}

    agg = aggregate_heatmaps(forward, images, scales=tuple(scales), flip=flip)
    cam = agg["cam"]
    return {"cam": cam[:, :K], "lam": agg["lam"],
            "lambda_c": cam[:, K:] if with_lambda_c else None,
            "scores": torch.sigmoid(torch.stack(logits).mean(0))}


@torch.no_grad()
def image_heatmaps(net, image: np.ndarray, size, scales, flip: bool, device) -> dict:
    """Maps of one (H, W, 3) uint8 image at its own size, from the classifier seeing it at
    ``size`` (:func:`pipeline.transforms.parse_size`; None = its own) with :func:`aggregate_heatmaps`
    over ``scales`` / ``flip``: ``cam`` (K, H, W), ``lambda_c`` (K, H, W, EP paper Eq. 5,
    clipped at 0), ``lam`` (H, W) as float32 numpy, and ``scores`` (K,) = mean logit over the
    views (what the localize stage scores, docs/ALGORITHMS.md §12)."""
    H, W = image.shape[:2]
    hw = parse_size(size)
    x = to_tensor(resize_image(image, hw) if hw and hw != (H, W) else image)[None].to(device)
    K = net.num_classes
    logits = []

    def forward(v):
        out = net(v)
        logits.append(out["logits"].float())
        cam, lam = out["cam"].float(), out["lam"].float()
        return {"cam": torch.cat([cam, class_specific_lambda(lam, cam.softmax(dim=1))], 1), "lam": lam}

    agg = aggregate_heatmaps(forward, x, scales=scales, flip=flip)
    maps = torch.cat([agg["cam"], agg["lam"][:, None]], 1)
    # input frame → image: the inverse of the input's resize (half-pixel, as OpenCV's); the grid
    # → input step used the stride-8 geometry (aggregate_heatmaps, pipeline.geometry)
    maps = F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False)[0].cpu().numpy()
    return {"cam": maps[:K], "lambda_c": np.clip(maps[K:2 * K], 0, None), "lam": maps[2 * K],
            "scores": torch.stack(logits).mean(0)[0].cpu().numpy()}
