"""Stage `segmenter`: train DeepLab v2 (ASPP-L, VGG-16) from the seeds with DSRG.

Reads the dataset index and the seed label maps (``WORK_DIR/seeds/labels/<id>.png``), trains
with :func:`pipeline.runtime.training.train_from_section` (checkpoints + auto-resume in
``train/``, scalars log, AMP on CUDA, DDP under ``make segmenter GPUS=N``), scores a
quick single-scale, no-CRF val mIoU (the full protocol is the ``eval`` stage) and writes
``model.pth`` (docs/DESIGN.md; :func:`pipeline.runtime.checkpoint.load_segmenter`).

Options: ``segmenter.loss`` = ``"dsrg"`` (:func:`pipeline.dsrg.dsrg_losses`: growing on the
output grid, balanced seeding loss, CRF boundary loss; ``crf.backend="pydensecrf"``: the CRF
runs in a process pool of ``crf.workers`` processes created once per training run,
``"torch"``: exact mean-field on the training device, no pool) or ``"ce"`` (cross-entropy, 255
ignored, on upsampled logits or at the output grid: ``ce.resolution``);
``segmenter.train.labels`` = ``"seeds"`` or ``"gt"`` (ground-truth masks: with ``loss="ce"``
the fully supervised upper bound). :func:`train_segmenter` and :func:`evaluate_and_save` are
reusable by other stages (e.g. an ``upper_bound`` stage with ``label_dir=None``).

Collapse checks: the training log carries the DSRG diagnostics
(:mod:`pipeline.dsrg_diagnostics`); the quick val adds the fraction of val pixels predicted
foreground (``val_pred_fg``, GT: ``val_gt_fg``); with ``val.score_train`` (default on) the
segmenter's predictions (single scale, no CRF) are scored on the images the seeds stage scored
its argmax pseudo-masks on, against their GT masks (``train_mIoU``, next to that stage's
``pseudo_mIoU``), with a warning when the segmenter scores lower than the pseudo-masks it was
meant to improve on.
"""
from __future__ import annotations

import torch

from pipeline.crf_pool import make_crf_pool
from pipeline.data.datasets import SegmentationDataset
from pipeline.data.files import label_pixel_counts
from pipeline.data.index import DatasetIndex
from pipeline.dsrg import segmenter_loss_fn
from pipeline.losses import class_balance_weights
from pipeline.dsrg_diagnostics import confusion_fg_fractions
from pipeline.inference import InferenceSettings
from pipeline.models.deeplab import build_segmenter
from pipeline.runtime.checkpoint import save_model
from pipeline.runtime.evaluation import evaluate_segmenter
from pipeline.runtime.guards import training_guard
from pipeline.runtime.stage import StageError
from pipeline.runtime.training import train_from_section
from pipeline.runtime.trunk_cache import cached_trunk_dataset
from pipeline.settings.classifier import LITE_CHOICES
from stages.common import main_for, resolve_path

STAGE = "segmenter"
UPSTREAM = ("data", "seeds")


def model_config(section) -> dict:
    """The model section as a dict (what ``model.pth`` records) with ``pretrained`` resolved to
    an absolute path (or torchvision/package/None)."""
    cfg = section.model.to_dict()
    if cfg["pretrained"] not in (None, "torchvision", "package"):
        cfg["pretrained"] = resolve_path(cfg["pretrained"])
    return cfg


def dsrg_setup(ctx, section) -> tuple:
    """``(DSRGConfig, CRF process pool or None)`` of a DSRG training run, logged; the pool
    (``crf.workers`` processes, pydensecrf backend only) is the caller's to shut down."""
    dsrg_cfg, pool = section.dsrg_config(), None
    workers = section.crf.workers
    if workers > 0 and dsrg_cfg.crf_backend == "pydensecrf":
        pool = make_crf_pool(workers, section.crf.start_method)
    where = (f"torch on {ctx.device}" if dsrg_cfg.crf_backend == "torch" else
             f"pydensecrf in {f'{workers} worker processes' if pool else 'process'}")
    ctx.log(f"DSRG: grow on {dsrg_cfg.grow_on}, thresholds {dsrg_cfg.fg_threshold}/"
            f"{dsrg_cfg.bg_threshold}, CRF {dsrg_cfg.crf} ({where})")
    return dsrg_cfg, pool


def train_segmenter(ctx, index: DatasetIndex, label_dir, section, stage: str = STAGE,
                    net=None) -> torch.nn.Module:
    """Train the segmenter of ``section`` on ``label_dir`` (None = GT masks) into ``ctx.out/train``.

    Resumes from the checkpoints there; returns the trained network (every rank under DDP).
    ``stage``: the config section whose keys the training guard's messages name. ``net``: the
    network to start from (e.g. the first round's, for the second round); None builds
    ``section.model``.
    """
    tr, loss = section.train, section.loss
    seed = ctx.cfg.experiment.seed
    torch.manual_seed(seed)
    model_cfg = model_config(section)
    if net is None:
        net = build_segmenter(model_cfg, index.num_classes)
    cached = tr.cache_trunk
    if cached and not getattr(net, "trunk", None):
        raise StageError(f"{stage}.train.cache_trunk=True needs a frozen trunk (segmenter.model."
                         f"backbone type {LITE_CHOICES}, frozen_blocks >= 1): set it to False")
    if cached:
        train_ds = cached_trunk_dataset(SegmentationDataset(index, tr.split, label_dir, tr.crop, train=False),
                                        net, model_cfg, ctx.work_dir, ctx.device, ctx.log)
    else:
        train_ds = SegmentationDataset(index, tr.split, label_dir, tr.crop, train=True,
                                       scale_range=tr.scale_range, resize=tr.resize)
    grid = net.output_size(tr.crop)
    ctx.log(f"DeepLab v2 ASPP ({(model_cfg.get('backbone') or {}).get('type', 'vgg16')}), {index.num_classes} classes (bg incl.), "
            f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters, pretrained="
            f"{model_cfg['pretrained']}; loss={loss}; {len(train_ds)} training images, labels "
            f"from {label_dir or 'the ground-truth masks'}; crop {tr.crop} -> output {grid}x{grid}")
    if net.init_report is not None:
        ctx.log(net.init_report.describe())
    weights = class_weights(ctx, train_ds, section.class_balance, index.num_classes)
    dsrg_cfg, pool = dsrg_setup(ctx, section) if loss == "dsrg" else (None, None)
    try:
        return train_from_section(net, segmenter_loss_fn(loss, dsrg_cfg, pool, section.ce.resolution, cached,
                                                          weights),
                                  train_ds, tr,
                                  work_dir=ctx.out / "train", seed=seed, world_size=ctx.world_size,
                                  device=ctx.device, log=ctx.log,
                                  hooks=[training_guard(tr, stage)])
    finally:
        if pool is not None:
            pool.shutdown()


def class_weights(ctx, train_ds, balance, num_classes: int) -> torch.Tensor | None:
    """The loss's per-class weights (``segmenter.class_balance``) from the pixel counts of the
    training label maps, logged; None when ``power`` is 0."""
    if balance.power == 0:
        return None
    counts = label_pixel_counts(train_ds.label_paths(), num_classes)
    weights = class_balance_weights(counts, balance.power, balance.max_weight)
    ctx.log("class weights (power %g, max %g): %s" % (balance.power, balance.max_weight,
            " ".join(f"{w:.2f}" for w in weights.tolist())))
    return weights


def quick_val_settings(val) -> InferenceSettings:
    """Inference of the quick scores (``val``: a section with ``size`` and ``batch_size``):
    ``val.size``, single scale, no flip, float32 (and no CRF)."""
    return InferenceSettings.from_cfg(dict(size=val.size, scales=(1.0,), flip=False,
                                           batch_size=val.batch_size))


def evaluate_and_save(ctx, net, index: DatasetIndex, section, kind: str = "segmenter") -> dict:
    """Quick val mIoU (single scale, no flip, no CRF) and ``model.pth``; returns counts/metrics."""
    split = section.val.split
    res = evaluate_segmenter(net.eval(), index, split, quick_val_settings(section.val), ctx.device,
                             rank=ctx.rank, world_size=ctx.world_size)
    s = res["no_crf"]
    fg = confusion_fg_fractions(res["confusion"]["no_crf"])
    metrics = {"val_mIoU": res["mIoU"], "val_aAcc": s["aAcc"],
               "val_IoU": dict(zip(index.classes, s["IoU"])), "val_split": split,
               "val_pred_fg": fg["pred_fg"], "val_gt_fg": fg["gt_fg"]}
    counts = {"val_images": res["images"], "val_scored": res["scored"]}
    if ctx.rank == 0:
        miou = res["mIoU"]
        ctx.log(f"quick {split} mIoU (single scale, no CRF) = "
                f"{'n/a' if miou is None else f'{100 * miou:.2f}'} on {res['scored']} images; "
                f"predicted foreground {_pct(fg['pred_fg'])} % of pixels (GT {_pct(fg['gt_fg'])} %)")
        save_model(ctx.out / "model.pth", net, kind, model_config(section), index.num_classes,
                   index.classes, section=STAGE)
    return {"counts": counts, "metrics": metrics}


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def pseudo_mask_ids(ctx, index: DatasetIndex, split: str) -> list[str]:
    """Ids with a GT mask among the seeds stage's pseudo-masks (``seeds/pseudo/<id>.png``, the
    images its pseudo-mask mIoU was scored on); the ``split`` ids with a mask when there are none."""
    pseudo = ctx.upstream_dir("seeds") / "pseudo"
    ids = sorted(p.stem for p in pseudo.glob("*.png")) if pseudo.is_dir() else []
    return [i for i in (ids or index.ids(split)) if index.mask_path(i) is not None]


def score_on_train(ctx, net, index: DatasetIndex, section) -> dict:
    """Score the segmenter (single scale, no CRF) on the pseudo-masks' images against their GT
    masks; compare with the seeds stage's pseudo-mask mIoU and warn when it is lower.

    Returns metrics ``train_mIoU``, ``train_pred_fg``, ``train_gt_fg``, ``train_scored``,
    ``pseudo_mIoU`` (None when the seeds stage scored none) and ``train_below_pseudo``.
    """
    ids = pseudo_mask_ids(ctx, index, section.train.split)
    res = evaluate_segmenter(net.eval(), index, "train", quick_val_settings(section.val), ctx.device,
                             rank=ctx.rank, world_size=ctx.world_size, ids=ids)
    seeds_man = ctx.upstream_manifests.get("seeds") or {}
    pseudo = ((seeds_man.get("metrics") or {}).get("pseudo") or {}).get("mIoU")
    fg = confusion_fg_fractions(res["confusion"]["no_crf"])
    miou = res["no_crf"]["mIoU"]
    below = None if miou is None or pseudo is None else bool(miou < pseudo)
    if ctx.rank == 0:
        ctx.log(f"segmenter on the {res['scored']} pseudo-mask images (single scale, no CRF): mIoU "
                f"{_pct(miou)} %, predicted foreground {_pct(fg['pred_fg'])} % (GT {_pct(fg['gt_fg'])} %); "
                f"argmax pseudo-masks {_pct(pseudo)} %")
        if below:
            ctx.log(f"WARNING: the segmenter scores below its own pseudo-masks on the training images "
                    f"({_pct(miou)} < {_pct(pseudo)} % mIoU): training from the seeds lost "
                    f"information (see the cov_*/pred_fg curves of the training log)")
    return {"train_mIoU": miou, "train_pred_fg": fg["pred_fg"], "train_gt_fg": fg["gt_fg"],
            "train_scored": res["scored"], "pseudo_mIoU": pseudo, "train_below_pseudo": below}


def run(ctx) -> dict:
    sec, tr = ctx.section, ctx.section.train
    labels = tr.labels
    index = DatasetIndex.load(ctx.upstream_dir("data"))
    label_dir = ctx.upstream_dir("seeds") / "labels" if labels == "seeds" else None
    net = train_segmenter(ctx, index, label_dir, sec)
    result = evaluate_and_save(ctx, net, index, sec)
    result["counts"].update(train_images=len(index.ids(tr.split)), iterations=tr.max_iters)
    result["metrics"].update(loss=sec.loss, labels=labels)
    if sec.val.score_train:
        result["metrics"].update(score_on_train(ctx, net, index, sec))
    return result


if __name__ == "__main__":
    main_for(__name__)
