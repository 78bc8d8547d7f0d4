"""Stage `submit`: test-split predictions in the PASCAL VOC server format + ``results.tgz``.

Writes ``results/VOC2012/Segmentation/<comp>_test_cls/<id>.png`` for every id of
``submit.split`` (single-channel VOC palette PNG, original image size, values
``0..num_classes-1`` — never 255), validates the folder (``pipeline.data.submission``; any problem
fails the stage with every offending file named) and packs ``results.tgz``. Where the test
masks exist (the synthetic dataset keeps them aside), the submission is also scored.

Inference settings: the ``submit`` section's ``protocol``, ``size``, ``scales``, ``sizes``,
``flip``, ``fusion``, ``batch_size``, ``amp``, ``crf`` when not None, else the ``eval``
section's (``crf`` keys are merged); the protocol that ran is in the metrics. The
stage's config digest covers both sections, so it re-runs when ``eval`` changes.
"""
from __future__ import annotations

from pipeline.data.index import DatasetIndex
from pipeline.data.submission import (SUBMISSION_SUBDIR, make_submission_archive,
                                      validate_submission, write_prediction_png)
from pipeline.inference import iter_segmentation, open_crf_pool
from pipeline.runtime.evaluation import score_label_dir
from pipeline.runtime.stage import StageError
from stages.common import main_for
from stages.eval import load_segmenter, log_summary

STAGE = "submit"
UPSTREAM = ("data", "segmenter")
SECTIONS = ("submit", "eval")


def upstream_for(section) -> tuple[str, ...]:
    """The model of ``submit.model``, else ``eval.model``."""
    return ("data", section["submit"].model_stage(section["eval"]))


def _barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.barrier()


def write_predictions(ctx, net, index: DatasetIndex, ids: list[str], inf, result_dir) -> None:
    """This rank's share of ``ids`` predicted with the inference settings ``inf`` (+ CRF pool)
    into ``result_dir`` as server PNGs."""
    mine = ids[ctx.rank::ctx.world_size] if ctx.world_size > 1 else ids
    items = ((i, index.read_image(i)) for i in mine)
    pool = open_crf_pool(inf.crf, inf.workers)
    try:
        for seg in iter_segmentation(net, items, inf.settings, ctx.device, crf=inf.crf, pool=pool,
                                     chunk=inf.chunk):
            write_prediction_png(result_dir / f"{seg.key}.png", seg.final, index.num_classes)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def validate_and_pack(ctx, index: DatasetIndex, ids: list[str], result_dir, comp: str) -> int:
    """Check every file of the submission, then write ``results.tgz``; returns the file count."""
    problems = validate_submission(result_dir, ids, index.root / "JPEGImages", index.num_classes)
    if problems:
        raise StageError(f"submission in {result_dir} is invalid ({len(problems)} problems):\n  "
                         + "\n  ".join(problems))
    n = make_submission_archive(ctx.out, ctx.out / "results.tgz", comp=comp)
    ctx.log(f"{n} predictions validated and packed into {ctx.out / 'results.tgz'} "
            f"(upload it to the VOC evaluation server, docs/SUBMISSION.md)")
    return n


def run(ctx) -> dict:
    sub, ev = ctx.section["submit"], ctx.section["eval"]
    index = DatasetIndex.load(ctx.upstream_dir("data"))
    net, _ = load_segmenter(ctx, index, sub.model_stage(ev))
    split, comp = sub.split, sub.comp
    inf = sub.inference(ev)
    ids = index.ids(split)
    if not ids:
        raise StageError(f"split {split!r} is empty: nothing to submit")
    result_dir = ctx.out / SUBMISSION_SUBDIR.format(comp=comp)
    result_dir.mkdir(parents=True, exist_ok=True)
    ctx.log(f"predicting {len(ids)} {split} images: test protocol {inf.settings.describe()}, "
            f"crf={'off' if inf.crf is None else inf.crf} -> {result_dir}")
    write_predictions(ctx, net, index, ids, inf, result_dir)
    _barrier(ctx.world_size)
    counts = {"images": len(ids)}
    metrics = {"split": split, "comp": comp, "crf_enabled": inf.crf is not None,
               "protocol": inf.settings.describe()}
    if ctx.rank != 0:
        return {"counts": counts, "metrics": metrics}
    counts["archived"] = validate_and_pack(ctx, index, ids, result_dir, comp)
    metrics["validated"] = True
    if all(index.mask_path(i) is not None or index.heldout_mask_path(i) is not None for i in ids):
        res = score_label_dir(index, split, result_dir)
        metrics.update(mIoU=res["mIoU"], aAcc=res["aAcc"], mAcc=res["mAcc"], fwIoU=res["fwIoU"],
                       IoU=res["IoU"], class_names=res["class_names"], scored=res["images"])
        log_summary(ctx, f"{split} (held-out masks) — submitted predictions", res)
    return {"counts": counts, "metrics": metrics}


if __name__ == "__main__":
    main_for(__name__)
