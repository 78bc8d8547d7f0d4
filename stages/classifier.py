"""Stage `classifier`: train the multi-label VGG-16 classifier (EP, GAP, GNDRP, BEW, SGE, LIP).

Reads the dataset index, trains with :func:`pipeline.runtime.training.train_from_section` (checkpoints +
auto-resume in ``train/``, scalars log, AMP on CUDA, DDP under ``make classifier GPUS=N``), evaluates mAP and
per-class AP on the validation split, and writes ``model.pth`` (docs/DESIGN.md).
``val.extra_poolings`` also scores the trained weights with other pooling rules, e.g. "EP
inference" (``ep``) on a GAP-trained model.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from pipeline.data.datasets import ClassificationDataset
from pipeline.data.index import DatasetIndex
from pipeline.metrics import average_precision
from pipeline.models.classifier import build_classifier, classifier_loss_fn
from pipeline.runtime.trunk_cache import cached_trunk_dataset
from pipeline.runtime.checkpoint import save_model
from pipeline.runtime.guards import training_guard
from pipeline.runtime.training import train_from_section
from stages.common import main_for, resolve_path

STAGE = "classifier"
UPSTREAM = ("data",)
EP_STALL_CAUSE = ("EP normalisation (classifier.model.pooling.normalize='hw' pools features far smaller "
                  "than GAP's when trained from scratch; 'lambda' is the λ-weighted mean)")


def model_config(section) -> dict:
    """The model section as a dict (what ``model.pth`` records) with ``pretrained`` resolved to
    an absolute path (or torchvision/package/None)."""
    cfg = section.model.to_dict()
    if cfg["pretrained"] not in (None, "torchvision", "package"):
        cfg["pretrained"] = resolve_path(cfg["pretrained"])
    return cfg


@torch.no_grad()
def predict_scores(net, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-level logits and targets over a loader (eval mode)."""
    net.eval().to(device)
    scores, targets = [], []
    for batch in loader:
        scores.append(net(batch["image"].to(device))["logits"].float().cpu())
        targets.append(batch["target"])
    return torch.cat(scores), torch.cat(targets)


def evaluate(net, index, val, device, poolings=()) -> dict:
    """mAP and per-class AP on ``val.split`` (the typed ``classifier.val`` section) for the
    trained pooling and ``poolings``."""
    ds = ClassificationDataset(index, val.split, val.size, train=False)
    loader = DataLoader(ds, batch_size=val.batch_size, shuffle=False, num_workers=val.num_workers)
    trained = net.pooling_name
    results = {}
    for name in (trained, *[p for p in poolings if p != trained]):
        net.set_pooling(name)
        scores, targets = predict_scores(net, loader, device)
        ap = average_precision(scores.numpy(), targets.numpy())
        results[name] = {"mAP": ap["mAP"],
                         "AP": {c: a for c, a in zip(index.fg_classes, ap["AP"])}}
    net.set_pooling(trained)
    return results


def run(ctx) -> dict:
    sec, tr = ctx.section, ctx.section.train
    index = DatasetIndex.load(ctx.upstream_dir("data"))
    seed = ctx.cfg.experiment.seed
    torch.manual_seed(seed)
    model_cfg = model_config(sec)
    net = build_classifier(model_cfg, index.num_classes - 1)
    ctx.log(f"{sec.model.backbone.type} classifier, pooling={net.pooling_name}, {index.num_classes - 1} classes, "
            f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters, pretrained="
            f"{model_cfg['pretrained']}")
    if net.backbone.init_report is not None:
        ctx.log(net.backbone.init_report.describe())
    if tr.cache_trunk:
        train_ds = cached_trunk_dataset(ClassificationDataset(index, tr.split, tr.crop, train=False),
                                        net, model_cfg, ctx.work_dir, ctx.device, ctx.log)
    else:
        train_ds = ClassificationDataset(index, tr.split, tr.crop, train=True,
                                         scale_range=tr.scale_range, resize=tr.resize)
    guard = training_guard(tr, STAGE, causes=(EP_STALL_CAUSE,) if net.pooling_name == "ep" else ())
    net = train_from_section(net, classifier_loss_fn(tr.loss, tr.cache_trunk), train_ds, tr,
                             work_dir=ctx.out / "train", seed=seed, world_size=ctx.world_size,
                             device=ctx.device, log=ctx.log, hooks=[guard])
    counts = {"train_images": len(train_ds), "iterations": tr.max_iters}
    metrics = {}
    if ctx.rank == 0:
        val = sec.val
        res = evaluate(net, index, val, ctx.device, val.extra_poolings)
        trained = net.pooling_name
        metrics = {"val_mAP": res[trained]["mAP"], "val_AP": res[trained]["AP"],
                   "pooling": trained,
                   "other_poolings": {k: v["mAP"] for k, v in res.items() if k != trained}}
        ctx.log(f"val mAP ({trained}) = {100 * res[trained]['mAP']:.2f}" + "".join(
            f"; {k} inference mAP = {100 * v['mAP']:.2f}" for k, v in res.items() if k != trained))
        save_model(ctx.out / "model.pth", net, "classifier", model_cfg, index.num_classes - 1, index.classes,
                   section=STAGE)
        counts["val_images"] = len(index.ids(val.split))
    return {"counts": counts, "metrics": metrics}


if __name__ == "__main__":
    main_for(__name__)
