"""Stage `segmenter`: train DeepLab v2 (ASPP-L, VGG-16) from the seeds with DSRG.

Reads the dataset index and the seed label maps (``WORK_DIR/seeds/labels/<id>.png``), trains
with :func:`pipeline.training.train_from_section` (checkpoints + auto-resume in
``train/``, scalars log, AMP on CUDA, DDP under ``make segmenter GPUS=N``), scores a
quick single-scale, no-CRF val mIoU (the full protocol is the ``eval`` stage) and writes
``model.pth`` (docs/DESIGN.md; :func:`pipeline.models.deeplab.load_segmenter`).

Options: ``segmenter.loss`` = ``"dsrg"`` (:func:`pipeline.dsrg.dsrg_losses`: growing on the
output grid, balanced seeding loss, CRF boundary loss; the CRF runs in a process pool of
``crf.workers`` processes created once per training run) or ``"ce"`` (cross-entropy, 255
ignored, on upsampled logits or at the output grid: ``ce.resolution``);
``segmenter.train.labels`` = ``"seeds"`` or ``"gt"`` (ground-truth masks: with ``loss="ce"``
the fully supervised upper bound). :func:`train_segmenter` and :func:`evaluate_and_save` are
reusable by other stages (e.g. an ``upper_bound`` stage with ``label_dir=None``).
"""
from __future__ import annotations

import torch

from pipeline.crf_pool import make_crf_pool
from pipeline.data.datasets import SegmentationDataset
from pipeline.data.index import DatasetIndex
from pipeline.dsrg import DSRGConfig, ce_loss, dsrg_losses
from pipeline.evaluation import evaluate_segmenter
from pipeline.guards import training_guard
from pipeline.inference import InferenceSettings
from pipeline.models.checkpoint import save_model
from pipeline.models.deeplab import build_segmenter
from pipeline.training import train_from_section
from stages.common import main_for, resolve_path

STAGE = "segmenter"
UPSTREAM = ("data", "seeds")


def model_config(section) -> dict:
    """The model section as a dict (what ``model.pth`` records) with ``pretrained`` resolved to
    an absolute path (or torchvision/None)."""
    cfg = section.model.to_dict()
    if cfg["pretrained"] not in (None, "torchvision"):
        cfg["pretrained"] = resolve_path(cfg["pretrained"])
    return cfg


def make_loss_fn(loss: str, dsrg_cfg: DSRGConfig | None = None, crf_pool=None,
                 ce_resolution: str | None = None):
    """``loss_fn(net, batch)`` for :mod:`pipeline.training` (batch: SegmentationDataset items):
    ``"dsrg"`` with ``dsrg_cfg`` or ``"ce"`` at ``ce_resolution``."""
    def loss_fn(net, batch):
        logits = net(batch["image"])
        if loss == "ce":
            return {"loss_ce": ce_loss(logits, batch["label"], ce_resolution)}
        return dsrg_losses(logits, batch["label"], batch["classes"], batch["raw"], dsrg_cfg, crf_pool)
    return loss_fn


def train_segmenter(ctx, index: DatasetIndex, label_dir, section, stage: str = STAGE) -> torch.nn.Module:
    """Train the segmenter of ``section`` on ``label_dir`` (None = GT masks) into ``ctx.out/train``.

    Resumes from the checkpoints there; returns the trained network (every rank under DDP).
    ``stage``: the config section whose keys the training guard's messages name.
    """
    tr, loss = section.train, section.loss
    seed = ctx.cfg.experiment.seed
    torch.manual_seed(seed)
    model_cfg = model_config(section)
    net = build_segmenter(model_cfg, index.num_classes)
    train_ds = SegmentationDataset(index, tr.split, label_dir, tr.crop, train=True,
                                   scale_range=tr.scale_range, resize=tr.resize)
    grid = net.output_size(tr.crop)
    ctx.log(f"DeepLab v2 VGG-16 ASPP, {index.num_classes} classes (bg incl.), "
            f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters, pretrained="
            f"{model_cfg['pretrained']}; loss={loss}; {len(train_ds)} training images, labels "
            f"from {label_dir or 'the ground-truth masks'}; crop {tr.crop} -> output {grid}x{grid}")
    if net.init_report is not None:
        ctx.log(net.init_report.describe())
    pool = None
    dsrg_cfg = None
    if loss == "dsrg":
        dsrg_cfg = section.dsrg_config()
        workers = section.crf.workers
        if workers > 0:
            pool = make_crf_pool(workers, section.crf.start_method)
        ctx.log(f"DSRG: grow on {dsrg_cfg.grow_on}, thresholds {dsrg_cfg.fg_threshold}/"
                f"{dsrg_cfg.bg_threshold}, CRF {dsrg_cfg.crf} in "
                f"{f'{workers} worker processes' if pool else 'process'}")
    try:
        return train_from_section(net, make_loss_fn(loss, dsrg_cfg, pool, section.ce.resolution),
                                  train_ds, tr, work_dir=ctx.out / "train", seed=seed,
                                  world_size=ctx.world_size, device=ctx.device, log=ctx.log,
                                  hooks=[training_guard(tr, stage)])
    finally:
        if pool is not None:
            pool.shutdown()


def evaluate_and_save(ctx, net, index: DatasetIndex, section, kind: str = "segmenter") -> dict:
    """Quick val mIoU (single scale, no flip, no CRF) and ``model.pth``; returns counts/metrics."""
    val = section.val
    split = val.split
    res = evaluate_segmenter(net.eval(), index, split, quick_val_settings(val), ctx.device,
                             rank=ctx.rank, world_size=ctx.world_size)
    s = res["no_crf"]
    metrics = {"val_mIoU": res["mIoU"], "val_aAcc": s["aAcc"],
               "val_IoU": dict(zip(index.classes, s["IoU"])), "val_split": split}
    counts = {"val_images": res["images"], "val_scored": res["scored"]}
    if ctx.rank == 0:
        miou = res["mIoU"]
        ctx.log(f"quick {split} mIoU (single scale, no CRF) = "
                f"{'n/a' if miou is None else f'{100 * miou:.2f}'} on {res['scored']} images")
        save_model(ctx.out / "model.pth", net, kind, model_config(section), index.num_classes,
                   index.classes, section=STAGE)
    return {"counts": counts, "metrics": metrics}


def quick_val_settings(val) -> InferenceSettings:
    """The quick validation's inference: ``val.size``, one scale, no flip, no CRF, float32."""
    return InferenceSettings.from_cfg(dict(size=val.size, scales=(1.0,), flip=False,
                                           batch_size=val.batch_size))


def run(ctx) -> dict:
    sec, tr = ctx.section, ctx.section.train
    labels = tr.labels
    index = DatasetIndex.load(ctx.upstream_dir("data"))
    label_dir = ctx.upstream_dir("seeds") / "labels" if labels == "seeds" else None
    net = train_segmenter(ctx, index, label_dir, sec)
    result = evaluate_and_save(ctx, net, index, sec)
    result["counts"].update(train_images=len(index.ids(tr.split)), iterations=tr.max_iters)
    result["metrics"].update(loss=sec.loss, labels=labels)
    return result


if __name__ == "__main__":
    main_for(__name__)
