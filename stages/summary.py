"""Print the final summary of an experiment from its stage manifests (`make summary`).

Not a stage: it only reads ``WORK_DIR/<stage>/manifest.json`` and never writes.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.data.holdout import PARTS
from pipeline.runtime.stage import read_manifest
from stages.common import default_work_dir, load_experiment_or_exit, parse_command_line

ORDER = ("data", "classifier", "heatmaps", "saliency", "seeds", "segmenter", "upper_bound",
         "eval", "submit", "localize", "report")


def _pct(v) -> str:
    return "   n/a" if v is None else f"{100 * float(v):6.2f}"


def summarize(work_dir: Path) -> str:
    man = {s: read_manifest(work_dir / s) for s in ORDER}
    m = {s: (v or {}).get("metrics", {}) for s, v in man.items()}
    lines = [f"Summary of {work_dir}", "", "stage          wall time"]
    for s in ORDER:
        wall = "missing" if man[s] is None else "%8.1f s" % man[s]["wall_time_s"]
        lines.append(f"  {s:<12} {wall}")
    seeds = m["seeds"].get("seeds", {})
    ev, ub = m["eval"], m["upper_bound"]
    wsss = ev.get("mIoU")
    upper = ub.get("mIoU")
    ratio = None if wsss is None or not upper else wsss / upper
    lines += [
        "",
        f"classifier val mAP (%)            {_pct(m['classifier'].get('val_mAP'))}",
        f"seeds precision / recall (%)      {_pct(seeds.get('precision'))} / {_pct(seeds.get('recall'))}",
        f"seeds mIoU of labelled pixels (%) {_pct(seeds.get('mIoU'))}   labelled "
        f"{_pct(seeds.get('fraction_labelled'))} % of pixels",
        f"pseudo-mask mIoU (%)              {_pct(m['seeds'].get('pseudo', {}).get('mIoU'))}",
        f"segmenter on those images (%)     {_pct(m['segmenter'].get('train_mIoU'))}   (1 scale, no CRF)"
        + ("   BELOW the pseudo-masks" if m["segmenter"].get("train_below_pseudo") else ""),
        f"predicted foreground train / val  {_pct(m['segmenter'].get('train_pred_fg'))} / "
        f"{_pct(m['segmenter'].get('val_pred_fg'))} % of pixels (GT "
        f"{_pct(m['segmenter'].get('train_gt_fg')).strip()} / {_pct(m['segmenter'].get('val_gt_fg')).strip()} %)",
        f"val mIoU no CRF / CRF (%)         {_pct(ev.get('mIoU_no_crf'))} / {_pct(ev.get('mIoU_crf'))}",
        f"upper bound (GT masks) mIoU (%)   {_pct(upper)}",
        f"WSSS / upper bound                {'   n/a' if ratio is None else f'{ratio:6.3f}'}",
        *_parts_lines(ev, ub),
        "test submission                   " + (
            "missing" if man["submit"] is None else
            f"{man['submit']['counts'].get('archived', 0)} files validated -> "
            f"{work_dir / 'submit' / 'results.tgz'}"
            + ("" if m["submit"].get("mIoU") is None else
               f" (held-out test mIoU {_pct(m['submit']['mIoU']).strip()} %)")),
        "report                            " + (
            str(work_dir / "report" / "index.html") if (work_dir / "report" / "index.html").is_file()
            else "missing (make report)"),
    ]
    return "\n".join(lines)


def _parts_lines(ev: dict, ub: dict) -> list[str]:
    """val mIoU without / with CRF and the ratio (with CRF) on the select / report halves
    (pipeline.data.holdout), when the eval metrics hold them (eval runs from before the parts
    have none)."""
    lines, parts = [], ev.get("parts") or {}
    for name, part in ((n, parts[n]) for n in PARTS if n in parts):
        upper = ((ub.get("parts") or {}).get(name) or {}).get("mIoU")
        ratio = "" if part.get("mIoU") is None or not upper else f"   ratio {part['mIoU'] / upper:.3f}"
        lines.append(f"  {name} half of val ({part['images']:>4} images)  {_pct(part.get('mIoU_no_crf'))} / "
                     f"{_pct(part.get('mIoU_crf'))}{ratio}")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m stages.summary", description=__doc__)
    p.add_argument("--exp", default=None)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--opts", nargs="*", default=None, help="ignored (accepted for Make symmetry)")
    p.add_argument("--force", action="store_true", help="ignored")
    a = parse_command_line(p, argv)
    from stages.common import DEFAULT_EXP
    work_dir = (Path(a.work_dir) if a.work_dir
                else default_work_dir(load_experiment_or_exit("summary", a.exp or DEFAULT_EXP)))
    print(summarize(work_dir.resolve()))


if __name__ == "__main__":
    main()
