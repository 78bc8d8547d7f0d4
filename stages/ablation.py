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
atomically, :mod:`stages.ablation_results`) and is printed; a variant that fails is reported in its row and the others go on
(exit status 1).

``python -m stages.ablation [--exp CFG] [--work-dir D] [--opts ...] [--force] [--full]
[--variants gap ep ...]``; ``make ablation [FULL=1] [VARIANTS="gap ep"]``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

from pipeline.runtime.stage import (StageError, config_digests, read_manifest, run_stage,
                                    stage_status)
from pipeline.settings import ConfigError, flatten_overrides
from pipeline.settings.experiment import ABLATION_RESERVED
from stages.ablation_results import CUE_STAGES, FULL_STAGES, result_row, write_results
from stages.common import add_opts_argument, parse_command_line, stage_section, stage_upstream

SHARED = ("data", "saliency")

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


# -------------------------------------------------------------------------------- driver ---
class AblationRun:
    """The variants of one ``make ablation`` call: their checked settings, what ran, what failed."""

    def __init__(self, cfg, work_dir: Path, specs: dict, stages, *, force: bool, device: str, log=print):
        self.work_dir, self.root, self.specs, self.stages = work_dir, work_dir / "ablation", specs, stages
        self.force, self.device, self.log = force, device, log
        self.vcfgs = {n: variant_config(cfg, n) for n in specs}
        self.errors, self.status, self.ran = {}, {}, {}
        self.done_classifiers: set[str] = set()

    def prepare(self, name: str) -> Path:
        """The variant's folder, its shared stages linked to the main work dir's."""
        vdir = self.root / name
        for stage in SHARED:
            _link(vdir / stage, self.work_dir / stage)
        return vdir

    def ensure_classifier(self, name: str) -> None:
        """Train the variant's classifier, or link the main WORK_DIR's when it is the same."""
        if name in self.done_classifiers:
            return
        vdir = self.prepare(name)
        if not _reuse_main_classifier(vdir, self.vcfgs[name], self.work_dir, self.log):
            self.log(f"[ablation] {name}: classifier")
            _run("classifier", self.vcfgs[name], vdir, force=self.force, device=self.device)
        self.done_classifiers.add(name)

    def run_variant(self, name: str) -> None:
        spec, vdir = self.specs[name], self.prepare(name)
        before = {s: (read_manifest(vdir / s) or {}).get("run_digest") for s in self.stages}
        src = spec["classifier_from"]
        for stage in self.stages:
            if stage == "classifier":
                if src is None:
                    self.ensure_classifier(name)
                else:
                    if src in self.errors:
                        raise StageError(f"the classifier of variant {src!r} failed")
                    self.ensure_classifier(src)
                    _link(vdir / "classifier", self.root / src / "classifier")
                continue
            self.log(f"[ablation] {name}: {stage}")
            _run(stage, self.vcfgs[name], vdir, force=self.force, device=self.device)
        self.ran[name] = [s for s in self.stages
                          if (read_manifest(vdir / s) or {}).get("run_digest") != before[s]
                          and not (vdir / s).is_symlink()]

    def run_selected(self, selected) -> None:
        """Each selected variant in turn; a failing one is recorded and the others go on."""
        for name in selected:
            self.log(f"[ablation] ===== {name}: {self.specs[name]['label']} =====")
            try:
                self.run_variant(name)
                ran = self.ran[name]
                self.status[name] = "ran " + "+".join(ran) if ran else "fresh (skipped)"
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one failing variant must not stop the others
                traceback.print_exc()
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                self.status[name] = "error"
                self.log(f"[ablation] {name} FAILED: {self.errors[name]}")

    def rows(self, selected) -> list[dict]:
        return [result_row(name, spec, self.vcfgs, self.root, self.device, selected=name in selected,
                           status=self.status, errors=self.errors, stages=self.stages)
                for name, spec in self.specs.items()]


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
    ab = AblationRun(cfg, work_dir, specs, stages, force=force, device=device, log=log)
    ab.run_selected(selected)
    return write_results(cfg, work_dir, root, full=full, selected=selected, stages=stages,
                         rows=ab.rows(selected), errors=ab.errors, log=log)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m stages.ablation", description=__doc__.split("\n")[0])
    p.add_argument("--exp", default=None, help="experiment config file")
    p.add_argument("--work-dir", default=None, help="main work dir (default work_dirs/<experiment>)")
    add_opts_argument(p)
    p.add_argument("--force", action="store_true", help="re-run the variants' stages even when fresh")
    p.add_argument("--full", action="store_true", default=None,
                   help="also train the segmenter and score it (eval) per variant")
    p.add_argument("--variants", nargs="+", default=None, help="run only these variants")
    return parse_command_line(p, argv)


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
