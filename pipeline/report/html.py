"""HTML pieces of the experiment report (``stages/report.py``): escaping, percentages, tables
and one renderer per report section, each taking the stage manifests' metrics dicts."""
from __future__ import annotations

import html
import math
from pathlib import Path

from pipeline.report.ablation_table import nested_get

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


def final_scores(met) -> dict | None:
    """The eval metrics' table of the final prediction: with CRF when scored, else without."""
    if not met:
        return None
    return met.get("crf") or met.get("no_crf")


def segmentation_html(ev, ub, seg) -> str:
    out = "<h3>Semantic segmentation (val)</h3>"
    rows = []
    for label, m in (("WSSS (eval)", ev), ("upper bound (GT masks)", ub)):
        if m:
            rows.append([label, pct(m.get("mIoU_no_crf")), pct(m.get("mIoU_crf")), pct(m.get("mIoU")),
                         pct(nested_get(m, "no_crf", "aAcc")), pct(nested_get(m, "no_crf", "mAcc"))])
        else:
            rows.append([label, "missing", "", "", "", ""])
    if seg:
        rows.append(["segmenter quick val (1 scale, no CRF)", pct(seg.get("val_mIoU")), "", "", "", ""])
        if seg.get("train_mIoU") is not None:
            rows.append([f"segmenter on the {seg.get('train_scored', '?')} pseudo-mask images (train, "
                         "1 scale, no CRF)", pct(seg["train_mIoU"]), "", "", "", ""])
        if seg.get("pseudo_mIoU") is not None:
            rows.append(["argmax pseudo-masks (same images)", pct(seg["pseudo_mIoU"]), "", "", "", ""])
    out += table(["", "mIoU no CRF (%)", "mIoU CRF (%)", "mIoU final (%)", "pixel acc. no CRF (%)",
                  "mean acc. no CRF (%)"], rows)
    if ev and ub and ev.get("mIoU") is not None and ub.get("mIoU"):
        ratio = f"{ev['mIoU'] / ub['mIoU']:.3f}"
        r2 = ("" if not (ev.get("mIoU_no_crf") is not None and ub.get("mIoU_no_crf"))
              else f" (without CRF {ev['mIoU_no_crf'] / ub['mIoU_no_crf']:.3f})")
        out += f"<p><b>WSSS / upper bound = {ratio}</b>{r2}</p>"
    else:
        out += "<p class=note>WSSS / upper bound: needs both <code>eval</code> and <code>upper_bound</code>.</p>"
    if seg and seg.get("train_below_pseudo"):
        out += ("<p class=error>The segmenter scores below its own argmax pseudo-masks on the training "
                "images: see the DSRG diagnostics under Training curves.</p>")
    if seg and seg.get("val_pred_fg") is not None:
        out += (f"<p class=note>Predicted foreground (segmenter, 1 scale, no CRF): "
                f"{pct(seg.get('train_pred_fg'))} % of the pseudo-mask images' pixels (GT "
                f"{pct(seg.get('train_gt_fg'))} %), {pct(seg['val_pred_fg'])} % of val pixels (GT "
                f"{pct(seg.get('val_gt_fg'))} %).</p>")
    cols = [(f"{lab} {'CRF' if key == 'crf' else 'no CRF'}", nested_get(m, key))
            for lab, m in (("WSSS", ev), ("upper bound", ub)) if m for key in ("no_crf", "crf") if nested_get(m, key)]
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
    rows = [[esc(k), pct(met["corloc"].get(k)), pct(nested_get(met, "top1_loc", k))] for k in methods]
    return ("<h3>Localisation (val, CorLoc)</h3>" + table(["method", "CorLoc (%)", "top-1 loc (%)"], rows)
            + f"<p class=note>top-1 classification {pct(met.get('top1_cls'))} %; IoU threshold "
              f"{esc(met.get('iou_threshold', 0.5))}</p>")
