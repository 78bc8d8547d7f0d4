"""The results of the classifier ablation (``stages.ablation``): one table row per variant from
the manifests of its stages in ``WORK_DIR/ablation/<variant>/``, the status of the variants not
run this time, and ``results.json`` / ``results.md`` (:mod:`pipeline.report.ablation_table`).
"""
from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

from pipeline.data.index import DatasetIndex
from pipeline.data.io_utils import write_json_atomic, write_text_atomic
from pipeline.report.ablation_table import (COLUMNS, FULL_COLUMNS, STATUS_COLUMN, format_markdown,
                                            nested_get)
from pipeline.runtime.checkpoint import load_model
from pipeline.runtime.stage import config_digests, read_manifest, stage_status
from stages.classifier import evaluate
from stages.common import stage_section, stage_upstream

CUE_STAGES = ("classifier", "heatmaps", "seeds")
FULL_STAGES = ("segmenter", "eval")
FORMAT = "wsss-ablation/1"


def stage_state(stage: str, cfg, work_dir: Path) -> str:
    mod = importlib.import_module(f"stages.{stage}")
    section = stage_section(mod, cfg)
    return stage_status(work_dir, stage, stage_upstream(mod, section), config_digests(section))[0]


def inference_map(cls_dir: Path, data_dir: Path, pooling: str, cfg, device: str,
                  compute: bool = True) -> float | None:
    """mAP of a trained classifier under another pooling rule: from its manifest's
    ``other_poolings`` when it was scored there, else scored now on the val split (with
    ``compute``; None otherwise)."""
    man = read_manifest(cls_dir) or {}
    met = man.get("metrics", {})
    if met.get("pooling") == pooling:
        return met.get("val_mAP")
    if nested_get(met, "other_poolings", pooling) is not None:
        return met["other_poolings"][pooling]
    if not compute or not (cls_dir / "model.pth").is_file():
        return None
    net, _ = load_model(cls_dir / "model.pth", kind="classifier")
    res = evaluate(net, DatasetIndex.load(data_dir), cfg.classifier.val, device, (pooling,))
    return res[pooling]["mAP"]


def variant_row(name: str, spec: dict, vcfg, vdir: Path, device: str, *, score_inference=True) -> dict:
    """The table row of a variant from the manifests in ``vdir``."""
    man = {s: read_manifest(vdir / s) for s in CUE_STAGES + FULL_STAGES}
    met = {s: (m or {}).get("metrics", {}) for s, m in man.items()}
    trained = met["classifier"].get("pooling")
    inf = met["heatmaps"].get("inference_pooling") or vcfg.heatmaps.pooling or trained
    mAP = met["classifier"].get("val_mAP")
    if inf and trained and inf != trained:
        mAP = None
        if man["classifier"] is not None:
            mAP = inference_map(vdir / "classifier", vdir / "data", inf, vcfg, device,
                                compute=score_inference)
    seeds = met["seeds"].get("seeds") or {}
    own = [s for s in CUE_STAGES + FULL_STAGES if man[s] is not None and not (vdir / s).is_symlink()]
    link = vdir / "classifier"
    return {
        "variant": name, "label": spec["label"], "classifier_from": spec["classifier_from"],
        "classifier_link": os.readlink(link) if link.is_symlink() else None,
        "overrides": spec["opts"],
        "pooling": None if trained is None else (trained if inf in (None, trained) else f"{trained} → {inf}"),
        "mAP": mAP,
        "seed_precision": seeds.get("precision"), "seed_recall": seeds.get("recall"),
        "seed_mIoU": seeds.get("mIoU"), "seed_labelled": seeds.get("fraction_labelled"),
        "pseudo_mIoU": nested_get(met["seeds"], "pseudo", "mIoU"),
        "segmenter_quick_mIoU": met["segmenter"].get("val_mIoU"),
        "mIoU_no_crf": met["eval"].get("mIoU_no_crf"), "mIoU_crf": met["eval"].get("mIoU_crf"),
        "mIoU": met["eval"].get("mIoU"),
        "run_digest": {s: m["run_digest"] for s, m in man.items() if m is not None},
        "wall_time_s": round(sum(man[s].get("wall_time_s", 0.0) for s in own), 1),
        "work_dir": str(vdir),
    }


def idle_status(spec: dict, vcfgs: dict, root: Path, stages) -> str:
    """Status of a variant that was not selected this time, from its manifests."""
    name = spec["name"]
    vdir = root / name
    if not vdir.is_dir():
        return "not run"
    states = set()
    for s in stages:
        owner = spec["classifier_from"] if s == "classifier" and spec["classifier_from"] else name
        states.add(stage_state(s, vcfgs[owner], root / owner))
    word = ("fresh" if states == {"fresh"} else "missing" if states & {"missing", "blocked"}
            else "stale")
    return f"{word} (not run now)"


def result_row(name: str, spec: dict, vcfgs: dict, root: Path, device: str, *, selected: bool,
               status: dict, errors: dict, stages) -> dict:
    """The table row of variant ``name`` with its status (and error); fills ``status`` /
    ``errors`` when reading the row fails or the variant was not selected."""
    vdir = root / name
    row = None
    if vdir.is_dir():
        try:
            row = variant_row(name, spec, vcfgs[name], vdir, device,
                              score_inference=selected and name not in errors)
        except Exception as exc:  # noqa: BLE001
            errors.setdefault(name, f"{type(exc).__name__}: {exc}")
            status[name] = "error"
    if row is None:
        row = {"variant": name, "label": spec["label"], "classifier_from": spec["classifier_from"],
               "overrides": spec["opts"], "run_digest": {}, "work_dir": str(vdir)}
    if name not in status:                               # not selected this time
        status[name] = idle_status(spec, vcfgs, root, stages)
    row["status"] = status[name]
    if name in errors:
        row["error"] = errors[name]
    return row


def write_results(cfg, work_dir: Path, root: Path, *, full: bool, selected, stages, rows,
                  errors: dict, log=print) -> dict:
    """``results.json`` and ``results.md`` in ``root`` (atomically); the table is logged."""
    results = {"format": FORMAT, "experiment": cfg.experiment.name, "work_dir": str(work_dir),
               "full": full, "selected": selected, "stages": list(stages),
               "generated": time.strftime("%Y-%m-%dT%H:%M:%S"), "columns": [list(c) for c in COLUMNS
                                                                           + FULL_COLUMNS + [STATUS_COLUMN]],
               "rows": rows, "errors": errors}
    md = format_markdown(results)
    write_json_atomic(root / "results.json", results)
    write_text_atomic(root / "results.md", md)
    log(f"\nAblation ({cfg.experiment.name}) -> {root / 'results.md'}\n\n{md}")
    return results
