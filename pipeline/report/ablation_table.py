"""The ablation's results table: columns, cell formatting, markdown (also used by the report).

``results`` = the dict that ``make ablation`` writes to ``WORK_DIR/ablation/results.json``:
``{"rows": [{column key: value}], "full": bool, "work_dir", "generated", ...}``.
"""
from __future__ import annotations

__all__ = ["COLUMNS", "FULL_COLUMNS", "STATUS_COLUMN", "nested_get", "format_cell",
           "table_columns", "format_markdown"]

# (key, title, kind) of the table; kind "pct" prints 100·v with 2 decimals
COLUMNS = [
    ("variant", "variant", "text"),
    ("label", "description", "text"),
    ("pooling", "pooling (train → inference)", "text"),
    ("mAP", "cls mAP", "pct"),
    ("seed_precision", "seed precision", "pct"),
    ("seed_recall", "seed recall", "pct"),
    ("seed_mIoU", "seed mIoU", "pct"),
    ("seed_labelled", "labelled px", "pct"),
    ("pseudo_mIoU", "pseudo-mask mIoU", "pct"),
]
FULL_COLUMNS = [
    ("mIoU_no_crf", "val mIoU (no CRF)", "pct"),
    ("mIoU_crf", "val mIoU (CRF)", "pct"),
]
STATUS_COLUMN = ("status", "status", "text")


def nested_get(d, *keys):
    """``d[k1][k2]…``, or None where a level is missing or None."""
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def format_cell(v, kind: str) -> str:
    if v is None:
        return "–"
    if kind == "pct":
        try:
            f = float(v)
        except (TypeError, ValueError):
            return str(v)
        return "nan" if f != f else f"{100 * f:.2f}"
    return str(v)


def table_columns(results: dict) -> list:
    full = results.get("full") or any(r.get("mIoU_no_crf") is not None for r in results["rows"])
    return COLUMNS + (FULL_COLUMNS if full else []) + [STATUS_COLUMN]


def format_markdown(results: dict) -> str:
    cols = table_columns(results)
    lines = ["| " + " | ".join(t for _, t, _ in cols) + " |",
             "|" + "|".join("---" if k in ("variant", "label", "pooling", "status") else "---:"
                            for k, _, _ in cols) + "|"]
    for r in results["rows"]:
        lines.append("| " + " | ".join(format_cell(r.get(k), kind).replace("|", "/") for k, _, kind in cols) + " |")
    notes = [f"Percentages. Work dir {results['work_dir']}; generated {results['generated']}."]
    if any(r.get("classifier_from") for r in results["rows"]):
        notes.append("Rows with classifier_from reuse that variant's trained classifier (CAM and λ do "
                     "not depend on the pooling rule, so their seeds equal the source row's; mAP is "
                     "scored with the inference pooling).")
    linked = [r["variant"] for r in results["rows"]
              if r.get("classifier_link") and not r.get("classifier_from")]
    if linked:
        notes.append(f"{', '.join(linked)}: same classifier config as the main work dir, whose "
                     "trained classifier is reused (linked).")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
