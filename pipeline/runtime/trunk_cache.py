"""Cached frozen-trunk training (``train.cache_trunk=True``): the CPU mode for real photos.

With an ImageNet trunk whose first layers are frozen (``backbone.frozen_blocks = n``:
:class:`pipeline.models.efficientnet_lite.EfficientNetLite`, Lite0 / Lite1 / Lite2), the frozen part's output on an
image does not change during training, provided the image reaches the network the same way every
time. The cached mode therefore feeds each training image as a square resize to the crop size
(the DSRG recipe's resize, without its random flip: a flipped image has other features), computes
the trunk once per image, keeps it on disk under ``WORK_DIR/cache/trunk/<key>/<id>.pt`` (shared by
every stage whose trunk, weights and input size agree: classifier, segmenter, upper bound) and in
memory, and trains the rest of the network on it (``net(features, from_trunk=True)``). The forward
output is the uncached one's (tests/test_efficientnet_lite.py); only the per-step cost changes.

Inference stages reuse the cache through :class:`TrunkLookup` (``backbone.lookup``): an input
image tensor found in the cache (same bytes: SHA-1 of the tensor) takes its cached features, any
other input runs the trunk — e.g. the heatmaps stage at the training size, one scale, no flip.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from pipeline.data.io_utils import write_stream_atomic

__all__ = ["trunk_cache_dir", "CachedTrunkDataset", "trunk_of", "cached_trunk_dataset",
           "input_digest", "TrunkLookup", "trunk_lookup"]

CACHE_FORMAT = "wsss-trunk-cache/1"


def trunk_of(net) -> torch.nn.Module:
    """The module with ``trunk()``: a classifier's backbone or the segmenter itself."""
    return net if hasattr(net, "trunk") else net.backbone


def trunk_cache_dir(work_dir, trunk_cfg: dict, pretrained, size: int) -> Path:
    """``WORK_DIR/cache/trunk/<key>``: the key digests what the cached tensors depend on (trunk
    type, frozen blocks, the frozen layers tapped (when any), the weight file's path, size and
    mtime (the file of the type's variant for ``pretrained="package"``), the input size)."""
    weights = None
    if pretrained not in (None, "none"):
        from pipeline.models.lite_weights import resolve_weights, variant_of
        path = resolve_weights(pretrained, variant_of(trunk_cfg.get("type", "efficientnet_lite0")))
        stat = path.stat()
        weights = [str(path.resolve()), stat.st_size, int(stat.st_mtime)]
    record = {"format": CACHE_FORMAT, "type": trunk_cfg.get("type"),
              "frozen_blocks": int(trunk_cfg.get("frozen_blocks", 0)), "weights": weights,
              "size": int(size)}
    if trunk_cfg.get("taps"):
        record["taps"] = [str(t) for t in trunk_cfg["taps"]]
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
        # the items without their images (labels, raw pixels for the CRF), read once
        self.items = [{k: v for k, v in base[i].items() if k != "image"} for i in range(len(base))]

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
                    write_stream_atomic(self._path(item["id"]), lambda fh, f=f: torch.save(f.clone(), fh))
        finally:
            trunk.train(was_training)

    def __len__(self) -> int:
        return len(self.base)

    def label_paths(self) -> list:
        return self.base.label_paths()

    def __getitem__(self, i: int) -> dict:
        item = dict(self.items[i])
        item["image"] = self.features[item["id"]]
        return item


def cached_trunk_dataset(base, net, model_cfg: dict, work_dir, device="cpu", log=print) -> CachedTrunkDataset:
    """``base`` (a deterministic dataset) with ``net``'s frozen-trunk features as images, cached
    under ``WORK_DIR/cache/trunk/`` (``model_cfg``: the model section, ``backbone`` and
    ``pretrained``)."""
    trunk_cfg = model_cfg.get("backbone") or {}
    where = trunk_cache_dir(work_dir, trunk_cfg, model_cfg.get("pretrained"), base.size)
    return CachedTrunkDataset(base, trunk_of(net), where, device, log=log)


def input_digest(x: torch.Tensor) -> str:
    """SHA-1 of one input tensor's bytes (float32, contiguous)."""
    return hashlib.sha1(x.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


class TrunkLookup:
    """``lookup(trunk_fn, x)``: the trunk output of a batch, cached features for the inputs whose
    digest is known (``features``: digest → tensor), ``trunk_fn`` on the others."""

    def __init__(self, features: dict[str, torch.Tensor]) -> None:
        self.features, self.hits, self.misses = features, 0, 0

    def __call__(self, trunk_fn, x: torch.Tensor) -> torch.Tensor:
        found = [self.features.get(input_digest(xi)) for xi in x]
        missing = [i for i, f in enumerate(found) if f is None]
        self.hits, self.misses = self.hits + len(x) - len(missing), self.misses + len(missing)
        if len(missing) == len(x):
            return trunk_fn(x)
        if missing:
            for i, f in zip(missing, trunk_fn(x[missing])):
                found[i] = f
        return torch.stack([f.to(device=x.device, dtype=x.dtype) for f in found])


def trunk_lookup(base, cache_dir) -> TrunkLookup | None:
    """A :class:`TrunkLookup` over the cached features of ``base``'s items (a deterministic
    dataset: its ``"image"`` tensors are the cached inputs), or None when ``cache_dir`` holds none."""
    cache_dir = Path(cache_dir)
    features = {}
    for i, img_id in enumerate(base.ids):
        path = cache_dir / f"{img_id}.pt"
        if path.is_file():
            features[input_digest(base[i]["image"])] = torch.load(path, weights_only=True)
    return TrunkLookup(features) if features else None


def attach_trunk_lookup(net, model_cfg: dict, base, work_dir, log=print) -> TrunkLookup | None:
    """Let ``net``'s frozen trunk read the cached features of ``base``'s inputs (the training
    inputs of a cached run: a deterministic dataset at the cache's size); ``model_cfg``: the model
    section (``backbone``, ``pretrained``). Returns the lookup, or None (no frozen trunk, or
    nothing cached)."""
    trunk_cfg = dict(model_cfg.get("backbone") or {})
    if trunk_cfg.get("type", "vgg16") == "vgg16" or not trunk_cfg.get("frozen_blocks"):
        return None
    where = trunk_cache_dir(work_dir, trunk_cfg, model_cfg.get("pretrained"), base.size)
    lookup = trunk_lookup(base, where)
    if lookup is not None:
        for module in net.modules():
            if hasattr(module, "lookup"):          # the EfficientNetLite trunk
                module.lookup = lookup
        log(f"trunk cache {where}: {len(lookup.features)} cached inputs")
    return lookup
