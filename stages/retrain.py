"""Stage `retrain` (optional second DSRG round, docs/ALGORITHMS.md §5.7): pseudo-labels → mmseg.

1. The trained segmenter (``WORK_DIR/segmenter/model.pth``) predicts every image of
   ``retrain.pseudo.split`` (trainaug) with the inference settings of ``retrain.pseudo`` (DSRG's
   ``test-ms`` protocol: squares 241 / 321 / 401, scores summed, dense CRF;
   :func:`pipeline.inference.iter_segmentation`) → ``pseudo/<id>.png``
   (their quality against the GT masks is scored when those exist). Existing files are kept on
   resume; under DDP every rank predicts its share.
2. ``retrain.model`` — any mmsegmentation segmentor config dict (default: DeepLabV3+ ResNet-50-D8;
   ``decode_head.num_classes`` / ``auxiliary_head.num_classes`` are set to the dataset's) — is
   trained on the pseudo-labels with its own decode/auxiliary losses (plain cross-entropy, 255
   ignored) through :func:`pipeline.training.train_from_section` (checkpoints, resume, scalars
   log, AMP, DDP).
3. Quick single-scale, no-CRF val mIoU; ``model.pth`` in the ``wsss-mmseg-model/1`` format
   (:func:`pipeline.mm.segmentation.load_mmseg_model` → a logits network for
   :mod:`pipeline.inference` / :func:`pipeline.evaluation.evaluate_segmenter`).

Steps 2-3 need mmsegmentation and a compiled mmcv (``make env-mm``); without them the stage stops
with one line saying so, before any work.
"""
from __future__ import annotations

import torch

from pipeline.data.datasets import SegmentationDataset
from pipeline.data.index import DatasetIndex
from pipeline.evaluation import evaluate_segmenter, score_label_dir
from pipeline.inference import InferenceSettings, crf_from_cfg, iter_segmentation, open_crf_pool
from pipeline.io_utils import atomic_file
from pipeline.mm import MMSegUnavailable, segmentation_edge
from pipeline.models.deeplab import load_segmenter
from pipeline.stage import StageError
from pipeline.training import train_from_section
from pipeline.voc import write_label_png
from stages.common import main_for

STAGE = "retrain"
UPSTREAM = ("data", "segmenter")


def make_pseudo_labels(ctx, index: DatasetIndex, pcfg) -> int:
    """Write ``ctx.out/pseudo/<id>.png`` for the ids of ``pcfg.split`` that lack one; returns
    how many this rank predicted."""
    out = ctx.out / "pseudo"
    out.mkdir(parents=True, exist_ok=True)
    ids = index.ids(pcfg.get("split", "trainaug"))
    todo = [i for i in ids[ctx.rank::ctx.world_size] if not (out / f"{i}.png").is_file()]
    if todo:
        net, _ = load_segmenter(ctx.upstream_dir("segmenter") / "model.pth")
        net = net.to(ctx.device).eval()
        settings = InferenceSettings.from_cfg(pcfg)
        crf, workers = crf_from_cfg(pcfg.get("crf"))
        pool = open_crf_pool(crf, workers)
        ctx.log(f"pseudo-labels of {len(todo)} images (test protocol {settings.describe()}, "
                f"CRF {crf})")
        try:
            for seg in iter_segmentation(net, ((i, index.read_image(i)) for i in todo), settings,
                                         ctx.device, crf=crf, pool=pool):
                with atomic_file(out / f"{seg.key}.png") as tmp:
                    write_label_png(tmp, seg.final)
        finally:
            if pool is not None:
                pool.shutdown()
    if ctx.world_size > 1:
        import torch.distributed as dist
        dist.barrier()
    return len(todo)


def mm_edge():
    """:mod:`pipeline.mm.segmentation`, or a one-line :class:`StageError` naming ``make env-mm``."""
    try:
        return segmentation_edge("the retrain stage (an mmsegmentation model)")
    except MMSegUnavailable as exc:
        raise StageError(str(exc)) from None


def run(ctx) -> dict:
    mm = mm_edge()
    sec, tr = ctx.section, ctx.section["train"]
    index = DatasetIndex.load(ctx.upstream_dir("data"))
    pcfg = sec.get("pseudo", {})
    made = make_pseudo_labels(ctx, index, pcfg)
    split = pcfg.get("split", "trainaug")
    counts = {"pseudo_labels": len(index.ids(split)), "pseudo_predicted_here": made}
    metrics = {"pseudo_protocol": InferenceSettings.from_cfg(pcfg).describe()}
    if ctx.rank == 0:
        q = score_label_dir(index, split, ctx.out / "pseudo")
        if q["images"]:
            metrics["pseudo_mIoU"] = q["mIoU"]
            ctx.log(f"pseudo-labels vs GT on {q['images']} {split} images: mIoU "
                    f"{100 * q['mIoU']:.2f}")

    seed = int(ctx.cfg.experiment.get("seed", 0))
    torch.manual_seed(seed)
    model_cfg = sec["model"]
    model = mm.for_training(mm.build_mmseg_model(model_cfg, index.num_classes), ctx.world_size > 1)
    ctx.log(f"mmseg {model_cfg['type']} ({model_cfg.get('decode_head', {}).get('type')}), "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    train_ds = SegmentationDataset(index, tr.get("split", split), ctx.out / "pseudo", tr["crop"],
                                   train=True, scale_range=tuple(tr.get("scale_range", (1.0, 1.0))),
                                   resize=tr.get("resize"))

    def loss_fn(net, batch):
        return mm.mmseg_losses(net, batch["image"], batch["label"])

    model = train_from_section(model, loss_fn, train_ds, tr, work_dir=ctx.out / "train", seed=seed,
                               world_size=ctx.world_size, device=ctx.device, log=ctx.log)
    val = sec.get("val", {})
    res = evaluate_segmenter(mm.MMSegLogits(model).eval(), index, val.get("split", "val"),
                             dict(size=val.get("size", 321), scales=(1.0,), flip=False,
                                  batch_size=int(val.get("batch_size", 10)), crf=dict(enabled=False)),
                             ctx.device, rank=ctx.rank, world_size=ctx.world_size)
    counts.update(iterations=int(tr["max_iters"]), train_images=len(train_ds), val_scored=res["scored"])
    if ctx.rank == 0:
        metrics.update(val_mIoU=res["mIoU"], val_IoU=dict(zip(index.classes, res["no_crf"]["IoU"])))
        miou = res["mIoU"]
        ctx.log(f"quick val mIoU (single scale, no CRF) = "
                f"{'n/a' if miou is None else f'{100 * miou:.2f}'}")
        mm.save_mmseg_model(ctx.out / "model.pth", model, model_cfg, index.num_classes, index.classes)
    return {"counts": counts, "metrics": metrics}


if __name__ == "__main__":
    main_for(__name__)
