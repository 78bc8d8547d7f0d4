"""HTML report of an experiment (`make report`): ``WORK_DIR/report/index.html``.

Not a managed stage: it always regenerates (in a few seconds), from whatever stages have run,
and lists the missing ones. A static page that opens from disk: images are PNG files next to
it (relative links). Built in a temporary folder inside ``WORK_DIR`` and renamed into place.

Content: stage status (fresh / stale / missing via :func:`pipeline.stage.stage_status`, wall
times); classifier mAP and per-class AP; seed precision / recall / mIoU and pseudo-mask mIoU;
val mIoU with and without CRF and per-class IoU; the fully supervised upper bound and the
WSSS / upper-bound ratio; the submission check; localisation CorLoc; the ablation table
(``WORK_DIR/ablation/results.json``); training curves of ``classifier``, ``segmenter`` and
``upper_bound`` (mmengine scalars); per-class IoU bars (WSSS vs upper bound); a grid of
trainaug examples: image | heatmap | λ | saliency | seeds | grown seeds | prediction | GT (the
prediction comes from running the trained segmenter on those images; the grown seeds are DSRG
region growing of the seeds on that prediction, an illustration: in training they are grown
on the output grid with the network of the moment); and the resolved experiment config.

``python -m stages.report [--exp CFG] [--work-dir D] [--opts ...]`` (``--force`` is accepted and
ignored). ``make report``.
"""
from __future__ import annotations

import argparse
import html
import importlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.report_plots import plot_iou_bars, plot_training_curves, read_scalars
from pipeline.stage import _plain, config_digests, read_manifest, write_json_atomic
from stages.ablation import _get
from stages.common import stage_upstream

STAGES = ("data", "classifier", "heatmaps", "saliency", "seeds", "segmenter", "upper_bound",
          "eval", "submit", "localize")
TRAINING = ("classifier", "segmenter", "upper_bound")
N_EXAMPLES = 6
MIN_TILE, MAX_TILE = 128, 240       # example tile heights (px)

CSS = """
body{font-family:sans-serif;margin:1.5em auto;max-width:1300px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:middle}
th{background:#f2f2f2} td.l,th.l{text-align:left}
.fresh{color:#1a7f37}.stale{color:#b35900}.missing,.blocked,.error{color:#c00}
.note{color:#555;font-size:.9em} pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em}
td img{image-rendering:pixelated} .sw{display:inline-block;width:1em;height:1em;vertical-align:middle;
border:1px solid #888;margin:0 .2em 0 .8em}
"""


# ----------------------------------------------------------------------------- formatting ---
def esc(x) -> str:
    return html.escape(str(x))


def pct(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return esc(v)
    return "–" if math.isnan(f) else f"{100 * f:.{digits}f}"


def table(headers, rows, left: int = 1) -> str:
    """HTML table; the first ``left`` columns are left-aligned; cells are pre-escaped strings."""
    def cells(tag, vals):
        return "".join(f"<{tag}{' class=l' if i < left else ''}>{v}</{tag}>" for i, v in enumerate(vals))
    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><tr>{cells('th', [esc(h) for h in headers])}</tr>{body}</table>"


# ---------------------------------------------------------------------------------- stages ---
def stage_states(cfg, work_dir: Path) -> list[dict]:
    """One entry per stage: manifest (or None), state and reason."""
    from pipeline.stage import stage_status
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


def stages_html(states) -> str:
    rows = []
    for s in states:
        m = s["manifest"] or {}
        counts = ", ".join(f"{k}={v}" for k, v in (m.get("counts") or {}).items())
        rows.append([esc(s["stage"]), f"<span class={esc(s['state'])}>{esc(s['state'])}</span>",
                     esc(s["reason"]), esc(m.get("started", "")),
                     "" if "wall_time_s" not in m else f"{m['wall_time_s']:.1f}",
                     esc(m.get("device", "")), esc(counts)])
    missing = [s["stage"] for s in states if s["manifest"] is None]
    note = ("<p class=note>Missing stages: " + ", ".join(f"<b>{esc(m)}</b>" for m in missing)
            + " (run <code>make &lt;stage&gt;</code> with the same EXP/WORK_DIR; sections below "
              "that need them are left out).</p>") if missing else "<p class=note>All stages have run.</p>"
    return note + table(["stage", "status", "reason", "started", "wall time (s)", "device", "counts"],
                        rows, left=4)


# ---------------------------------------------------------------------------------- tables ---
def classifier_html(met) -> str:
    if not met:
        return "<p class=note>classifier: missing.</p>"
    rows = [["trained pooling", esc(met.get("pooling", "?")), pct(met.get("val_mAP"))]]
    rows += [[f"{esc(k)} inference", "(same weights)", pct(v)] for k, v in (met.get("other_poolings") or {}).items()]
    out = "<h3>Classification (val)</h3>" + table(["", "pooling", "mAP (%)"], rows, left=2)
    ap = met.get("val_AP") or {}
    if ap:
        out += table(["class"] + list(ap), [["AP (%)"] + [pct(v) for v in ap.values()]])
    return out


def seeds_html(met, sal) -> str:
    if not met:
        return "<p class=note>seeds: missing.</p>"
    s, p = met.get("seeds") or {}, met.get("pseudo") or {}
    rows = [["seeds", pct(s.get("precision")), pct(s.get("recall")), pct(s.get("fraction_labelled")),
             pct(s.get("mIoU"))], ["pseudo-masks (argmax)", "", "", "100.00", pct(p.get("mIoU"))]]
    out = "<h3>Seeds and pseudo-masks (trainaug images with GT)</h3>" + table(
        ["", "precision (%)", "recall (%)", "labelled pixels (%)", "mIoU (%)"], rows)
    names = list((s.get("IoU") or p.get("IoU") or {}))
    if names:
        out += table(["IoU (%)"] + names, [[lab] + [pct((d.get("IoU") or {}).get(c)) for c in names]
                                           for lab, d in (("seeds", s), ("pseudo-masks", p)) if d])
    if sal:
        out += (f"<p class=note>saliency ({esc(sal.get('source', '?'))}): MAE {sal.get('MAE', float('nan')):.4f}, "
                f"max F-measure {sal.get('maxF', float('nan')):.4f}</p>" if sal.get("MAE") is not None else "")
    return out


def _final(met) -> dict | None:
    if not met:
        return None
    return met.get("crf") or met.get("no_crf")


def segmentation_html(ev, ub, seg) -> str:
    out = "<h3>Semantic segmentation (val)</h3>"
    rows = []
    for label, m in (("WSSS (eval)", ev), ("upper bound (GT masks)", ub)):
        if m:
            rows.append([label, pct(m.get("mIoU_no_crf")), pct(m.get("mIoU_crf")), pct(m.get("mIoU")),
                         pct(_get(m, "no_crf", "aAcc")), pct(_get(m, "no_crf", "mAcc"))])
        else:
            rows.append([label, "missing", "", "", "", ""])
    if seg:
        rows.append(["segmenter quick val (1 scale, no CRF)", pct(seg.get("val_mIoU")), "", "", "", ""])
    out += table(["", "mIoU no CRF (%)", "mIoU CRF (%)", "mIoU final (%)", "pixel acc. no CRF (%)",
                  "mean acc. no CRF (%)"], rows)
    if ev and ub and ev.get("mIoU") is not None and ub.get("mIoU"):
        ratio = f"{ev['mIoU'] / ub['mIoU']:.3f}"
        r2 = ("" if not (ev.get("mIoU_no_crf") is not None and ub.get("mIoU_no_crf"))
              else f" (without CRF {ev['mIoU_no_crf'] / ub['mIoU_no_crf']:.3f})")
        out += f"<p><b>WSSS / upper bound = {ratio}</b>{r2}</p>"
    else:
        out += "<p class=note>WSSS / upper bound: needs both <code>eval</code> and <code>upper_bound</code>.</p>"
    cols = [(f"{lab} {'CRF' if key == 'crf' else 'no CRF'}", _get(m, key))
            for lab, m in (("WSSS", ev), ("upper bound", ub)) if m for key in ("no_crf", "crf") if _get(m, key)]
    if cols:
        names = cols[0][1]["class_names"]
        rows = [[esc(c)] + [pct(s["IoU"][i]) if i < len(s["IoU"]) else "–" for _, s in cols]
                for i, c in enumerate(names)]
        out += table(["class IoU (%)"] + [h for h, _ in cols], rows)
    return out


def submit_html(man, work_dir: Path) -> str:
    if not man:
        return "<p class=note>submit: missing (make submit).</p>"
    m, c = man.get("metrics", {}), man.get("counts", {})
    tgz = work_dir / "submit" / "results.tgz"
    rows = [["predictions", esc(c.get("images", "?"))], ["validated", esc(m.get("validated", False))],
            ["archived", esc(c.get("archived", "?"))],
            ["archive", f"<a href='../submit/results.tgz'>{esc(tgz)}</a>" if tgz.is_file() else "missing"]]
    if m.get("mIoU") is not None:
        rows.append(["held-out test mIoU (%)", pct(m["mIoU"])])
    return "<h3>Test submission</h3>" + table(["", ""], rows)


def localize_html(met) -> str:
    if not met:
        return ""
    methods = list((met.get("corloc") or {}))
    rows = [[esc(k), pct(met["corloc"].get(k)), pct(_get(met, "top1_loc", k))] for k in methods]
    return ("<h3>Localisation (val, CorLoc)</h3>" + table(["method", "CorLoc (%)", "top-1 loc (%)"], rows)
            + f"<p class=note>top-1 classification {pct(met.get('top1_cls'))} %; IoU threshold "
              f"{esc(met.get('iou_threshold', 0.5))}</p>")


def ablation_html(work_dir: Path) -> str:
    path = work_dir / "ablation" / "results.json"
    if not path.is_file():
        return "<p class=note>No ablation results (<code>make ablation</code>).</p>"
    from stages.ablation import _fmt, table_columns

    res = json.loads(path.read_text())
    cols = table_columns(res)
    rows = [[esc(_fmt(r.get(k), kind)) for k, _, kind in cols] for r in res.get("rows", [])]
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
    from pipeline.models.checkpoint import load_model

    net, _ = load_model(work_dir / "segmenter" / "model.pth", kind="segmenter")
    net = net.to(device).eval()
    ev = cfg.get("eval") or {}
    size = ev.get("size", 321)
    size = None if isinstance(size, str) else size
    probs = predict_probs(net, images, scales=(1.0,), flip=False, size=size, device=device, batch_size=8)
    preds = [p.argmax(0).astype(np.uint8) for p in probs]
    grown = []
    dsrg = (cfg.get("segmenter") or {}).get("dsrg") or {}
    fg, bg = float(dsrg.get("fg_threshold", 0.85)), float(dsrg.get("bg_threshold", 0.99))
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
    from pipeline.heatmaps import load_heatmap, normalise_per_class
    from pipeline.visualize import blend, blank, grey_rgb, heatmap_rgb, label_rgb, save_rgb
    from pipeline.voc import read_label_png, voc_palette

    if not man["data"]:
        return "<p class=note>No examples: the data stage is missing.</p>"
    index = DatasetIndex.load(work_dir / "data")
    heat_dir, sal_dir, seed_dir = (work_dir / s for s in ("heatmaps", "saliency", "seeds"))
    have = {k: bool(man[k]) for k in ("heatmaps", "saliency", "seeds", "segmenter")}
    split = (_get(man["heatmaps"], "config", "split") or "trainaug") if have["heatmaps"] else "trainaug"
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
            from pipeline.saliency import read_saliency
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
        else:
            curves.append(f"<p class=note>{esc(stage)}: no training log "
                          f"({'stage missing' if not man[stage] else 'no scalars.json'}).</p>")
    curves.append(f"<p class=note>TensorBoard: <code>tensorboard --logdir {esc(work_dir)}</code></p>")
    ev, ub = (man[s]["metrics"] if man[s] else None for s in ("eval", "upper_bound"))
    series, names = {}, None
    for label, m in (("WSSS", ev), ("upper bound", ub)):
        s = _final(m)
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
    tmp = Path(tempfile.mkdtemp(prefix=".report.tmp-", dir=work_dir))
    try:
        states = stage_states(cfg, work_dir)
        man = {s["stage"]: s["manifest"] for s in states}
        met = {k: (v or {}).get("metrics") for k, v in man.items()}
        curves, bars, n_png = figures_html(work_dir, man, tmp)
        try:
            examples = examples_html(cfg, work_dir, man, tmp, device)
        except Exception as exc:  # noqa: BLE001 - a report never fails on one section
            examples = f"<p class=error>examples failed: {esc(type(exc).__name__)}: {esc(exc)}</p>"
        try:
            config_text = cfg.pretty_text
        except Exception:  # noqa: BLE001
            config_text = json.dumps(_plain(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)),
                                     indent=2, default=str)
        name = cfg.get("experiment", {}).get("name", work_dir.name)
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
        _swap(tmp, work_dir / "report")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    out = work_dir / "report" / "index.html"
    log(f"[report] {out} ({time.time() - t0:.1f}s); missing stages: {', '.join(missing) or 'none'}")
    return out


def _swap(src: Path, dst: Path) -> None:
    os.chmod(src, 0o755)                  # mkdtemp makes it 0700
    trash = dst.with_name(f".report.old{os.getpid()}")
    if dst.exists():
        os.replace(dst, trash)
    os.replace(src, dst)
    shutil.rmtree(trash, ignore_errors=True)


def main(argv=None) -> int:
    from mmengine.config import DictAction

    from stages.common import DEFAULT_EXP, default_work_dir, load_experiment

    p = argparse.ArgumentParser(prog="python -m stages.report", description=__doc__.split("\n")[0])
    p.add_argument("--exp", default=None, help="experiment config file")
    p.add_argument("--work-dir", default=None, help="work dir (default work_dirs/<experiment>)")
    p.add_argument("--opts", nargs="+", action=DictAction, default={}, help="config overrides")
    p.add_argument("--force", action="store_true", help="ignored (the report always regenerates)")
    a = p.parse_args(argv)
    exp = a.exp or str(DEFAULT_EXP)
    cfg = load_experiment(exp, a.opts)
    work_dir = Path(a.work_dir).expanduser().resolve() if a.work_dir else default_work_dir(cfg)
    import torch

    device = "cuda" if torch.cuda.is_available() and str(cfg.experiment.get("device", "auto")) != "cpu" else "cpu"
    build_report(cfg, work_dir, device=device, exp_path=str(Path(exp).resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
