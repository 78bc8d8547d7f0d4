"""Scoring of segmentations on a split: one confusion matrix per split (docs/ALGORITHMS.md §9.2).

* :func:`evaluate_segmenter` — run a segmentation network over a split
  (:mod:`pipeline.inference`: multi-scale + flip, optional dense CRF) and score it with and
  without the CRF; optionally writes colour prediction PNGs and overlays. Used by the ``eval``
  stage and meant for any other network (e.g. an ``upper_bound`` stage, the report).
* :func:`score_label_dir` — score any folder of ``<id>.png`` label maps (predictions,
  pseudo-masks, seeds) with the same evaluator, so the numbers are comparable.

Both accumulate ONE :class:`pipeline.metrics.ConfusionMatrix` over the split (GT 255 ignored):
IoU per class, mIoU (over classes present in GT or prediction), pixel accuracy (aAcc), mean
class accuracy (mAcc), frequency-weighted IoU (fwIoU). Summaries are JSON-ready: the
``ConfusionMatrix.summary`` keys with NaN (undefined class) written as None;
``pipeline.metrics.format_table`` prints them. The GT of an id is its mask in the dataset's
``seg_dirs``, else its held-out mask (synthetic test split), else it is not scored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.crf import CRFParams
from pipeline.data.files import read_label_png, write_label_png
from pipeline.data.io_utils import json_safe
from pipeline.inference import InferenceSettings, iter_segmentation, open_crf_pool
from pipeline.metrics import ConfusionMatrix
from pipeline.voc import IGNORE_INDEX

__all__ = ["read_gt", "summary_json", "evaluate_segmenter", "score_label_dir", "write_overlay",
           "UNLABELLED_MODES"]

UNLABELLED_MODES = ("background", "ignore", "error")


def read_gt(index, img_id: str) -> np.ndarray | None:
    """GT mask of ``img_id`` (``seg_dirs`` first, then the held-out masks), or None."""
    gt = index.read_mask(img_id)
    if gt is None:
        gt = index.read_mask(img_id, heldout=True)
    return gt


def summary_json(summary: dict) -> dict:
    """A ``ConfusionMatrix.summary`` with NaN replaced by None (valid JSON)."""
    return json_safe(summary)


def _all_reduce_ints(values: list[int], world_size: int) -> list[int]:
    if world_size <= 1:
        return [int(v) for v in values]
    import torch
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return [int(v) for v in values]
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.int64, device=dev)
    dist.all_reduce(t)
    return [int(v) for v in t.cpu().tolist()]


def write_overlay(path, image, pred, pred_crf=None, gt=None, alpha: float = 0.6) -> None:
    """One PNG row: image | prediction | prediction+CRF | GT (label maps blended on the image)."""
    from pipeline.data.files import save_rgb
    from pipeline.visualize import blend, label_rgb, panel_row

    tiles, names = [image], ["image"]
    for lab, name in ((pred, "prediction"), (pred_crf, "prediction+CRF"), (gt, "GT")):
        if lab is not None:
            tiles.append(blend(image, label_rgb(lab), alpha))
            names.append(name)
    save_rgb(path, panel_row(tiles, names))


def evaluate_segmenter(net, index, split: str, settings: InferenceSettings, device="cpu", *,
                       crf: CRFParams | None = None, workers: int = 0, chunk: int | None = None,
                       out_dir=None, n_overlays: int = 0, save_predictions: bool = True,
                       save_no_crf: bool = False, rank: int = 0, world_size: int = 1,
                       log=None, ids=None, parts: dict | None = None) -> dict:
    """Predict every id of ``split`` and score it against the GT, with and without CRF.

    ``settings``: the network's inference (:class:`pipeline.inference.InferenceSettings`);
    ``crf``: the dense CRF's parameters (None = no CRF), run in a pool of ``workers`` processes
    when ``workers >= 2``; ``chunk``: images streamed per chunk (None = the default of
    :func:`pipeline.inference.iter_segmentation`). With ``out_dir``: ``pred/<id>.png``
    (palette PNG of the final prediction: with CRF when enabled) when ``save_predictions``,
    ``pred_nocrf/<id>.png`` when ``save_no_crf`` and the CRF is on, ``overlays/<id>.png`` for the
    first ``n_overlays`` ids of the split.
    Under DDP (``world_size > 1``) rank r handles ids ``r::world_size`` and the confusion matrices
    are summed over ranks (every rank returns the same numbers). ``ids``: score these ids
    (e.g. the images some pseudo-masks were scored on) instead of all of ``split``.
    ``parts``: ``{name: ids}`` (e.g. :func:`pipeline.data.holdout.split_parts`): each part is
    also scored on its own, in the same pass (its own confusion matrices).

    Returns ``{"split", "images", "scored", "missing_gt", "crf_enabled", "protocol" (the test
    protocol that ran, :meth:`~pipeline.inference.InferenceSettings.describe`), "mIoU" (final),
    "no_crf": summary, "crf": summary | None, "confusion": {"no_crf", "crf"}}``, plus
    ``"parts": {name: {"images", "mIoU_no_crf", "mIoU_crf", "no_crf", "crf"}}`` with ``parts``.
    """
    ids = index.ids(split) if ids is None else list(ids)
    mine = ids[rank::world_size] if world_size > 1 else ids
    overlay_ids = set(ids[:n_overlays])
    out = Path(out_dir) if out_dir is not None else None
    save_pred = out is not None and save_predictions
    save_raw = save_pred and crf is not None and save_no_crf
    C, with_crf = index.num_classes, crf is not None
    whole = _Tally(C, with_crf)
    tallies = {name: _Tally(C, with_crf) for name in (parts or {})}
    part_of = {str(i): tallies[name] for name, part_ids in (parts or {}).items() for i in part_ids}
    n_pred = n_missing = 0
    items = ((i, index.read_image(i)) for i in mine)
    pool = open_crf_pool(crf, workers)
    try:
        for seg in iter_segmentation(net, items, settings, device, crf=crf, pool=pool,
                                     chunk=chunk):
            n_pred += 1
            gt = read_gt(index, seg.key)
            if gt is None:
                n_missing += 1
            else:
                if gt.shape != seg.label.shape:
                    raise ValueError(f"{seg.key}: GT mask {gt.shape} and image {seg.label.shape} differ in size")
                whole.update(seg, gt)
                if str(seg.key) in part_of:
                    part_of[str(seg.key)].update(seg, gt)
            if save_pred:
                _write(out / "pred" / f"{seg.key}.png", seg.final)
            if save_raw:
                _write(out / "pred_nocrf" / f"{seg.key}.png", seg.label)
            if out is not None and seg.key in overlay_ids:
                write_overlay(out / "overlays" / f"{seg.key}.png", seg.image, seg.label,
                              seg.label_crf, gt)
            if log is not None and n_pred % 200 == 0:
                log(f"{split}: {n_pred}/{len(mine)} images")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if world_size > 1:
        every = [whole, *tallies.values()]
        for t in every:
            t.cm.reduce_()
            if t.cm_crf is not None:
                t.cm_crf.reduce_()
        counts = _all_reduce_ints([n_pred, n_missing] + [t.n for t in every], world_size)
        n_pred, n_missing = counts[:2]
        for t, n in zip(every, counts[2:]):
            t.n = n
    res = {"split": split, "images": n_pred, "scored": whole.n, "missing_gt": n_missing,
           "crf_enabled": with_crf, "protocol": settings.describe(),
           **whole.scores(index.classes),
           "confusion": {"no_crf": whole.cm.mat.tolist(),
                         "crf": whole.cm_crf.mat.tolist() if with_crf else None}}
    if parts is not None:
        res["parts"] = {name: {"images": t.n, **t.scores(index.classes)}
                        for name, t in tallies.items()}
    return res


class _Tally:
    """The confusion matrices (without / with CRF) and the image count of one set of ids."""

    def __init__(self, num_classes: int, with_crf: bool):
        self.cm = ConfusionMatrix(num_classes)
        self.cm_crf = ConfusionMatrix(num_classes) if with_crf else None
        self.n = 0

    def update(self, seg, gt) -> None:
        self.cm.update(seg.label, gt)
        if self.cm_crf is not None:
            self.cm_crf.update(seg.label_crf, gt)
        self.n += 1

    def scores(self, classes) -> dict:
        """``mIoU`` (final: with CRF when there is one), ``mIoU_no_crf``, ``mIoU_crf`` and both
        summaries."""
        plain = summary_json(self.cm.summary(classes))
        crf = summary_json(self.cm_crf.summary(classes)) if self.cm_crf is not None else None
        return {"mIoU": (crf or plain)["mIoU"], "mIoU_no_crf": plain["mIoU"],
                "mIoU_crf": crf["mIoU"] if crf is not None else None,
                "no_crf": plain, "crf": crf}


def _write(path: Path, label) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_png(path, label)


def score_label_dir(index, split: str, label_dir, unlabelled: str = "background",
                    missing: str = "error", ids=None) -> dict:
    """Score ``label_dir/<id>.png`` for every id of ``split`` (or ``ids``) with one confusion matrix.

    Pixels labelled 255 in a map (unlabelled seeds) are handled by ``unlabelled``:
    ``'background'`` (default) counts them as background (class 0), so every GT pixel is scored
    and the mIoU is comparable with dense predictions; ``'ignore'`` drops them from the matrix
    (IoU of the labelled pixels only, as ``SeedQuality``); ``'error'`` refuses them.
    ``missing``: ``'error'`` raises FileNotFoundError naming the missing files, ``'skip'`` counts
    them. Ids without GT are skipped (counted in ``missing_gt``).

    Returns the JSON-ready summary plus ``split``, ``label_dir``, ``images`` (scored),
    ``missing_files``, ``missing_gt``, ``unlabelled`` (mode) and ``unlabelled_fraction``
    (share of valid GT pixels labelled 255 in the maps).
    """
    if unlabelled not in UNLABELLED_MODES:
        raise ValueError(f"unlabelled must be one of {UNLABELLED_MODES}, got {unlabelled!r}")
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    label_dir = Path(label_dir)
    ids = list(ids) if ids is not None else index.ids(split)
    absent = [i for i in ids if not (label_dir / f"{i}.png").is_file()]
    if absent and missing == "error":
        raise FileNotFoundError(f"{label_dir}: {len(absent)} label map(s) missing, e.g. "
                                + ", ".join(f"{i}.png" for i in absent[:10]))
    absent_set = set(absent)
    cm = ConfusionMatrix(index.num_classes)
    n = n_gt_missing = n_valid = n_unl = 0
    for i in ids:
        if i in absent_set:
            continue
        gt = read_gt(index, i)
        if gt is None:
            n_gt_missing += 1
            continue
        f = label_dir / f"{i}.png"
        lab = read_label_png(f)
        if lab.shape != gt.shape:
            raise ValueError(f"{f}: size {lab.shape} differs from the GT mask {gt.shape}")
        valid = gt != IGNORE_INDEX
        unl = lab == IGNORE_INDEX
        n_valid += int(valid.sum())
        n_unl += int((unl & valid).sum())
        if unl.any():
            if unlabelled == "error":
                raise ValueError(f"{f}: contains 255 (unlabelled) pixels; use unlabelled='background' or 'ignore'")
            if unlabelled == "ignore":
                gt = np.where(unl, IGNORE_INDEX, gt)
            lab = np.where(unl, 0, lab)          # 'ignore': these pixels no longer count
        try:
            cm.update(lab, gt)
        except ValueError as exc:
            raise ValueError(f"{f}: {exc}") from None
        n += 1
    res = summary_json(cm.summary(index.classes))
    res.update(split=split, label_dir=str(label_dir), images=n, missing_files=len(absent),
               missing_gt=n_gt_missing, unlabelled=unlabelled,
               unlabelled_fraction=(n_unl / n_valid) if n_valid else None)
    return res
