"""One writer per stage output; readers never see a half-published folder (pure Python, POSIX).

Two ``fcntl.flock`` locks per stage ``S`` under ``WORK_DIR/.locks/``:

* ``S`` — the *writer lock*, held (exclusive) for the whole run of stage ``S``. The file holds
  the holder's PID, host, start time, command and the upstream stages it reads, as JSON. A
  second run of ``S`` fails at once with :class:`LockBusy` naming that PID. The kernel releases
  a flock when its holder exits, so a lock left by a dead process is simply taken; when the
  recorded PID is dead but the lock is still held (a child it forked outlives it), the file is
  replaced by a new one (the takeover).
* ``S.read`` — the *publication lock*: a run holds it shared for each of its upstream stages
  while it runs; the run of ``S`` takes it exclusive only for the two renames that publish
  ``.partial/S`` as ``S``. So a downstream stage never reads ``S`` while it is swapped, and a
  re-run of ``S`` waits for the downstream stages already reading the old ``S`` before
  replacing it.

Every open-and-lock (and a takeover's unlink) happens under ``.locks/.guard``, a lock held for
milliseconds, so a takeover cannot race a new holder. Locks only exclude processes on hosts
that share the file system's flock (local disks; NFS with lock support).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

LOCK_DIR = ".locks"
GUARD = ".guard"
READ_SUFFIX = ".read"


class LockBusy(RuntimeError):
    """Another live process holds a stage's writer lock; ``holder`` is its recorded info."""

    def __init__(self, path: Path, holder: dict | None):
        self.path, self.holder = path, holder or {}
        super().__init__(f"{path} is held by PID {self.holder.get('pid', '?')}")


def _lock_path(work_dir: Path, stage: str, suffix: str = "") -> Path:
    return Path(work_dir) / LOCK_DIR / f"{stage}{suffix}"


@contextmanager
def _guard(lock_dir: Path) -> Iterator[None]:
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / GUARD, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_holder(path: Path) -> dict | None:
    """The JSON a writer lock file holds (None when empty or unreadable)."""
    try:
        return json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None


def pid_alive(holder: dict | None) -> bool:
    """Whether the recorded process still runs (a holder on another host counts as alive)."""
    if not holder or "pid" not in holder:
        return False
    if holder.get("host") not in (None, socket.gethostname()):
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_flock(path: Path, mode: int) -> int | None:
    """Open ``path`` and flock it without blocking: the fd, or None when it is held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def acquire_writer(work_dir: Path, stage: str, reads: tuple[str, ...] = ()) -> int:
    """Take the writer lock of ``stage``; returns its fd. :class:`LockBusy` when a live process
    holds it; a lock whose recorded holder is dead is taken over."""
    path = _lock_path(work_dir, stage)
    with _guard(path.parent):
        fd = _try_flock(path, fcntl.LOCK_EX)
        if fd is None:
            holder = read_holder(path)
            if pid_alive(holder):
                raise LockBusy(path, holder)
            path.unlink(missing_ok=True)       # a child of the dead holder keeps the old inode
            fd = _try_flock(path, fcntl.LOCK_EX)
            if fd is None:
                raise LockBusy(path, read_holder(path))
        info = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                "reads": list(reads), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    return fd


def acquire_reader(work_dir: Path, stage: str, poll_s: float = 0.05) -> int:
    """Take ``stage``'s publication lock shared (waits while ``stage`` swaps its output)."""
    path = _lock_path(work_dir, stage, READ_SUFFIX)
    while True:
        with _guard(path.parent):
            fd = _try_flock(path, fcntl.LOCK_SH)
        if fd is not None:
            return fd
        time.sleep(poll_s)


def live_readers(work_dir: Path, stage: str) -> list[dict]:
    """Recorded holders of writer locks (other runs) that read ``stage`` and still run."""
    found = []
    for p in sorted((Path(work_dir) / LOCK_DIR).glob("*")):
        if p.name.startswith(".") or p.name.endswith(READ_SUFFIX):
            continue
        holder = read_holder(p)
        if holder and stage in holder.get("reads", ()) and pid_alive(holder):
            found.append(holder)
    return found


@contextmanager
def publishing(work_dir: Path, stage: str, log: Callable[[str], None] = print,
               poll_s: float = 0.2, report_s: float = 60.0) -> Iterator[None]:
    """Hold ``stage``'s publication lock exclusive: waits for the runs reading the current
    output (logging who they are); when none of them is alive any more, takes the lock over."""
    path = _lock_path(work_dir, stage, READ_SUFFIX)
    last_report = None
    while True:
        with _guard(path.parent):
            fd = _try_flock(path, fcntl.LOCK_EX)
            readers = [] if fd is not None else live_readers(work_dir, stage)
            if fd is None and not readers:     # held by children of finished runs only
                path.unlink(missing_ok=True)
                fd = _try_flock(path, fcntl.LOCK_EX)
        if fd is not None:
            break
        if last_report is None or time.monotonic() - last_report >= report_s:
            who = ", ".join(f"{r.get('stage')} (PID {r.get('pid')})" for r in readers)
            log(f"waiting to publish: {who} still read{'s' if len(readers) == 1 else ''} the "
                f"current output in {Path(work_dir) / stage}")
            last_report = time.monotonic()
        time.sleep(poll_s)
    try:
        yield
    finally:
        release(fd)


def release(fd: int) -> None:
    """Unlock (for every process sharing the open file, forked children included) and close."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def busy_message(stage: str, work_dir: Path, exc: LockBusy) -> str:
    """One line: who runs ``stage`` in ``work_dir`` and what to do."""
    h = exc.holder
    where = f" on {h['host']}" if h.get("host") not in (None, socket.gethostname()) else ""
    since = f", started {h['started']}" if h.get("started") else ""
    return (f"stage {stage!r} is already running in {work_dir} (PID {h.get('pid', '?')}{where}{since}; "
            f"lock {exc.path}): wait for it to finish, or stop it (kill {h.get('pid', '<pid>')}) "
            f"and run again")
