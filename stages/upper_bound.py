"""Stage `upper_bound`: the fully supervised reference for the weakly-supervised result.

The same segmenter (``segmenter.model``, ``segmenter.train`` schedule) trained on the
ground-truth masks of the same training images with plain cross-entropy (255 ignored), then
scored with exactly the ``eval`` protocol (scales, flip, CRF). The WSSS/upper-bound ratio
compares ``eval``'s mIoU with this one.
"""
from __future__ import annotations

from pipeline.data.index import DatasetIndex
from pipeline.data.io_utils import write_json_atomic
from pipeline.metrics import format_table
from pipeline.runtime.checkpoint import save_model
from stages.common import main_for
from stages.eval import evaluate_section, parts_line
from stages.segmenter import model_config, train_segmenter

STAGE = "upper_bound"
UPSTREAM = ("data",)
SECTIONS = ("segmenter", "upper_bound", "eval")


def run(ctx) -> dict:
    seg = ctx.section["upper_bound"].segmenter(ctx.section["segmenter"])
    index = DatasetIndex.load(ctx.upstream_dir("data"))
    ctx.log(f"training the segmenter on ground-truth masks ({seg.train.split}, loss={seg.loss})")
    net = train_segmenter(ctx, index, None, seg, stage=STAGE)
    counts, metrics = {"iterations": seg.train.max_iters}, {}
    if ctx.rank == 0:
        save_model(ctx.out / "model.pth", net, "segmenter", model_config(seg), index.num_classes,
                   index.classes, section=STAGE)
    res = evaluate_section(net.eval().to(ctx.device), index, ctx.section["eval"], ctx)
    if ctx.rank == 0:
        ctx.log("upper bound, no CRF\n" + format_table(res["no_crf"]))
        if res["crf"] is not None:
            ctx.log("upper bound, CRF\n" + format_table(res["crf"]))
        ctx.log(f"upper bound mIoU without / with CRF: {parts_line(res)}")
        metrics = {k: res[k] for k in ("mIoU", "mIoU_no_crf", "mIoU_crf", "no_crf", "crf",
                                       "protocol", "parts")}
        counts.update(val_images=res["images"], val_scored=res["scored"])
        write_json_atomic(ctx.out / "metrics.json", metrics)
    return {"counts": counts, "metrics": metrics}


if __name__ == "__main__":
    main_for(__name__)
