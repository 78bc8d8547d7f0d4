"""What a user sees when a stage cannot run: one or two lines, no traceback (pure Python).

Expected failures print ``[stage] error: <what> (<where>): <how to fix>`` on stderr and exit
non-zero:

* :class:`pipeline.runtime.stage.StageError` and its subclasses (missing upstream, bad input file, bad
  config value, a concurrent run of the same stage, a non-finite model), whose messages
  already name the file or config key and the fix;
* permission errors (``EACCES``, ``EPERM``, read-only file system ``EROFS``) and a full disk
  (``ENOSPC``, ``EDQUOT``), named with the file the system refused;
* an interrupted run (Ctrl-C, ``SIGINT``): exit status 130, the partial output kept for resume.

``DEBUG=1`` in the environment re-raises them with their traceback. Any other exception is a
bug and keeps its traceback.
"""
from __future__ import annotations

import errno
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

from pipeline.runtime.stage import StageError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def debug_enabled() -> bool:
    """``DEBUG`` set to anything but empty / ``0``: show tracebacks of expected failures too."""
    return os.environ.get("DEBUG", "") not in ("", "0")


def _partial(stage: str, work_dir) -> str:
    return str(Path(work_dir) / ".partial" / stage) if work_dir else f"WORK_DIR/.partial/{stage}"


def _os_file(exc: OSError) -> str:
    return exc.filename if exc.filename is not None else "(file not named by the system)"


def describe(exc: BaseException, stage: str, work_dir=None) -> str | None:
    """The user's message for an expected failure, None for anything else (a bug)."""
    if isinstance(exc, StageError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return (f"interrupted; the partial output stays in {_partial(stage, work_dir)}: run the same "
                f"command again to resume (or add FORCE=1 to start over)")
    if isinstance(exc, OSError) and exc.errno in PERMISSION_ERRNOS:
        what = "read-only file system" if exc.errno == errno.EROFS else "permission denied"
        return (f"{what}: {_os_file(exc)}: make it writable/readable for this user "
                f"(or choose another WORK_DIR=...)")
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return (f"no space left on the device while writing {_os_file(exc)}: free space there or "
                f"set WORK_DIR= to another disk, then run again (partial output: "
                f"{_partial(stage, work_dir)}; delete it to free space, or keep it to resume)")
    return None


@contextmanager
def reported_errors(stage: str, prog: str | None = None) -> Iterator[SimpleNamespace]:
    """Turn expected failures inside the block into a one-line message and an exit status.

    Yields a namespace whose ``work_dir`` the block may set, so messages can name the
    partial folder. ``prog`` prefixes the message (default ``[stage]``).
    """
    where = SimpleNamespace(work_dir=None)
    try:
        yield where
    except (StageError, OSError, KeyboardInterrupt) as exc:
        message = describe(exc, stage, where.work_dir)
        if message is None or debug_enabled():
            raise
        print(f"{prog or f'[{stage}]'} error: {message}", file=sys.stderr, flush=True)
        if not isinstance(exc, KeyboardInterrupt):
            print("(DEBUG=1 shows the traceback)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_ERROR) from None
