"""mmsegmentation models trained by the project's loop: the ``retrain`` stage's second round with
any mmseg segmentor (docs/ALGORITHMS.md §5.7).

:func:`build_mmseg_model`, :func:`for_training`, :func:`mmseg_losses`, :class:`MMSegLogits` and
the ``wsss-mmseg-model/1`` files (:func:`save_mmseg_model` / :func:`load_mmseg_model`) let the
``retrain`` stage train any mmseg segmentor config through :mod:`pipeline.runtime.training`.
The project's own segmenter (DeepLab-ASPP VGG-16 with DSRG, :mod:`pipeline.models.deeplab`,
:mod:`pipeline.dsrg`) is trained by the ``segmenter`` stage without mmseg; ``retrain.model.type
="DeepLabV2VGG16"`` selects it for the second round. This module needs mmsegmentation and mmcv
(``make env-mm``); reach it through :func:`pipeline.mm.segmentation_edge`.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn

from pipeline.data.io_utils import plain_data, write_stream_atomic
from pipeline.runtime.checkpoint import MMSEG_FORMAT, diverged_fix
from pipeline.runtime.guards import check_model_finite

__all__ = ["build_mmseg_model", "for_training", "mmseg_losses", "MMSegLogits", "save_mmseg_model",
           "load_mmseg_model", "mmseg_from_payload"]


def build_mmseg_model(model_cfg: dict, num_classes: int | None = None, init_weights: bool = True):
    """Build an mmseg segmentor from a config dict (mmseg scope). ``num_classes`` overrides the
    ``num_classes`` of ``decode_head`` / ``auxiliary_head`` (dicts or lists of dicts)."""
    import mmseg.models  # noqa: F401  (registers mmseg's models)

    cfg = copy.deepcopy(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg))
    if num_classes is not None:
        for key in ("decode_head", "auxiliary_head"):
            heads = cfg.get(key)
            for h in (heads if isinstance(heads, list) else [heads] if heads else []):
                h["num_classes"] = int(num_classes)
    with DefaultScope.overwrite_default_scope("mmseg"):
        model = MODELS.build(cfg)
        if init_weights:
            model.init_weights()
    return model


def for_training(model, distributed: bool):
    """The model as the training loop should see it: SyncBN (mmseg's default) reverted to
    BatchNorm unless training is distributed on CUDA (SyncBN needs both)."""
    if distributed and torch.cuda.is_available():
        return model
    return revert_sync_batchnorm(model)


def mmseg_losses(model, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """The segmentor's own training losses (decode / auxiliary heads, e.g. cross-entropy with 255
    ignored) on normalised ``images`` (B,3,H,W) and label maps ``labels`` (B,H,W)."""
    H, W = images.shape[-2:]
    samples = []
    for lab in labels:
        s = SegDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        s.gt_sem_seg = PixelData(data=lab[None].long())
        samples.append(s)
    return model.loss(images, samples)


class MMSegLogits(nn.Module):
    """``forward(x) -> logits`` of an mmseg segmentor (its decode head, ``mode="tensor"``) on
    normalised images, as :mod:`pipeline.inference` expects, resized to the input size the way
    mmseg trains them (bilinear, the decode head's ``align_corners``): ``output_stride = 1``
    tells :mod:`pipeline.inference` the map is already on the input's pixels."""
    output_stride = 1

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x, mode="tensor")
        head = getattr(self.model, "decode_head", None)
        return resize(logits, size=x.shape[2:], mode="bilinear",
                      align_corners=bool(getattr(head, "align_corners", False)))


def save_mmseg_model(path, model, model_cfg: dict, num_classes: int, classes) -> None:
    """``{"format": "wsss-mmseg-model/1", "model_cfg", "num_classes", "classes", "state_dict"}``."""
    path = Path(path)
    payload = {"format": MMSEG_FORMAT, "kind": "mmseg", "model_cfg": plain_data(model_cfg),
               "num_classes": int(num_classes), "classes": list(classes),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    check_model_finite(payload["state_dict"], f"the trained model ({path})", diverged_fix("retrain"))
    write_stream_atomic(path, lambda fh: torch.save(payload, fh))      # a full disk: OSError


def load_mmseg_model(path, map_location="cpu"):
    """Rebuild a :func:`save_mmseg_model` file for inference (SyncBN → BN); returns
    ``(MMSegLogits(model), meta)``."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != MMSEG_FORMAT:
        raise ValueError(f"{path}: not a {MMSEG_FORMAT} model file")
    return mmseg_from_payload(payload)


def mmseg_from_payload(payload: dict):
    """:func:`load_mmseg_model` of an already loaded file's dict."""
    model = build_mmseg_model(payload["model_cfg"], payload["num_classes"], init_weights=False)
    model.load_state_dict(payload["state_dict"])
    model = revert_sync_batchnorm(model)          # inference without a process group
    return MMSegLogits(model), {k: v for k, v in payload.items() if k != "state_dict"}
