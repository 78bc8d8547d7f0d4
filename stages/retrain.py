"""Stage `retrain`: DSRG's second round (docs/ALGORITHMS.md §5.7): pseudo-labels → a segmenter.

1. The trained segmenter (``WORK_DIR/segmenter/model.pth``) predicts every image of
   ``retrain.pseudo.split`` (trainaug) with the inference settings of ``retrain.pseudo`` (DSRG's
   ``test-ms`` protocol: squares 241 / 321 / 401, scores summed, dense CRF;
   :func:`pipeline.inference.iter_segmentation`) → ``pseudo/<id>.png``
   (their quality against the GT masks is scored when those exist). Existing files are kept on
   resume; under DDP every rank predicts its share.
2. A segmenter is trained on the pseudo-labels with cross-entropy (255 ignored), by
   ``retrain.model.type``:

   * ``"DeepLabV2VGG16"`` (DSRG's ``train-f.prototxt`` / ``run.sh``): the first round's
     DeepLab-ASPP VGG-16, started from its weights (``model.init="segmenter"``) or from the
     segmenter's own ``pretrained`` start (``"pretrained"``), trained by the segmenter stage's
     code (:func:`stages.segmenter.train_segmenter`, ``loss="ce"``, ``retrain.ce.resolution``)
     with the ``retrain.train`` schedule; ``model.pth`` in the segmenter's format;
   * any other type: an mmsegmentation segmentor config dict (``decode_head.num_classes`` /
     ``auxiliary_head.num_classes`` set to the dataset's), trained with its own decode /
     auxiliary losses; needs mmsegmentation and a compiled mmcv (``make env-mm``; without them
     the stage stops with one line saying so, before any work) and weights from local files
     (:func:`local_weights`); ``model.pth`` in the ``wsss-mmseg-model/1`` format.
3. Quick single-scale, no-CRF val mIoU. ``make eval OPTS="eval.model=retrain"`` scores the
   model with the full test protocol.
"""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.data.datasets import ClassificationDataset
from pipeline.data.files import write_label_png
from pipeline.data.index import DatasetIndex
from pipeline.data.io_utils import atomic_file
from pipeline.inference import iter_segmentation, open_crf_pool
from pipeline.mm import MMSegUnavailable, segmentation_edge
from pipeline.models.deeplab import build_segmenter
from pipeline.runtime.checkpoint import load_segmenter
from pipeline.runtime.evaluation import score_label_dir
from pipeline.runtime.guards import training_guard
from pipeline.runtime.stage import StageError
from pipeline.runtime.trunk_cache import attach_trunk_lookup
from pipeline.settings.section import with_later_keys
from pipeline.settings.segmenter import OWN_MODEL, SegmenterModel
from stages.common import main_for, resolve_path

STAGE = "retrain"
UPSTREAM = ("data", "segmenter")
# what mmengine would fetch from the internet at run time
_REMOTE = ("open-mmlab://", "openmmlab://", "mmcls://", "torchvision://", "http://", "https://")


def make_pseudo_labels(ctx, index: DatasetIndex, pcfg) -> int:
    """Write ``ctx.out/pseudo/<id>.png`` for the ids of ``pcfg.split`` that lack one; returns
    how many this rank predicted."""
    out = ctx.out / "pseudo"
    out.mkdir(parents=True, exist_ok=True)
    ids = index.ids(pcfg.split)
    todo = [i for i in ids[ctx.rank::ctx.world_size] if not (out / f"{i}.png").is_file()]
    if todo:
        net, meta = load_segmenter(ctx.upstream_dir("segmenter") / "model.pth")
        net = net.to(ctx.device).eval()
        use_trunk_cache(ctx, net, meta["model_cfg"], index)
        inf = pcfg.inference()
        settings, crf = inf.settings, inf.crf
        pool = open_crf_pool(crf, inf.workers)
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


def use_trunk_cache(ctx, net, model_cfg: dict, index: DatasetIndex):
    """When the first round trained on a cached frozen trunk (``segmenter.train.cache_trunk``),
    let ``net`` read those cached features for identical inputs (the segmenter's training images
    at its crop size: pipeline/runtime/trunk_cache.py)."""
    tr = ctx.cfg.segmenter.train
    if tr.cache_trunk:
        attach_trunk_lookup(net, model_cfg, ClassificationDataset(index, tr.split, tr.crop, train=False),
                            ctx.work_dir, ctx.log)


def local_weights(model_cfg, key: str = "retrain.model"):
    """A copy of an mmseg model dict whose ``pretrained`` / ``init_cfg.checkpoint`` paths are
    resolved against the repository root. Each must be an existing local file: nothing is
    downloaded at run time. Raises :class:`StageError` naming the key, the file and the fix."""
    if isinstance(model_cfg, (list, tuple)):
        return type(model_cfg)(local_weights(v, f"{key}[{i}]") for i, v in enumerate(model_cfg))
    if not hasattr(model_cfg, "items"):
        return model_cfg
    out = {}
    for name, value in model_cfg.items():
        where = f"{key}.{name}"
        if name in ("pretrained", "checkpoint") and isinstance(value, str):
            if value.startswith(_REMOTE):
                raise StageError(f"{where}={value!r} would be downloaded at run time: download the "
                                 "file yourself and set the key to its local path (or None)")
            value = resolve_path(value)
            if not Path(value).is_file():
                raise StageError(f"{where}: weight file {value} not found: put the checkpoint there "
                                 "(the config's comment names the file) or set the key to None to "
                                 "start from random weights")
        out[name] = local_weights(value, where)
    return out


def mm_edge(sec):
    """:mod:`pipeline.mm.segmentation`, or a one-line :class:`StageError` naming ``make env-mm``."""
    try:
        return segmentation_edge(f"retrain.model.type={sec.model['type']!r} (an mmsegmentation model)")
    except MMSegUnavailable as exc:
        raise StageError(str(exc)) from None


def second_round_start(ctx, index: DatasetIndex, sec) -> tuple[torch.nn.Module, dict]:
    """``(net, model_cfg)``: the first round's network with its weights (``init="segmenter"``,
    DSRG's ``run.sh``), or the same architecture from the segmenter's ``pretrained`` start."""
    init = sec.model["init"]                     # checked: segmenter | pretrained
    path = ctx.upstream_dir("segmenter") / "model.pth"
    net, meta = load_segmenter(path)
    model_cfg = dict(meta["model_cfg"])
    if int(meta["num_classes"]) != index.num_classes:
        raise StageError(f"{path}: {meta['num_classes']} classes, the dataset {index.num_classes}")
    if init == "pretrained":
        torch.manual_seed(ctx.cfg.experiment.seed)
        net = build_segmenter(model_cfg, index.num_classes)
    ctx.log(f"second round: {OWN_MODEL} started from "
            f"{path if init == 'segmenter' else 'pretrained=' + str(model_cfg.get('pretrained'))}")
    return net, model_cfg


def train_own(ctx, index: DatasetIndex, sec) -> tuple[dict, dict]:
    """DSRG's second round with the project's segmenter code; ``(counts, metrics)``."""
    from stages.segmenter import evaluate_and_save, train_segmenter

    net, model_cfg = second_round_start(ctx, index, sec)
    # the segmenter's training with the second round's model, loss, schedule and quick val
    section = ctx.cfg.section("segmenter", STAGE).replace(
        model=SegmenterModel.from_dict(with_later_keys(model_cfg, "segmenter.model"), "segmenter.model"),
        loss="ce", train=sec.train,
        ce=sec.ce, val=sec.val)
    net = train_segmenter(ctx, index, ctx.out / "pseudo", section, stage=STAGE, net=net)
    res = evaluate_and_save(ctx, net, index, section)
    return res["counts"], res["metrics"]


def train_mmseg(ctx, index: DatasetIndex, sec, mm, model_cfg: dict) -> tuple[dict, dict]:
    """Any mmseg segmentor (``model_cfg``, weight paths resolved; ``mm`` = the
    :mod:`pipeline.mm.segmentation` edge) trained on the pseudo-labels; ``(counts, metrics)``."""
    from pipeline.data.datasets import SegmentationDataset
    from pipeline.runtime.evaluation import evaluate_segmenter
    from pipeline.runtime.training import train_from_section
    from stages.segmenter import quick_val_settings

    tr = sec.train
    seed = ctx.cfg.experiment.seed
    torch.manual_seed(seed)
    model = mm.for_training(mm.build_mmseg_model(model_cfg, index.num_classes), ctx.world_size > 1)
    ctx.log(f"mmseg {model_cfg['type']} ({model_cfg.get('decode_head', {}).get('type')}), "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    train_ds = SegmentationDataset(index, tr.split, ctx.out / "pseudo", tr.crop, train=True,
                                   resize=tr.resize, scale_range=tr.scale_range)

    def loss_fn(net, batch):
        return mm.mmseg_losses(net, batch["image"], batch["label"])

    model = train_from_section(model, loss_fn, train_ds, tr, work_dir=ctx.out / "train", seed=seed,
                               world_size=ctx.world_size, device=ctx.device, log=ctx.log,
                               hooks=[training_guard(tr, STAGE)])
    res = evaluate_segmenter(mm.MMSegLogits(model).eval(), index, sec.val.split,
                             quick_val_settings(sec.val), ctx.device, rank=ctx.rank,
                             world_size=ctx.world_size)
    counts, metrics = {"val_scored": res["scored"]}, {}
    if ctx.rank == 0:
        metrics.update(val_mIoU=res["mIoU"], val_IoU=dict(zip(index.classes, res["no_crf"]["IoU"])))
        miou = res["mIoU"]
        ctx.log(f"quick val mIoU (single scale, no CRF) = "
                f"{'n/a' if miou is None else f'{100 * miou:.2f}'}")
        mm.save_mmseg_model(ctx.out / "model.pth", model, model_cfg, index.num_classes, index.classes)
    return counts, metrics


def run(ctx) -> dict:
    sec, tr = ctx.section, ctx.section.train
    own = sec.model["type"] == OWN_MODEL
    # before any work: a missing weight file or mmseg install is named now
    mm_model, mm = (None, None) if own else (local_weights(sec.model), mm_edge(sec))
    index = DatasetIndex.load(ctx.upstream_dir("data"))
    pcfg = sec.pseudo
    made = make_pseudo_labels(ctx, index, pcfg)
    split = pcfg.split
    counts = {"pseudo_labels": len(index.ids(split)), "pseudo_predicted_here": made}
    metrics = {"pseudo_protocol": pcfg.inference().settings.describe(),
               "model_type": sec.model["type"]}
    if ctx.rank == 0:
        q = score_label_dir(index, split, ctx.out / "pseudo")
        if q["images"]:
            metrics["pseudo_mIoU"] = q["mIoU"]
            ctx.log(f"pseudo-labels vs GT on {q['images']} {split} images: mIoU "
                    f"{100 * q['mIoU']:.2f}")
    c, m = train_own(ctx, index, sec) if own else train_mmseg(ctx, index, sec, mm, mm_model)
    counts.update(c, iterations=tr.max_iters, train_images=len(index.ids(tr.split)))
    metrics.update(m)
    return {"counts": counts, "metrics": metrics}


if __name__ == "__main__":
    main_for(__name__)
