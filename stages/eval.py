"""Stage `eval`: mIoU of the trained segmenter on the validation split, with and without CRF.

Inference (``pipeline.inference``): the test protocol ``eval.protocol`` (``test-ms-f``: DSRG's
scales 0.75 / 1 / 1.25 of the original image, logits summed, softmax floored at 1e-5;
``resized-square``: scales of a 321×321 resize + flips, logits averaged; or explicit keys),
logits upsampled to the original image size, optional dense CRF (``eval.crf``, DSRG test
parameters, ``crf.workers`` processes). The protocol that ran is in the metrics. Scoring
(``pipeline.runtime.evaluation``): one confusion matrix over the split, GT 255 ignored; per-class IoU,
mIoU, pixel accuracy, mean accuracy, fwIoU.

The split is also scored in two parts (``parts`` in the metrics, :mod:`pipeline.data.holdout`):
``select``, half of the ids chosen by a hash of the id, on which settings are to be compared,
and ``report``, the other half, whose numbers are the ones to publish for a setting chosen so.
Writes ``metrics.json`` (both tables + confusion matrices), ``pred/<id>.png`` (colour palette
PNG of the final prediction: with CRF when enabled), ``overlays/<id>.png`` for the first
``eval.n_overlays`` ids (image | prediction | prediction+CRF | GT). Under torchrun the ids are
sharded over ranks and the matrices summed.
"""
from __future__ import annotations

import torch

from pipeline.data.holdout import split_parts
from pipeline.data.index import DatasetIndex
from pipeline.data.io_utils import write_json_atomic
from pipeline.metrics import format_table
from pipeline.runtime.evaluation import evaluate_segmenter
from pipeline.runtime.stage import StageError
from stages.common import load_upstream_model, main_for

STAGE = "eval"
UPSTREAM = ("data", "segmenter")


def upstream_for(section) -> tuple[str, ...]:
    """``eval.model``: 'segmenter' (DSRG) or 'retrain' (the second round's mmseg segmentor)."""
    return ("data", section.model)


def load_segmenter(ctx, index, stage: str):
    """The segmenter of ``WORK_DIR/<stage>/model.pth`` (``stage``: 'segmenter' or 'retrain'),
    checked against the dataset classes."""
    net, meta = load_upstream_model(ctx, stage, "segmenter", index.num_classes)
    return net.to(ctx.device), meta


def evaluate_section(net, index, sec, ctx, out_dir=None) -> dict:
    """:func:`pipeline.runtime.evaluation.evaluate_segmenter` with the protocol of the ``eval`` section
    ``sec`` (split, inference, CRF, outputs into ``out_dir`` when given), the split's select /
    report parts scored too."""
    inf = sec.inference()
    return evaluate_segmenter(net, index, sec.split, inf.settings, ctx.device, crf=inf.crf,
                              workers=inf.workers, chunk=inf.chunk, out_dir=out_dir,
                              n_overlays=sec.n_overlays, save_predictions=sec.save_predictions,
                              save_no_crf=sec.save_no_crf, rank=ctx.rank,
                              world_size=ctx.world_size, log=ctx.log,
                              parts=split_parts(index.ids(sec.split)))


def parts_line(res: dict) -> str:
    """``select part (n images) a / b, report part (m images) c / d`` (mIoU without / with CRF)."""
    return ", ".join(f"{name} part ({p['images']} images) {_pct(p['mIoU_no_crf'])} / "
                     f"{_pct(p['mIoU_crf'])}" for name, p in (res.get("parts") or {}).items())


def log_summary(ctx, title: str, summary: dict) -> None:
    ctx.log(f"{title}\n{format_table(summary)}")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def run(ctx) -> dict:
    sec = ctx.section
    index = DatasetIndex.load(ctx.upstream_dir("data"))
    net, _ = load_segmenter(ctx, index, sec.model)
    split = sec.split
    torch.manual_seed(ctx.cfg.experiment.seed)
    ctx.log(f"scoring {split} ({len(index.ids(split))} images): test protocol "
            f"{sec.inference().settings.describe()}, crf={sec.crf.to_dict()}")
    res = evaluate_section(net, index, sec, ctx, out_dir=ctx.out)
    if res["scored"] == 0:
        raise StageError(f"no ground-truth mask for any id of split {split!r}: nothing to score")
    log_summary(ctx, f"{split} without CRF", res["no_crf"])
    if res["crf"] is not None:
        log_summary(ctx, f"{split} with CRF", res["crf"])
    crf_part = "" if res["crf"] is None else f", with CRF {_pct(res['crf']['mIoU'])}"
    ctx.log(f"{split} mIoU ({res['scored']} images): without CRF {_pct(res['no_crf']['mIoU'])}{crf_part}")
    ctx.log(f"{split} mIoU without / with CRF: {parts_line(res)}")
    if ctx.rank == 0:
        write_json_atomic(ctx.out / "metrics.json", res)
    metrics = {k: v for k, v in res.items() if k != "confusion"}
    counts = {"images": res["images"], "scored": res["scored"], "missing_gt": res["missing_gt"]}
    return {"counts": counts, "metrics": metrics}


if __name__ == "__main__":
    main_for(__name__)
