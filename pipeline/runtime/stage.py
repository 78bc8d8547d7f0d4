"""Stage bookkeeping: manifests, freshness and atomic outputs (pure Python, no framework).

A stage ``S`` with upstream stages ``U1..Un`` writes ``WORK_DIR/S/`` containing its outputs and
``manifest.json``. The manifest records

* ``config_digest`` — digest of the config sections the stage reads, without the execution-only
  keys (:data:`EXECUTION_KEYS`: process pools and writer threads, whose outputs are the same
  for any count, and the stalled-loss warning's patience), so widening a pool on a bigger
  machine keeps the stage fresh,
* ``upstream`` — ``{name: run_digest}`` of the upstream manifests it consumed,
* ``run_digest`` — a fresh digest for every completed run (downstream stages record it),
* counts, metrics, timings.

A stage is *fresh* when its manifest exists, its config digest equals the current one and
every upstream ``run_digest`` is the one it consumed; a fresh stage is skipped (unless forced).
So re-running a stage (new ``run_digest``) makes every stage downstream of it stale, and
changing only ``seeds.*`` options leaves classifier and heatmaps fresh.

Outputs are written into ``WORK_DIR/.partial/S/`` and renamed to ``WORK_DIR/S/`` only when the
stage returns; an interrupted run leaves the previous complete output (if any) untouched. The
partial folder is reused on the next run (so training can resume from its checkpoints) only
when config and upstream digests are unchanged; otherwise it is wiped. A partial folder that
already holds its manifest (a run stopped between finishing and renaming) is published by
the next run. One run per stage and work dir at a time, and no swap while a downstream stage
reads the folder: :mod:`pipeline.runtime.locks`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.data.io_utils import json_safe, plain_data, replace_dir, write_json_atomic
from pipeline.runtime import locks

MANIFEST = "manifest.json"


class StageError(RuntimeError):
    """A stage cannot run (missing upstream, bad input); the message says what to do."""


class StageLockedError(StageError):
    """Another process runs the same stage in the same work dir (its PID is in the message)."""


def digest(obj: Any) -> str:
    """Stable short digest of a JSON-able object (keys sorted, tuples as lists)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


EXECUTION_KEYS = frozenset({"workers", "writers", "start_method", "stall_iters"})


def _without_execution_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_execution_keys(v) for k, v in obj.items() if k not in EXECUTION_KEYS}
    if isinstance(obj, list):
        return [_without_execution_keys(v) for v in obj]
    return obj


def config_digests(section: Any) -> tuple[str, str]:
    """``(digest, legacy digest)`` of a stage's config section: the first ignores
    :data:`EXECUTION_KEYS` (what new manifests store); the second is the digest of the whole
    section, which manifests written before that rule hold, so their stages stay fresh."""
    plain = plain_data(section)
    return digest(_without_execution_keys(plain)), digest(plain)


def read_manifest(stage_dir: str | os.PathLike) -> dict | None:
    """Return the manifest of a finished stage folder, or None when there is none."""
    path = Path(stage_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StageError(f"{path}: corrupt manifest ({exc}); delete the folder or re-run with FORCE=1") from exc


@dataclass
class StageContext:
    """What a stage's ``run(ctx)`` receives. ``out`` is the only folder it writes into."""

    name: str
    cfg: Any
    section: Any
    work_dir: Path
    out: Path
    device: str = "cpu"
    rank: int = 0
    world_size: int = 1
    resumed: bool = False
    upstream_manifests: dict = field(default_factory=dict)
    _log_file: Any = None

    def upstream_dir(self, name: str) -> Path:
        if name not in self.upstream_manifests:
            raise StageError(f"stage {self.name!r} did not declare {name!r} as upstream")
        return self.work_dir / name

    def log(self, msg: str) -> None:
        if self.rank != 0:
            return
        line = f"[{self.name}] {msg}"
        print(line, flush=True)
        if self._log_file is not None:
            self._log_file.write(line + "\n")
            self._log_file.flush()


def _upstream_state(work_dir: Path, name: str, upstream: tuple[str, ...]) -> dict[str, dict]:
    manifests = {}
    for up in upstream:
        man = read_manifest(work_dir / up)
        if man is None:
            raise StageError(f"stage {name!r} needs the output of stage {up!r} in {work_dir}: "
                             f"run `make {up}` (same EXP/WORK_DIR) first")
        manifests[up] = man
    return manifests


def stage_status(work_dir: str | os.PathLike, name: str, upstream: tuple[str, ...],
                 config_digest: str | tuple[str, ...]) -> tuple[str, str]:
    """Return ``(state, reason)`` with state in {'fresh', 'stale', 'missing', 'blocked'};
    ``config_digest``: the current digest, or the digests accepted (:func:`config_digests`)."""
    accepted = (config_digest,) if isinstance(config_digest, str) else tuple(config_digest)
    work_dir = Path(work_dir)
    man = read_manifest(work_dir / name)
    if man is None:
        return "missing", "never ran"
    try:
        ups = _upstream_state(work_dir, name, upstream)
    except StageError as exc:
        return "blocked", str(exc)
    if man.get("config_digest") not in accepted:
        return "stale", "its config changed"
    consumed = man.get("upstream", {})
    for up, m in ups.items():
        if consumed.get(up) != m.get("run_digest"):
            return "stale", f"upstream {up!r} re-ran"
    return "fresh", "config and upstream unchanged"


def _barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist  # only under torchrun
        dist.barrier()


def run_stage(name: str, upstream: tuple[str, ...], run_fn: Callable[[StageContext], dict],
              cfg: Any, section: Any, work_dir: str | os.PathLike, *, force: bool = False,
              device: str = "cpu", rank: int = 0, world_size: int = 1,
              extra_manifest: dict | None = None) -> dict:
    """Run one stage with freshness check, resumable partial folder and atomic rename.

    Every process of a distributed run calls this; only rank 0 touches the file system
    layout (others wait at barriers) and holds the locks (:mod:`pipeline.runtime.locks`): the stage's
    writer lock (a concurrent run of the same stage fails at once, naming this PID) and a
    shared publication lock on each upstream stage. Returns the stage's manifest.
    """
    work_dir = Path(work_dir).resolve()
    if rank != 0:
        return _run_stage(name, upstream, run_fn, cfg, section, work_dir, force=force, device=device,
                          rank=rank, world_size=world_size, extra_manifest=extra_manifest)
    _check_work_dir(work_dir)
    try:
        writer = locks.acquire_writer(work_dir, name, tuple(upstream))
    except locks.LockBusy as exc:
        raise StageLockedError(locks.busy_message(name, work_dir, exc)) from None
    readers = []
    try:
        readers = [locks.acquire_reader(work_dir, up) for up in upstream]
        _publish_pending(work_dir, name)
        return _run_stage(name, upstream, run_fn, cfg, section, work_dir, force=force, device=device,
                          rank=rank, world_size=world_size, extra_manifest=extra_manifest)
    finally:
        for fd in (*readers, writer):
            locks.release(fd)


def _check_work_dir(work_dir: Path) -> None:
    """A StageError when ``work_dir`` or the nearest of its parents that exists is a file."""
    existing = next((p for p in (work_dir, *work_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise StageError(f"WORK_DIR={work_dir}: {existing} is a file, not a folder: choose another "
                         f"WORK_DIR= (or move that file away)")


def _publish_pending(work_dir: Path, name: str) -> None:
    """Finish a publication an earlier run was stopped in: a partial folder with its manifest
    is complete (the manifest is written last), so it is swapped in; old folders moved aside
    by a stopped swap are deleted."""
    partial_dir = work_dir / ".partial" / name
    if (partial_dir / MANIFEST).is_file():
        print(f"[{name}] publishing the complete output of an earlier run left in {partial_dir}", flush=True)
        with locks.publishing(work_dir, name):
            _swap_into_place(work_dir, name)
        (work_dir / ".partial" / f"{name}.json").unlink(missing_ok=True)
    for trash in (work_dir / ".partial").glob(f"{name}.old*"):
        shutil.rmtree(trash, ignore_errors=True)


def _run_stage(name, upstream, run_fn, cfg, section, work_dir: Path, *, force, device, rank,
               world_size, extra_manifest) -> dict:
    final_dir = work_dir / name
    partial_dir = work_dir / ".partial" / name
    marker = work_dir / ".partial" / f"{name}.json"
    section_plain = plain_data(section)
    accepted = config_digests(section_plain)
    config_digest = accepted[0]
    ups = _upstream_state(work_dir, name, upstream)
    upstream_digests = {up: m["run_digest"] for up, m in ups.items()}

    state, reason = stage_status(work_dir, name, upstream, accepted)
    if state == "fresh" and not force:
        if rank == 0:
            print(f"[{name}] fresh ({reason}): skipping; FORCE=1 re-runs it", flush=True)
        return read_manifest(final_dir)

    key = {"config_digest": config_digest, "upstream": upstream_digests}
    resumed = False
    if rank == 0:
        old = json.loads(marker.read_text()) if marker.is_file() else None
        if partial_dir.is_dir() and old == key and not force:
            resumed = True
        else:
            shutil.rmtree(partial_dir, ignore_errors=True)
            partial_dir.mkdir(parents=True)
            write_json_atomic(marker, key)
        write_json_atomic(partial_dir / ".run_state.json", {"resumed": resumed})
    _barrier(world_size)
    if rank != 0:
        resumed = json.loads((partial_dir / ".run_state.json").read_text())["resumed"]

    log_file = open(partial_dir / "log.txt", "a") if rank == 0 else None
    ctx = StageContext(name=name, cfg=cfg, section=section, work_dir=work_dir, out=partial_dir,
                       device=device, rank=rank, world_size=world_size, resumed=resumed,
                       upstream_manifests=ups, _log_file=log_file)
    ctx.log(f"running ({'resuming partial output' if resumed else reason}); output -> {final_dir}")
    started = time.time()
    try:
        result = run_fn(ctx) or {}
    finally:
        if log_file is not None:
            log_file.close()
    wall = time.time() - started
    _barrier(world_size)
    if rank != 0:
        _barrier(world_size)
        return read_manifest(final_dir)

    finished = time.time()
    manifest = {
        "stage": name,
        "config_digest": config_digest,
        "config": section_plain,
        "upstream": upstream_digests,
        "run_digest": digest({**key, "finished": finished, "host": socket.gethostname()}),
        "counts": result.get("counts", {}),
        "metrics": result.get("metrics", {}),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "wall_time_s": round(wall, 3),
        "device": device,
        "world_size": world_size,
        "resumed": resumed,
        "command": " ".join(sys.argv),
        **(extra_manifest or {}),
    }
    manifest = json_safe(manifest)          # strict JSON: a NaN / inf metric is written as null
    write_json_atomic(partial_dir / MANIFEST, manifest)
    (partial_dir / ".run_state.json").unlink(missing_ok=True)
    with locks.publishing(work_dir, name, log=lambda msg: print(f"[{name}] {msg}", flush=True)):
        _swap_into_place(work_dir, name)
    marker.unlink(missing_ok=True)
    print(f"[{name}] done in {wall:.1f}s -> {final_dir}", flush=True)
    _barrier(world_size)
    return manifest


def _swap_into_place(work_dir: Path, name: str) -> None:
    """``.partial/<name>`` → ``<name>``, the old folder moved aside to ``.partial`` first."""
    replace_dir(work_dir / ".partial" / name, work_dir / name,
                trash=work_dir / ".partial" / f"{name}.old{os.getpid()}")
