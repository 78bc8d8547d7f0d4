"""Checks the data stage runs before it publishes a dataset (pure Python + PIL).

* :func:`decode_failures` — every listed image decodes to the last pixel (a truncated or
  corrupt JPEG fails here, not in a later stage), in a pool of worker processes.
* :func:`splits_needed` / :func:`empty_needed_splits` — the splits the experiment's stages
  read (every ``split`` key of their config sections) are non-empty.
* :func:`split_problem` / :func:`decode_problem` — the data stage's messages for both.
"""
from __future__ import annotations

import multiprocessing as mp
from typing import Any, Iterable, Mapping

from PIL import Image

# stages whose split may be empty when the data is prepared (a warning instead of an error):
# a VOC-style tree without test.txt can run everything but the submission.
OPTIONAL_SPLIT_STAGES = frozenset({"submit"})


def decode_error(path: str) -> str | None:
    """None when ``path`` decodes completely, else ``"<path>: <reason>"``."""
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"{path}: {exc}"
    return None


def _pool(workers: int):
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn").Pool(workers)


def decode_failures(paths: Iterable[str], workers: int = 1) -> list[str]:
    """``decode_error`` of every path (in ``workers`` processes when > 1), failures only,
    in the order of ``paths``."""
    paths = [str(p) for p in paths]
    if workers > 1 and len(paths) > 1:
        with _pool(workers) as pool:
            results = pool.map(decode_error, paths, chunksize=max(1, min(64, len(paths) // (8 * workers))))
    else:
        results = [decode_error(p) for p in paths]
    return [r for r in results if r is not None]


def _split_keys(obj: Any, prefix: str) -> Iterable[tuple[str, str]]:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            key = f"{prefix}.{k}"
            if k == "split" and isinstance(v, str):
                yield key, v
            else:
                yield from _split_keys(v, key)


def splits_needed(cfg: Mapping, skip: Iterable[str] = ("data", "experiment", "ablation")) -> dict[str, list[str]]:
    """``{split: [config keys naming it]}`` over every section of the experiment config."""
    needed: dict[str, list[str]] = {}
    for section, value in cfg.items():
        if section in skip:
            continue
        for key, split in _split_keys(value, section):
            needed.setdefault(split, []).append(key)
    return needed


def empty_needed_splits(counts: Mapping[str, int],
                        needed: Mapping[str, list[str]]) -> tuple[dict[str, str], list[str]]:
    """``({split: error}, warnings)`` for the needed splits that are empty or unknown: an error
    when a stage outside :data:`OPTIONAL_SPLIT_STAGES` reads it, else a warning."""
    errors: dict[str, str] = {}
    warnings: list[str] = []
    for split, keys in sorted(needed.items()):
        if counts.get(split, 0) > 0:
            continue
        state = "is empty" if split in counts else "does not exist"
        line = f"split {split!r} {state} but {', '.join(keys)} need{'s' if len(keys) == 1 else ''} it"
        optional = all(k.split(".")[0] in OPTIONAL_SPLIT_STAGES for k in keys)
        if optional:
            warnings.append(line)
        else:
            errors[split] = line
    return errors, warnings


def split_problem(splits: Mapping[str, list], required: Mapping[str, list[str]], lists_dir,
                  warnings: list[str]) -> str | None:
    """The error for the required splits that are empty (None when there is none); the empty
    splits only ``submit`` reads are appended to ``warnings``."""
    empty, optional = empty_needed_splits({k: len(v) for k, v in splits.items()}, required)
    warnings.extend(optional)
    if not empty:
        return None
    files = ", ".join(f"{lists_dir}/{'train' if s == 'trainaug' else s}.txt" for s in empty)
    return "; ".join(empty.values()) + f": list image ids in {files}, or point those keys at another split"


def decode_problem(root, splits: Mapping[str, list], lists_dir, workers: int,
                   examples: int = 5) -> str | None:
    """The error for the listed ``<root>/JPEGImages/<id>.jpg`` that do not decode (None when
    every one does), naming up to ``examples`` of them."""
    listed = sorted({i for ids in splits.values() for i in ids})
    broken = decode_failures([f"{root}/JPEGImages/{i}.jpg" for i in listed], workers)
    if not broken:
        return None
    return (f"{len(broken)} of {len(listed)} listed images do not decode: " + "; ".join(broken[:examples])
            + f": replace them, or remove their ids from the lists in {lists_dir}")


def main(argv=None) -> int:
    """``python -m pipeline.data.validate DIR [--workers N]``: decode every ``*.jpg`` of ``DIR``,
    print the failures and the time taken (wall, and CPU per image of one process)."""
    import argparse
    import time
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m pipeline.data.validate", description=main.__doc__)
    p.add_argument("dir", help="folder of JPEGs (e.g. VOC2012/JPEGImages)")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    paths = sorted(Path(a.dir).glob("*.jpg"))
    cpu = time.process_time()
    for path in paths[: min(len(paths), 200)]:
        decode_error(str(path))                      # CPU cost of one process (warms the cache)
    cpu_ms = 1000 * (time.process_time() - cpu) / max(1, min(len(paths), 200))
    wall = time.perf_counter()
    failures = decode_failures(paths, a.workers)
    wall = time.perf_counter() - wall
    for line in failures:
        print(line)
    print(f"{len(paths)} images, {len(failures)} failures; {a.workers} workers: {wall:.2f} s wall; "
          f"{cpu_ms:.2f} ms CPU per image in one process")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
