"""HTML report of an experiment (`make report`): ``WORK_DIR/report/index.html``.

Not a managed stage: it always regenerates (in a few seconds), from whatever stages have run,
and lists the missing ones. A static page that opens from disk: images are PNG files next to
it (relative links). Built in a temporary folder inside ``WORK_DIR`` and renamed into place.

Content: stage status (fresh / stale / missing via :func:`pipeline.runtime.stage.stage_status`, wall
times); classifier mAP and per-class AP; seed precision / recall / mIoU and pseudo-mask mIoU;
val mIoU with and without CRF and per-class IoU; the fully supervised upper bound and the
WSSS / upper-bound ratio; the submission check; localisation CorLoc; the ablation table
(``WORK_DIR/ablation/results.json``); training curves of ``classifier``, ``segmenter`` and
``upper_bound`` (the training loop's scalars); per-class IoU bars (WSSS vs upper bound); a grid of
trainaug examples: image | heatmap | λ | saliency | seeds | grown seeds | prediction | GT (the
prediction comes from running the trained segmenter on those images; the grown seeds are DSRG
region growing of the seeds on that prediction, an illustration: in training they are grown
on the output grid with the network of the moment); and the resolved experiment config.

``python -m stages.report [--exp CFG] [--work-dir D] [--opts ...]`` (``--force`` is accepted and
ignored). ``make report``.
"""
from __future__ import annotations

import argparse
import importlib
import pprint
import sys
import time
from pathlib import Path

from pipeline.data.io_utils import atomic_dir, write_json_atomic
from pipeline.report.examples import examples_html
from pipeline.report.html import (CSS, classifier_html, esc, localize_html, seeds_html,
                                  segmentation_html, stages_html, submit_html)
from pipeline.report.sections import ablation_html, figures_html
from pipeline.runtime.stage import config_digests, read_manifest, stage_status
from stages.common import add_opts_argument, parse_command_line, stage_section, stage_upstream

STAGES = ("data", "classifier", "heatmaps", "saliency", "seeds", "segmenter", "upper_bound",
          "eval", "submit", "localize")

# ---------------------------------------------------------------------------------- stages ---
def stage_states(cfg, work_dir: Path) -> list[dict]:
    """One entry per stage: manifest (or None), state and reason."""
    out = []
    for name in STAGES:
        man = read_manifest(work_dir / name)
        state, reason = ("present", "") if man else ("missing", "never ran")
        try:
            mod = importlib.import_module(f"stages.{name}")
            section = stage_section(mod, cfg)
            state, reason = stage_status(work_dir, name, stage_upstream(mod, section),
                                         config_digests(section))
        except Exception as exc:  # noqa: BLE001 - a stage the config lacks: keep present/missing
            if man is not None:
                reason = f"status unknown ({type(exc).__name__}: {exc})"
        out.append({"stage": name, "manifest": man, "state": state, "reason": reason})
    return out


# ------------------------------------------------------------------------------------ main ---
def page_body(cfg, work_dir: Path, exp_path, states: list, man: dict, curves: str, bars: str,
              examples: str) -> list[str]:
    """The HTML sections of the report page, in order."""
    met = {k: (v or {}).get("metrics") for k, v in man.items()}
    config_text = "\n".join(f"{k} = {pprint.pformat(v, width=100, sort_dicts=False)}"
                            for k, v in cfg.raw.items())
    return [
        f"<h1>WSSS experiment report: {esc(cfg.experiment.name or work_dir.name)}</h1>",
        f"<p class=note>work dir {esc(work_dir)}; config {esc(exp_path or '?')}; generated "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
        "<h2>Stages</h2>", stages_html(states),
        "<h2>Results</h2>", classifier_html(met["classifier"]), seeds_html(met["seeds"], met["saliency"]),
        segmentation_html(met["eval"], met["upper_bound"], met["segmenter"]),
        submit_html(man["submit"], work_dir), localize_html(met["localize"]),
        "<h2>Ablation</h2>", ablation_html(work_dir),
        "<h2>Training curves</h2>", curves,
        "<h2>Per-class IoU: WSSS vs upper bound</h2>", bars,
        "<h2>Examples</h2>", examples,
        "<h2>Experiment config (resolved)</h2>", f"<pre>{esc(config_text)}</pre>",
    ]


def build_report(cfg, work_dir, device: str = "cpu", exp_path=None, log=print) -> Path:
    """Write ``work_dir/report/`` (atomically) and return the path of its ``index.html``."""
    t0 = time.time()
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    with atomic_dir(work_dir / "report", overwrite=True) as tmp:
        states = stage_states(cfg, work_dir)
        man = {s["stage"]: s["manifest"] for s in states}
        curves, bars, n_png = figures_html(work_dir, man, tmp)
        try:
            examples = examples_html(cfg, work_dir, man, tmp, device)
        except Exception as exc:  # noqa: BLE001 - a report never fails on one section
            examples = f"<p class=error>examples failed: {esc(type(exc).__name__)}: {esc(exc)}</p>"
        body = page_body(cfg, work_dir, exp_path, states, man, curves, bars, examples)
        page = ("<!DOCTYPE html>\n<html lang=en><head><meta charset='utf-8'>"
                f"<title>WSSS report: {esc(cfg.experiment.name or work_dir.name)}</title><style>{CSS}</style></head><body>\n"
                + "\n".join(body) + "\n</body></html>\n")
        (tmp / "index.html").write_text(page, encoding="utf-8")
        missing = [s["stage"] for s in states if s["manifest"] is None]
        write_json_atomic(tmp / "manifest.json", {
            "stage": "report", "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
            "wall_time_s": round(time.time() - t0, 3), "counts": {"figures": n_png},
            "metrics": {"missing_stages": missing}, "managed": False})
    out = work_dir / "report" / "index.html"
    log(f"[report] {out} ({time.time() - t0:.1f}s); missing stages: {', '.join(missing) or 'none'}")
    return out


def main(argv=None) -> int:
    from stages.common import DEFAULT_EXP, choose_device, default_work_dir, load_experiment_or_exit

    p = argparse.ArgumentParser(prog="python -m stages.report", description=__doc__.split("\n")[0])
    p.add_argument("--exp", default=None, help="experiment config file")
    p.add_argument("--work-dir", default=None, help="work dir (default work_dirs/<experiment>)")
    add_opts_argument(p)
    p.add_argument("--force", action="store_true", help="ignored (the report always regenerates)")
    a = parse_command_line(p, argv)
    exp = a.exp or str(DEFAULT_EXP)
    cfg = load_experiment_or_exit("report", exp, a.opts)
    work_dir = Path(a.work_dir).expanduser().resolve() if a.work_dir else default_work_dir(cfg)
    device = choose_device(cfg)
    build_report(cfg, work_dir, device=device, exp_path=str(Path(exp).resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
