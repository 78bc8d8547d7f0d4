"""Check a VOC test-server submission: ``python -m stages.check_submission [--dir DIR]``.

``DIR`` is the folder of ``<id>.png`` predictions, a folder holding
``results/VOC2012/Segmentation/<comp>_test_cls/``, or a ``.tgz`` archive (its member names are
checked too). Default: ``WORK_DIR/submit/results/VOC2012/Segmentation/<comp>_test_cls``.
The dataset index comes from ``WORK_DIR/data`` (``--exp`` / ``--work-dir`` as for the stages).
Every problem is printed with the offending file; the exit status is 1 when there is any
(2 when the check cannot run). ``make check-submission [DIR=...]``.
"""
from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

from pipeline.data.submission import SUBMISSION_SUBDIR, validate_submission
from stages.common import add_opts_argument, parse_command_line


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m stages.check_submission", description=__doc__.split("\n")[0])
    p.add_argument("--dir", default=None, help="predictions folder, results root or .tgz")
    p.add_argument("--exp", default=None, help="experiment config (for WORK_DIR and submit.comp)")
    p.add_argument("--work-dir", default=None, help="work dir holding data/ (dataset index)")
    add_opts_argument(p)
    p.add_argument("--force", action="store_true", help="ignored (accepted for make)")
    p.add_argument("--split", default=None, help="split the submission covers (default: submit.split or test)")
    p.add_argument("--comp", default=None, help="competition folder prefix (default: submit.comp or comp6)")
    return parse_command_line(p, argv)


def _extract(tgz: Path, dest: Path, sub: str) -> list[str]:
    """Extract ``tgz`` into ``dest``; return problems with its member names."""
    problems = []
    with tarfile.open(tgz, "r:*") as tar:
        safe = []
        for m in tar.getmembers():
            name = m.name[2:] if m.name.startswith("./") else m.name
            if m.isdir() and (sub.startswith(name.rstrip("/") + "/") or name.rstrip("/") == sub):
                continue
            if not m.isfile() or not name.startswith(sub + "/") or "/" in name[len(sub) + 1:]:
                problems.append(f"{tgz}: member {m.name!r} is not a file {sub}/<id>.png")
                continue
            m.name = name
            safe.append(m)
        tar.extractall(dest, members=safe)
    return problems


def check(result_path, index, split: str = "test", comp: str = "comp6") -> list[str]:
    """Problems of a submission (folder, results root or .tgz) for ``index``'s ``split``."""
    path = Path(result_path)
    sub = SUBMISSION_SUBDIR.format(comp=comp)
    args = (index.ids(split), index.root / "JPEGImages", index.num_classes)
    if path.is_file() and path.name.endswith((".tgz", ".tar.gz", ".tar")):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                problems = _extract(path, Path(tmp), sub)
            except (EOFError, zlib.error, tarfile.TarError) as exc:
                return [f"{path}: truncated or corrupt archive ({exc or type(exc).__name__}): "
                        "re-create it (make submit FORCE=1) or copy it again"]
            probs = validate_submission(Path(tmp) / sub, *args)
            return problems + [p.replace(tmp, f"{path}!") for p in probs]
    if (path / sub).is_dir():
        path = path / sub
    return validate_submission(path, *args)


def main(argv=None) -> int:
    from pipeline.data.index import DatasetIndex
    from stages.common import DEFAULT_EXP, default_work_dir, load_experiment_or_exit

    a = parse_args(argv)
    cfg = load_experiment_or_exit("check-submission", a.exp or DEFAULT_EXP, a.opts)
    work_dir = Path(a.work_dir).expanduser().resolve() if a.work_dir else default_work_dir(cfg)
    split = a.split or (cfg.submit.split if cfg.submit is not None else "test")
    comp = a.comp or (cfg.submit.comp if cfg.submit is not None else "comp6")
    try:
        index = DatasetIndex.load(work_dir / "data")
    except (FileNotFoundError, ValueError) as exc:
        print(f"check-submission: {exc}", file=sys.stderr)
        return 2
    target = Path(a.dir).expanduser() if a.dir else work_dir / "submit" / SUBMISSION_SUBDIR.format(comp=comp)
    try:
        problems = check(target, index, split, comp)
    except (KeyError, OSError, tarfile.TarError) as exc:
        print(f"check-submission: {exc}", file=sys.stderr)
        return 2
    n = len(index.ids(split))
    if problems:
        for p in problems:
            print(p)
        print(f"check-submission: {len(problems)} problem(s) in {target} ({n} {split} ids expected)",
              file=sys.stderr)
        return 1
    print(f"check-submission: OK, {target} holds valid predictions for all {n} {split} ids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
