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
import json
import math
import pprint
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.report.ablation_table import format_cell, nested_get, table_columns
from pipeline.report.html import (CSS, classifier_html, esc, final_scores, localize_html,
                                  seeds_html, segmentation_html, stages_html, submit_html, table)
from pipeline.report.plots import (plot_dsrg_diagnostics, plot_iou_bars, plot_training_curves,
                                   read_scalars)
from pipeline.data.io_utils import atomic_dir, write_json_atomic
from pipeline.runtime.stage import config_digests, read_manifest
from stages.common import add_opts_argument, expand_opts_line, stage_upstream

STAGES = ("data", "classifier", "heatmaps", "saliency", "seeds", "segmenter", "upper_bound",
          "eval", "submit", "localize")
TRAINING = ("classifier", "segmenter", "upper_bound")
N_EXAMPLES = 6
DSRG_NOTE = ("Per logging interval, on the training batches' output grid: cells labelled "
             "background / foreground by the seeds (cov_*_before) and after region growing "
             "(cov_*_after), cells predicted foreground (pred_fg), cells confident enough to grow "
             "(conf_*), and the two seeding-loss terms. Markers: predicted-foreground fraction "
             "of the final segmenter on the pseudo-mask images and on val (1 scale, no CRF); "
             "grey lines: their GT foreground fractions. A collapse to background shows as "
             "cov_bg_after → 1 and pred_fg → 0.")
MIN_TILE, MAX_TILE = 128, 240       # example tile heights (px)

# ---------------------------------------------------------------------------------- stages ---
def stage_states(cfg, work_dir: Path) -> list[dict]:
    """One entry per stage: manifest (or None), state and reason."""
    from pipeline.runtime.stage import stage_status
    from stages.ablation import stage_section

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


def ablation_html(work_dir: Path) -> str:
    path = work_dir / "ablation" / "results.json"
    if not path.is_file():
        return "<p class=note>No ablation results (<code>make ablation</code>).</p>"
    res = json.loads(path.read_text())
    cols = table_columns(res)
    rows = [[esc(format_cell(r.get(k), kind)) for k, _, kind in cols] for r in res.get("rows", [])]
    return (table([t for _, t, _ in cols], rows, left=3)
            + f"<p class=note>Percentages; generated {esc(res.get('generated', '?'))}; variants in "
              f"{esc(work_dir / 'ablation')}.</p>")


# ------------------------------------------------------------------------------- examples ---
def _tile(img: np.ndarray, smooth: bool) -> np.ndarray:
    """Scale a tile to a height in [MIN_TILE, MAX_TILE] (nearest-neighbour for label maps and
    small images, so pixels stay visible)."""
    import cv2
    h, w = img.shape[:2]
    if h < MIN_TILE:
        f = int(math.ceil(MIN_TILE / h))
        return cv2.resize(img, (w * f, h * f), interpolation=cv2.INTER_NEAREST)
    if h > MAX_TILE:
        size = (max(1, round(w * MAX_TILE / h)), MAX_TILE)
        return cv2.resize(img, size, interpolation=cv2.INTER_AREA if smooth else cv2.INTER_NEAREST)
    return img


def pick_examples(ids: list[str], n: int, has_gt) -> list[str]:
    """``n`` ids spread over the list, preferring ids with a GT mask."""
    pool = [i for i in ids if has_gt(i)] or list(ids)
    if len(pool) <= n:
        return pool
    return [pool[round(k * (len(pool) - 1) / (n - 1))] for k in range(n)] if n > 1 else pool[:1]


def _segmenter_outputs(cfg, work_dir, index, ids, images, seeds, device):
    """Predictions (argmax of P) and grown seeds of ``ids`` with the trained segmenter."""
    import torch

    from pipeline.growing import grow_seeds
    from pipeline.inference import predict_probs
    from pipeline.runtime.checkpoint import load_model

    net, _ = load_model(work_dir / "segmenter" / "model.pth", kind="segmenter")
    net = net.to(device).eval()
    size = cfg.eval.size if cfg.eval is not None else None      # "original" / None: own size
    probs = predict_probs(net, images, scales=(1.0,), flip=False, size=size, device=device,
                          batch_size=8)
    preds = [p.argmax(0).astype(np.uint8) for p in probs]
    grown = []
    fg, bg = cfg.segmenter.dsrg.fg_threshold, cfg.segmenter.dsrg.bg_threshold
    for img_id, p, s in zip(ids, probs, seeds):
        if s is None:
            grown.append(None)
            continue
        C = p.shape[0]
        cues = np.stack([s == c for c in range(C)])[None]
        classes = np.zeros((1, C), bool)
        classes[0, [0] + [c for c in index.labels(img_id) if c < C]] = True
        g = grow_seeds(torch.from_numpy(p[None]), torch.from_numpy(cues), torch.from_numpy(classes),
                       fg, bg)[0].numpy()
        lab = np.where(g.any(0), (g * (1.0 + p)).argmax(0), 255).astype(np.uint8)
        known = s != 255
        lab[known] = s[known]
        grown.append(lab)
    return preds, grown, (fg, bg)


def examples_html(cfg, work_dir: Path, man: dict, out_dir: Path, device: str, n: int = N_EXAMPLES) -> str:
    from pipeline.data.index import DatasetIndex
    from pipeline.data.files import load_heatmap
    from pipeline.heatmaps import normalise_per_class
    from pipeline.data.files import save_rgb
    from pipeline.visualize import blank, blend, grey_rgb, heatmap_rgb, label_rgb
    from pipeline.data.files import read_label_png
    from pipeline.voc import voc_palette

    if not man["data"]:
        return "<p class=note>No examples: the data stage is missing.</p>"
    index = DatasetIndex.load(work_dir / "data")
    heat_dir, sal_dir, seed_dir = (work_dir / s for s in ("heatmaps", "saliency", "seeds"))
    have = {k: bool(man[k]) for k in ("heatmaps", "saliency", "seeds", "segmenter")}
    split = (nested_get(man["heatmaps"], "config", "split") or "trainaug") if have["heatmaps"] else "trainaug"
    ids = index.ids(split)
    if have["heatmaps"] and have["seeds"]:
        ids = [i for i in ids if (heat_dir / "maps" / f"{i}.npz").is_file()
               and (seed_dir / "labels" / f"{i}.png").is_file()]
    ids = pick_examples(ids, n, lambda i: index.mask_path(i) is not None)
    if not ids:
        return "<p class=note>No examples: no images with heatmaps and seeds.</p>"
    images = [index.read_image(i) for i in ids]
    seeds = [read_label_png(seed_dir / "labels" / f"{i}.png") if have["seeds"] else None for i in ids]
    notes, preds, grown = [], None, None
    if have["segmenter"]:
        try:
            preds, grown, (fg, bg) = _segmenter_outputs(cfg, work_dir, index, ids, images, seeds, device)
            if have["seeds"]:
                notes.append(f"grown seeds: DSRG region growing (thresholds {fg}/{bg}) of the seeds "
                             "on the final segmenter's P at image resolution (an illustration; "
                             "training grows on the output grid with the network of the moment).")
        except Exception as exc:  # noqa: BLE001
            notes.append(f"segmenter predictions unavailable: {type(exc).__name__}: {exc}")
    cols = ["image"]
    cols += ["heatmap", "λ"] if have["heatmaps"] else []
    cols += ["saliency"] if have["saliency"] else []
    cols += ["seeds"] if have["seeds"] else []
    cols += ["grown seeds"] if grown is not None and have["seeds"] else []
    cols += ["prediction"] if preds is not None else []
    cols += ["GT"]
    omitted = [c for c in ("heatmap", "λ", "saliency", "seeds", "grown seeds", "prediction") if c not in cols]
    if omitted:
        why = {"heatmap": "heatmaps", "λ": "heatmaps", "saliency": "saliency", "seeds": "seeds",
               "grown seeds": "segmenter + seeds", "prediction": "segmenter"}
        notes.append("Columns left out: " + ", ".join(f"{c} (needs {why[c]})" for c in omitted) + ".")
    ex_dir = out_dir / "examples"
    rows = []
    for k, img_id in enumerate(ids):
        img, hw = images[k], images[k].shape[:2]
        tiles = {"image": img}
        if have["heatmaps"]:
            hm = load_heatmap(heat_dir / "maps" / f"{img_id}.npz")
            cam = normalise_per_class(hm["cam"])
            heat = cam.max(0) if cam.shape[0] else np.zeros(hw, np.float32)
            tiles["heatmap"] = blend(img, heatmap_rgb(heat), 0.6)
            tiles["λ"] = heatmap_rgb(normalise_per_class(hm["lam"])) if hm["lam"] is not None else blank(hw)
        if have["saliency"]:
            from pipeline.data.files import read_saliency
            tiles["saliency"] = grey_rgb(read_saliency(sal_dir / "maps" / f"{img_id}.png", size=hw))
        if have["seeds"]:
            tiles["seeds"] = label_rgb(seeds[k])
        if "grown seeds" in cols:
            tiles["grown seeds"] = label_rgb(grown[k]) if grown[k] is not None else blank(hw)
        if preds is not None:
            tiles["prediction"] = label_rgb(preds[k])
        gt = index.read_mask(img_id)
        tiles["GT"] = label_rgb(gt) if gt is not None else blank(hw, 255)
        cells = [f"{esc(img_id)}<br><span class=note>" + esc(", ".join(index.classes[c] for c in index.labels(img_id)))
                 + "</span>"]
        for j, c in enumerate(cols):
            name = f"{k:02d}_{j}.png"
            save_rgb(ex_dir / name, _tile(tiles[c], smooth=c in ("image", "heatmap", "λ", "saliency")))
            cells.append(f"<img src='examples/{name}' alt='{esc(c)} {esc(img_id)}'>")
        rows.append(cells)
    pal = voc_palette()
    legend = "".join(f"<span class=sw style='background:rgb{tuple(int(v) for v in pal[i])}'></span>{esc(c)}"
                     for i, c in enumerate(index.classes)) + \
        f"<span class=sw style='background:rgb{tuple(int(v) for v in pal[255])}'></span>unlabelled/ignore"
    return (f"<p class=note>{len(ids)} {esc(split)} images. " + " ".join(esc(n) for n in notes) + "</p>"
            + f"<p class=note>{legend}</p>" + table(["id"] + cols, rows, left=len(cols) + 1))


# --------------------------------------------------------------------------------- figures ---
def figures_html(work_dir: Path, man: dict, out_dir: Path) -> tuple[str, str, int]:
    """(training curves section, IoU bars section, number of PNGs)."""
    curves, n = [], 0
    for stage in TRAINING:
        recs = read_scalars(work_dir / stage / "train") if man[stage] or (work_dir / stage).is_dir() else []
        if recs and plot_training_curves(recs, f"{stage} ({len(recs)} logged iterations)",
                                         out_dir / f"curves_{stage}.png"):
            curves.append(f"<p><img src='curves_{stage}.png' alt='{stage} training curves'></p>")
            n += 1
            if plot_dsrg_diagnostics(recs, out_dir / f"dsrg_{stage}.png", f"{stage}: DSRG diagnostics",
                                     (man[stage] or {}).get("metrics")):
                curves.append(f"<p><img src='dsrg_{stage}.png' alt='{stage} DSRG diagnostics'></p>"
                              f"<p class=note>{DSRG_NOTE}</p>")
                n += 1
        else:
            curves.append(f"<p class=note>{esc(stage)}: no training log "
                          f"({'stage missing' if not man[stage] else 'no scalars.jsonl'}).</p>")
    curves.append(f"<p class=note>TensorBoard: <code>tensorboard --logdir {esc(work_dir)}</code></p>")
    ev, ub = (man[s]["metrics"] if man[s] else None for s in ("eval", "upper_bound"))
    series, names = {}, None
    for label, m in (("WSSS", ev), ("upper bound", ub)):
        s = final_scores(m)
        if s:
            names = names or s["class_names"]
            series[label] = s["IoU"]
    bars = "<p class=note>No per-class IoU yet (needs eval and/or upper_bound).</p>"
    if series and plot_iou_bars(names, series, out_dir / "iou_bars.png",
                                "per-class val IoU, final (CRF where enabled)"):
        bars = "<p><img src='iou_bars.png' alt='per-class IoU'></p>"
        n += 1
    return "".join(curves), bars, n


# ------------------------------------------------------------------------------------ main ---
def build_report(cfg, work_dir, device: str = "cpu", exp_path=None, log=print) -> Path:
    """Write ``work_dir/report/`` (atomically) and return the path of its ``index.html``."""
    t0 = time.time()
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    with atomic_dir(work_dir / "report", overwrite=True) as tmp:
        states = stage_states(cfg, work_dir)
        man = {s["stage"]: s["manifest"] for s in states}
        met = {k: (v or {}).get("metrics") for k, v in man.items()}
        curves, bars, n_png = figures_html(work_dir, man, tmp)
        try:
            examples = examples_html(cfg, work_dir, man, tmp, device)
        except Exception as exc:  # noqa: BLE001 - a report never fails on one section
            examples = f"<p class=error>examples failed: {esc(type(exc).__name__)}: {esc(exc)}</p>"
        config_text = "\n".join(f"{k} = {pprint.pformat(v, width=100, sort_dicts=False)}"
                                for k, v in cfg.raw.items())
        name = cfg.experiment.name or work_dir.name
        body = [
            f"<h1>WSSS experiment report: {esc(name)}</h1>",
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
        page = ("<!DOCTYPE html>\n<html lang=en><head><meta charset='utf-8'>"
                f"<title>WSSS report: {esc(name)}</title><style>{CSS}</style></head><body>\n"
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
    a = p.parse_args(expand_opts_line(argv))
    exp = a.exp or str(DEFAULT_EXP)
    cfg = load_experiment_or_exit("report", exp, a.opts)
    work_dir = Path(a.work_dir).expanduser().resolve() if a.work_dir else default_work_dir(cfg)
    device = choose_device(cfg)
    build_report(cfg, work_dir, device=device, exp_path=str(Path(exp).resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
