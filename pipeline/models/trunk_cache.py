"""Cached frozen-trunk training (``train.cache_trunk=True``): the CPU mode for real photos.

With an ImageNet trunk whose first layers are frozen (``backbone.frozen_blocks = n``:
:class:`pipeline.models.efficientnet_lite.EfficientNetLite0`), the frozen part's output on an
image does not change during training, provided the image reaches the network the same way every
time. The cached mode therefore feeds each training image as a square resize to the crop size
(the DSRG recipe's resize, without its random flip: a flipped image has other features), computes
the trunk once per image, keeps it on disk under ``WORK_DIR/cache/trunk/<key>/<id>.pt`` (shared by
every stage whose trunk, weights and input size agree: classifier, segmenter, upper bound) and in
memory, and trains the rest of the network on it (``net(features, from_trunk=True)``). The forward
output is the uncached one's (tests/test_trunk_cache.py); only the per-step cost changes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from pipeline.io_utils import atomic_file

__all__ = ["trunk_cache_dir", "CachedTrunkDataset", "trunk_of", "cached_trunk_dataset"]

CACHE_FORMAT = "wsss-trunk-cache/1"


def trunk_of(net) -> torch.nn.Module:
    """The module with ``trunk()``: a classifier's backbone or the segmenter itself."""
    return net if hasattr(net, "trunk") else net.backbone


def trunk_cache_dir(work_dir, trunk_cfg: dict, pretrained, size: int) -> Path:
    """``WORK_DIR/cache/trunk/<key>``: the key digests what the cached tensors depend on (trunk
    type, frozen blocks, the weight file's path, size and mtime, the input size)."""
    weights = None
    if pretrained not in (None, "none"):
        from .efficientnet_lite import resolve_lite0_weights
        path = resolve_lite0_weights(pretrained)
        stat = path.stat()
        weights = [str(path.resolve()), stat.st_size, int(stat.st_mtime)]
    record = {"format": CACHE_FORMAT, "type": trunk_cfg.get("type"),
              "frozen_blocks": int(trunk_cfg.get("frozen_blocks", 0)), "weights": weights,
              "size": int(size)}
    key = hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    return Path(work_dir) / "cache" / "trunk" / key


class CachedTrunkDataset(Dataset):
    """``base``'s items (a deterministic dataset: ``train=False``) with ``"image"`` replaced by
    the trunk's output on it. Missing cache files are computed at construction, in batches of
    ``batch_size`` on ``device``; every feature map is then held in memory."""

    def __init__(self, base, trunk: torch.nn.Module, cache_dir, device="cpu", batch_size: int = 8,
                 log=print) -> None:
        self.base, self.cache_dir = base, Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        missing = [i for i, img_id in enumerate(base.ids) if not self._path(img_id).is_file()]
        log(f"trunk cache {self.cache_dir}: {len(base.ids) - len(missing)} of {len(base.ids)} "
            f"images cached, computing {len(missing)}")
        if missing:
            self._compute(trunk, missing, device, batch_size)
        self.features = {img_id: torch.load(self._path(img_id), weights_only=True)
                         for img_id in base.ids}

    def _path(self, img_id: str) -> Path:
        return self.cache_dir / f"{img_id}.pt"

    @torch.no_grad()
    def _compute(self, trunk, indices, device, batch_size) -> None:
        was_training = trunk.training
        trunk.eval().to(device)
        try:
            for start in range(0, len(indices), batch_size):
                items = [self.base[i] for i in indices[start:start + batch_size]]
                feats = trunk.trunk(torch.stack([it["image"] for it in items]).to(device)).float().cpu()
                for item, f in zip(items, feats):
                    with atomic_file(self._path(item["id"])) as tmp:
                        torch.save(f.clone(), tmp)
        finally:
            trunk.train(was_training)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        item["image"] = self.features[item["id"]]
        return item


def cached_trunk_dataset(base, net, model_cfg: dict, work_dir, device="cpu", log=print) -> CachedTrunkDataset:
    """``base`` (a deterministic dataset) with ``net``'s frozen-trunk features as images, cached
    under ``WORK_DIR/cache/trunk/`` (``model_cfg``: the model section, ``backbone`` and
    ``pretrained``)."""
    trunk_cfg = model_cfg.get("backbone") or {}
    where = trunk_cache_dir(work_dir, trunk_cfg, model_cfg.get("pretrained"), base.size)
    return CachedTrunkDataset(base, trunk_of(net), where, device, log=log)
