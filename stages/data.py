"""Stage `data`: index a VOC-format tree (VOC 2012 [+ SBD or + SegmentationClassAug], or a
generated synthetic one).

Output ``WORK_DIR/data/``: ``dataset.json``, ``lists/<split>.txt``, ``labels.json`` (see
docs/DESIGN.md), ``SegmentationClassAug/`` when SBD is used, and for ``dataset='synthetic'``
the generated tree itself (``synthetic/VOC2012``) with its test masks kept aside
(``synthetic/heldout``). Paths inside the folder are stored relative to it.

Before publishing, the stage checks what later stages will read: every split named by a
``split`` key of the experiment is non-empty (``submit``'s only warns), every listed JPEG
decodes completely (``data.workers`` processes), every mask is readable with values in range;
XML/mask label disagreements are counted and listed in ``label_disagreements.json``.
"""
from __future__ import annotations

import json
import os
import shutil
import time

from pipeline.data.prepare import DatasetError, prepare_dataset
from pipeline.data.synthetic import generate_synthetic
from pipeline.data.validate import splits_needed
from pipeline.runtime.stage import StageError
from stages.common import main_for, resolve_path

STAGE = "data"
UPSTREAM = ()


def dataset_source(ctx, sec) -> tuple:
    """``(root, sbd_root, held-out mask dir, name, generator summary or None)``: the synthetic
    tree generated into ``ctx.out/synthetic``, or the configured VOC tree."""
    if sec.dataset == "synthetic":
        gen_root = ctx.out / "synthetic"
        shutil.rmtree(gen_root, ignore_errors=True)
        seed = sec.synthetic.seed
        ctx.log(f"generating the synthetic VOC-format dataset (seed {seed}) in {gen_root}")
        gen = generate_synthetic(gen_root, sec.synthetic.generator_options(), seed=seed)
        return (gen_root / "VOC2012", None, gen_root / "heldout" / "SegmentationClass",
                sec.name or "synthetic", gen)
    root, sbd_root = resolve_path(sec.root), resolve_path(sec.sbd_root)
    if root is None:
        raise StageError("data.root is not set: `make data DATASET=voc VOC_ROOT=/path/to/VOCdevkit/VOC2012 "
                         "[SBD_ROOT=/path/to/benchmark_RELEASE]`")
    return root, sbd_root, None, sec.name or "voc2012", None


def index_dataset(ctx, sec, root, sbd_root, heldout, name, index_tmp) -> dict:
    """:func:`pipeline.data.prepare.prepare_dataset` into ``index_tmp``; its summary, logged."""
    aug_dir = sec.aug_dir if sec.dataset == "voc" else None
    workers = sec.workers if sec.workers is not None else min(4, os.cpu_count() or 1)
    ctx.log(f"indexing {root}; every listed image is decoded ({workers} worker process(es))")
    try:
        summary = prepare_dataset(root, index_tmp, sbd_root=sbd_root,
                                  label_source=sec.label_source, name=name,
                                  heldout_seg_dir=heldout,
                                  aug_dir=(aug_dir if aug_dir in (None, "auto")
                                           else resolve_path(aug_dir)),
                                  aug_list=resolve_path(sec.aug_list), workers=workers,
                                  required_splits=splits_needed(ctx.cfg.raw))
    except FileNotFoundError as exc:
        raise StageError(f"{exc}: check data.root={sec.root!r} and data.sbd_root="
                         f"{sec.sbd_root!r} (make data VOC_ROOT=... SBD_ROOT=...)") from exc
    except DatasetError as exc:
        raise StageError(f"{exc} (dataset data.root={sec.root!r})") from exc
    for warning in summary.get("warnings", []):
        ctx.log(f"warning: {warning}")
    examples = summary["disagreement_examples"]
    if examples:
        ctx.log(f"{summary['label_disagreements']} images whose XML and mask labels disagree (all in "
                f"{ctx.out / 'label_disagreements.json'}), e.g. " + "; ".join(
                    f"{d['id']}: xml {d['xml']} mask {d['mask']}" for d in examples[:5]))
    return summary


def publish_index(ctx, index_tmp) -> dict:
    """Move the index to the top of the stage folder, paths relative to it; its dataset.json."""
    for item in index_tmp.iterdir():
        dst = ctx.out / item.name
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        shutil.move(str(item), str(dst))
    index_tmp.rmdir()
    _relativise(ctx.out / "dataset.json", [str(index_tmp), str(ctx.out)])
    return json.loads((ctx.out / "dataset.json").read_text())


def remove_leftovers(out) -> None:
    """Delete the temporary folders (``.synthetic.tmp-*``, ``._index.tmp-*``) that a run killed
    while building them (SIGTERM, SIGKILL: no clean-up runs) left in the partial folder a
    resumed run reuses; they would be published with the index."""
    for name in ("synthetic", "_index"):
        for left in out.glob(f".{name}.tmp-*"):
            shutil.rmtree(left, ignore_errors=True)


def run(ctx) -> dict:
    sec = ctx.section
    remove_leftovers(ctx.out)
    root, sbd_root, heldout, name, gen = dataset_source(ctx, sec)
    index_tmp = ctx.out / "_index"
    shutil.rmtree(index_tmp, ignore_errors=True)
    started = time.perf_counter()
    index_dataset(ctx, sec, root, sbd_root, heldout, name, index_tmp)
    ds = publish_index(ctx, index_tmp)
    ctx.log(f"{ds['name']}: {len(ds['classes']) - 1} classes; splits " +
            ", ".join(f"{k}={v}" for k, v in ds["splits"].items()) +
            f"; label disagreements xml/mask: {ds.get('label_disagreements')}")
    counts = dict(ds["splits"])
    counts["classes"] = len(ds["classes"]) - 1
    metrics = {"label_disagreements": ds.get("label_disagreements"),
               "index_and_validate_s": round(time.perf_counter() - started, 3)}
    if gen:   # the generator's paths point into the unpublished folder: stored relative to it
        metrics["synthetic"] = {k: _relative(v, [str(ctx.out)])
                                for k, v in gen.items() if isinstance(v, (int, float, str))}
    return {"counts": counts, "metrics": metrics}


def _relative(p, prefixes):
    """``p`` relative to the first of ``prefixes`` it lies under ("." for the prefix itself);
    anything else (other paths, non-strings) unchanged."""
    if not isinstance(p, str):
        return p
    for pre in prefixes:
        if p == pre or p.startswith(pre + "/"):
            return p[len(pre):].lstrip("/") or "."
    return p


def _relativise(path, prefixes) -> None:
    """Store paths under the stage folder relative to it, so the folder can be renamed."""
    ds = json.loads(path.read_text())
    for key in ("root", "heldout_seg_dir", "sbd_root"):
        ds[key] = _relative(ds.get(key), prefixes)
    ds["seg_dirs"] = [_relative(p, prefixes) for p in ds.get("seg_dirs", [])]
    path.write_text(json.dumps(ds, indent=2) + "\n")


if __name__ == "__main__":
    main_for(__name__)
