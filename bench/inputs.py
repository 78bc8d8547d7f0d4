"""Synthetic training batches shared by the training and DSRG-loss benchmarks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.transforms import to_tensor


def reference_dsrg_config():
    """The DSRG loss parameters of the VOC setting (configs/voc_ep_dsrg.py: thresholds 0.85 /
    0.99, the dsrg_train CRF, ...)."""
    from bench.plain_config import plain_config
    from pipeline.settings.segmenter import SegmenterSettings

    cfg = plain_config(Path(__file__).resolve().parent.parent / "configs" / "voc_ep_dsrg.py")
    return SegmenterSettings.from_dict(cfg["segmenter"], "segmenter").dsrg_config()


def smooth_fields(rng, n, size, cells=6) -> torch.Tensor:
    """(n, size, size) smooth N(0,1)-ish random fields (bicubic upsampled ``cells``² noise)."""
    coarse = torch.from_numpy(rng.standard_normal((n, 1, cells, cells)).astype(np.float32))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[:, 0]


def smooth_logits(batch: int, num_classes: int, size: int, classes: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(B,C,size,size) smooth random logits (bicubic upsampled 5×5 noise × 6) raised by 2 on the
    image's ``classes`` (B,C) and lowered by 6 elsewhere: confident regions that grow."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(int(batch), int(num_classes), 5, 5, generator=g)
    z = 6.0 * F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return torch.where(classes[:, :, None, None], z + 2.0, z - 6.0)


def random_image_classes(rng, batch: int, num_classes: int, max_fg: int) -> torch.Tensor:
    """(B,C) bool: background plus 1..``max_fg`` foreground classes per image, uniform."""
    B, C = int(batch), int(num_classes)
    classes = torch.zeros(B, C, dtype=torch.bool)
    classes[:, 0] = True
    for b in range(B):
        k = int(rng.integers(1, int(max_fg) + 1))
        classes[b, 1 + rng.choice(C - 1, size=min(k, C - 1), replace=False)] = True
    return classes


def segmenter_batch(batch: int, size: int, num_classes: int = 21, max_fg: int = 3, seed: int = 0) -> dict:
    """A ``SegmentationDataset``-style collated batch: ``image`` (B,3,S,S) normalised float,
    ``label`` (B,S,S) int64 seed maps (255 = unlabelled, ~35 % labelled, the image's classes
    only), ``classes`` (B,C) bool (background on), ``raw`` (B,S,S,3) uint8 crops."""
    rng = np.random.default_rng(seed)
    B, S, C = int(batch), int(size), int(num_classes)
    classes = random_image_classes(rng, B, C, max_fg)
    field = smooth_fields(rng, B * C, S).view(B, C, S, S).masked_fill(~classes[:, :, None, None], float("-inf"))
    top, arg = field.max(dim=1)
    label = torch.where(top > 0.9, arg, torch.full_like(arg, 255)).long()
    palette = rng.integers(0, 256, (B, C, 3))
    raw = np.stack([palette[b][arg[b].numpy()] for b in range(B)]) + rng.normal(0, 10, (B, S, S, 3))
    raw = np.clip(raw, 0, 255).astype(np.uint8)
    image = torch.stack([to_tensor(r) for r in raw])
    return {"image": image, "label": label, "classes": classes, "raw": torch.from_numpy(raw)}


def classifier_batch(batch: int, size: int, num_classes: int = 21, seed: int = 0) -> dict:
    """A ``ClassificationDataset``-style batch: ``image`` (B,3,S,S), ``target`` (B,K) multi-hot."""
    seg = segmenter_batch(batch, size, num_classes, seed=seed)
    return {"image": seg["image"], "target": seg["classes"][:, 1:].float()}
