"""Classifier ablation (`make ablation`): train every classifier variant on the same data and
tabulate classification mAP, seed quality and pseudo-mask mIoU (and, with ``--full``, the
segmenter's mIoU) in one table.

Not a stage itself: a driver over the stages. Variants come from the config section
``ablation.variants`` (configs/_base_/ablation.py): each is a dict of ``--opts``-style overrides
(``"classifier.model.pooling.type": "gap"``) merged onto the experiment config after
``ablation.common``, plus the reserved keys ``label`` (description) and ``classifier_from``
(reuse another variant's trained classifier, e.g. "EP inference on the GAP model").

Layout: the shared stages ``data`` and ``saliency`` run (or are found fresh) in ``WORK_DIR``;
each variant gets ``WORK_DIR/ablation/<variant>/`` whose ``data`` and ``saliency`` are relative
symlinks to them (and whose ``classifier`` is a symlink to the source variant's folder with
``classifier_from``); then ``classifier`` -> ``heatmaps`` -> ``seeds`` (-> ``segmenter`` ->
``eval`` with ``--full`` / ``ablation.full``) run through :func:`pipeline.runtime.stage.run_stage`, so a
finished variant is skipped on the next call and a changed override re-runs only what it
affects. The table goes to ``WORK_DIR/ablation/results.json`` and ``results.md`` (written
atomically) and is printed; a variant that fails is reported in its row and the others go on
(exit status 1).

``python -m stages.ablation [--exp CFG] [--work-dir D] [--opts ...] [--force] [--full]
[--variants gap ep ...]``; ``make ablation [FULL=1] [VARIANTS="gap ep"]``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from pipeline.report.ablation_table import COLUMNS, FULL_COLUMNS, STATUS_COLUMN, format_markdown, nested_get
from pipeline.settings import ConfigError, flatten_overrides
from pipeline.settings.experiment import ABLATION_RESERVED
from pipeline.data.io_utils import write_json_atomic, write_text_atomic
from pipeline.runtime.stage import StageError, config_digests, read_manifest, run_stage, stage_status
from stages.common import add_opts_argument, expand_opts_line, stage_upstream

SHARED = ("data", "saliency")
CUE_STAGES = ("classifier", "heatmaps", "seeds")
FULL_STAGES = ("segmenter", "eval")
FORMAT = "wsss-ablation/1"

# ------------------------------------------------------------------------------- variants ---
def variant_specs(cfg) -> dict[str, dict]:
    """``{name: {"label", "classifier_from", "opts"}}`` in config order (the variants were
    checked when the experiment was loaded: :meth:`pipeline.settings.Settings.variant`)."""
    if cfg.ablation is None:
        raise StageError("the experiment has no `ablation.variants` section: add "
                         "\"_base_/ablation.py\" to its _base_ list")
    specs = {}
    for name, raw in cfg.ablation.variants.items():
        opts = flatten_overrides({k: v for k, v in raw.items() if k not in ABLATION_RESERVED})
        specs[str(name)] = {"name": str(name), "label": raw.get("label") or str(name),
                            "classifier_from": raw.get("classifier_from"), "opts": opts}
    return specs


def variant_config(cfg, name: str):
    """The checked settings of variant ``name``: ``ablation.common``, then its overrides."""
    return cfg.variant(name)


def stage_module(stage: str):
    return importlib.import_module(f"stages.{stage}")


def stage_section(mod, cfg):
    """The section a stage's run gets (as in :func:`stages.common.main_for`)."""
    return cfg.stage_section(mod.STAGE, getattr(mod, "SECTIONS", None))


def _link(link: Path, target: Path) -> None:
    """Make ``link`` a relative symlink to ``target`` (replacing an older link)."""
    rel = os.path.relpath(target, link.parent)
    if link.is_symlink():
        if os.readlink(link) == rel:
            return
        link.unlink()
    elif link.exists():
        raise StageError(f"{link} is a real folder; the ablation links it to {target}: remove it")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(rel, link)


def _run(stage: str, cfg, work_dir: Path, *, force: bool, device: str) -> dict:
    """:func:`run_stage` of one stage module with ``cfg``."""
    mod = stage_module(stage)
    section = stage_section(mod, cfg)
    return run_stage(stage, stage_upstream(mod, section), mod.run, cfg, section, work_dir,
                     force=force, device=device, extra_manifest={"ablation": True})


def _reuse_main_classifier(vdir: Path, vcfg, work_dir: Path, log=print) -> bool:
    """Link ``vdir/classifier`` to ``WORK_DIR/classifier`` when that one is fresh with the
    variant's exact classifier section (no need to train it twice); drop such a link when it no
    longer matches. A variant's own trained classifier folder is never replaced."""
    link = vdir / "classifier"
    if link.exists() and not link.is_symlink():
        return False
    mod = stage_module("classifier")
    state = stage_status(work_dir, "classifier", tuple(mod.UPSTREAM),
                         config_digests(stage_section(mod, vcfg)))[0]
    if state == "fresh":
        _link(link, work_dir / "classifier")
        log(f"[ablation] {vdir.name}: classifier = the main work dir's (same config, fresh)")
        return True
    if link.is_symlink():
        link.unlink()
    return False


def _state(stage: str, cfg, work_dir: Path) -> str:
    mod = stage_module(stage)
    section = stage_section(mod, cfg)
    return stage_status(work_dir, stage, stage_upstream(mod, section), config_digests(section))[0]


# ------------------------------------------------------------------------------- results ---
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
    from pipeline.data.index import DatasetIndex
    from pipeline.runtime.checkpoint import load_model
    from stages.classifier import evaluate

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


def _idle_status(spec: dict, vcfgs: dict, root: Path, stages) -> str:
    """Status of a variant that was not selected this time, from its manifests."""
    name = spec["name"]
    vdir = root / name
    if not vdir.is_dir():
        return "not run"
    states = set()
    for s in stages:
        owner = spec["classifier_from"] if s == "classifier" and spec["classifier_from"] else name
        states.add(_state(s, vcfgs[owner], root / owner))
    word = ("fresh" if states == {"fresh"} else "missing" if states & {"missing", "blocked"}
            else "stale")
    return f"{word} (not run now)"


# -------------------------------------------------------------------------------- driver ---
def run_ablation(cfg, work_dir, *, variants=None, full: bool | None = None, force: bool = False,
                 device: str = "cpu", log=print) -> dict:
    """Run (or find fresh) every selected variant; write and return the results."""
    work_dir = Path(work_dir).resolve()
    specs = variant_specs(cfg)
    full = cfg.ablation.full if full is None else bool(full)
    selected = list(specs) if not variants else list(variants)
    unknown = [v for v in selected if v not in specs]
    if unknown:
        raise StageError(f"unknown ablation variant(s) {unknown}; configured: {', '.join(specs)}")
    stages = CUE_STAGES + (FULL_STAGES if full else ())
    root = work_dir / "ablation"
    root.mkdir(parents=True, exist_ok=True)
    log(f"[ablation] variants {', '.join(selected)}; stages {' -> '.join(stages)}; in {root}")
    for stage in SHARED:                                   # shared inputs in the main WORK_DIR
        _run(stage, cfg, work_dir, force=False, device=device)

    vcfgs = {n: variant_config(cfg, n) for n in specs}
    errors, status, ran = {}, {}, {}

    def prepare(name: str) -> Path:
        vdir = root / name
        for stage in SHARED:
            _link(vdir / stage, work_dir / stage)
        return vdir

    done_classifiers: set[str] = set()

    def ensure_classifier(name: str) -> None:
        """Train the variant's classifier, or link the main WORK_DIR's when it is the same."""
        if name in done_classifiers:
            return
        vdir = prepare(name)
        if not _reuse_main_classifier(vdir, vcfgs[name], work_dir, log):
            log(f"[ablation] {name}: classifier")
            _run("classifier", vcfgs[name], vdir, force=force, device=device)
        done_classifiers.add(name)

    def run_variant(name: str, wanted) -> None:
        spec, vdir = specs[name], prepare(name)
        before = {s: (read_manifest(vdir / s) or {}).get("run_digest") for s in wanted}
        src = spec["classifier_from"]
        for stage in wanted:
            if stage == "classifier":
                if src is None:
                    ensure_classifier(name)
                else:
                    if src in errors:
                        raise StageError(f"the classifier of variant {src!r} failed")
                    ensure_classifier(src)
                    _link(vdir / "classifier", root / src / "classifier")
                continue
            log(f"[ablation] {name}: {stage}")
            _run(stage, vcfgs[name], vdir, force=force, device=device)
        ran[name] = [s for s in wanted
                     if (read_manifest(vdir / s) or {}).get("run_digest") != before[s]
                     and not (vdir / s).is_symlink()]

    for name in selected:
        log(f"[ablation] ===== {name}: {specs[name]['label']} =====")
        try:
            run_variant(name, stages)
            status[name] = "ran " + "+".join(ran[name]) if ran[name] else "fresh (skipped)"
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one failing variant must not stop the others
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"
            status[name] = "error"
            log(f"[ablation] {name} FAILED: {errors[name]}")

    rows = []
    for name, spec in specs.items():
        vdir = root / name
        row = None
        if vdir.is_dir():
            try:
                row = variant_row(name, spec, vcfgs[name], vdir, device,
                                  score_inference=name in selected and name not in errors)
            except Exception as exc:  # noqa: BLE001
                errors.setdefault(name, f"{type(exc).__name__}: {exc}")
                status[name] = "error"
        if row is None:
            row = {"variant": name, "label": spec["label"], "classifier_from": spec["classifier_from"],
                   "overrides": spec["opts"], "run_digest": {}, "work_dir": str(vdir)}
        if name not in status:                               # not selected this time
            status[name] = _idle_status(spec, vcfgs, root, stages)
        row["status"] = status[name]
        if name in errors:
            row["error"] = errors[name]
        rows.append(row)

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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m stages.ablation", description=__doc__.split("\n")[0])
    p.add_argument("--exp", default=None, help="experiment config file")
    p.add_argument("--work-dir", default=None, help="main work dir (default work_dirs/<experiment>)")
    add_opts_argument(p)
    p.add_argument("--force", action="store_true", help="re-run the variants' stages even when fresh")
    p.add_argument("--full", action="store_true", default=None,
                   help="also train the segmenter and score it (eval) per variant")
    p.add_argument("--variants", nargs="+", default=None, help="run only these variants")
    return p.parse_args(expand_opts_line(argv))


def main(argv=None) -> int:
    from stages.common import DEFAULT_EXP, choose_device, config_exit, default_work_dir, load_experiment

    a = parse_args(argv)
    try:
        cfg = load_experiment(a.exp or DEFAULT_EXP, a.opts)
        for name in cfg.ablation.variants if cfg.ablation is not None else ():
            cfg.variant(name)                 # every variant's overrides, before anything runs
    except ConfigError as exc:
        raise config_exit("ablation", exc) from None
    work_dir = Path(a.work_dir).expanduser().resolve() if a.work_dir else default_work_dir(cfg)
    device = choose_device(cfg)
    variants = [v for item in (a.variants or []) for v in item.replace(",", " ").split()]
    try:
        res = run_ablation(cfg, work_dir, variants=variants or None, full=a.full, force=a.force,
                           device=device)
    except StageError as exc:
        print(f"[ablation] error: {exc}", file=sys.stderr)
        return 2
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
