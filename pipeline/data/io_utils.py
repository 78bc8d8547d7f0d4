"""Runtime file helpers: atomic file and folder writes, JSON-safe values.

A reader never sees a half-written output: every file is written under a temporary name in
the same folder and renamed over the target with ``os.replace`` (atomic on POSIX within one
file system); a folder is built under a temporary sibling and swapped into place. When the
write raises (or is interrupted by KeyboardInterrupt), the temporary file or folder is removed
and the previous content of the target, if any, is left as it was. A write the system refuses
(a full disk: ``ENOSPC``) raises its ``OSError`` naming the target, also where the system named
no file (a failed ``write`` or ``flush``) or the writing library hid the errno
(:func:`write_stream_atomic`: ``torch.save`` reports a full disk as a ``RuntimeError``).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["atomic_file", "write_text_atomic", "write_json_atomic", "write_stream_atomic",
           "atomic_dir", "replace_dir", "json_safe"]


def _temp_name(path: Path) -> Path:
    """``.<stem>.tmp<pid><suffix>`` next to ``path``: hidden, unique per process, and with the
    target's extension so writers that pick the format from it (PIL, OpenCV) still work."""
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed
    (an ``OSError`` that names no file is raised naming ``path``).

    The parent folder is created when missing. Example::

        with atomic_file(out / "labels.png") as tmp:
            Image.fromarray(label).save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        named = _naming(exc, path)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc``, or the same error naming ``path`` when the system named no file (a failed
    ``write`` / ``flush`` carries the errno only)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


class _RecordingFile:
    """A binary file whose ``write`` keeps the ``OSError`` it raised (``error``), for writers
    that turn it into another error without the errno."""

    def __init__(self, fh):
        self._fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._fh.flush()


def write_stream_atomic(path: str | os.PathLike, dump: Callable[[Any], Any]) -> None:
    """``dump(file)`` writes ``path`` atomically (:func:`atomic_file`), e.g.
    ``write_stream_atomic(p, lambda f: torch.save(payload, f))``. A write the system refused
    raises that ``OSError`` naming ``path`` even when ``dump`` reported it otherwise."""
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        out = _RecordingFile(fh)
        try:
            dump(out)
        except Exception as exc:
            if out.error is None or exc is out.error:
                raise
            raise out.error from exc


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str | None = None) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON (unknown types as ``str``) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike,
                trash: str | os.PathLike | None = None) -> None:
    """Put the folder ``src`` at ``dst``: an existing ``dst`` is first renamed to ``trash``
    (default: the hidden sibling ``.<name>.old<pid>``), then ``src`` is renamed to ``dst`` and
    the old content deleted. Readers see either the old or the new folder, never a mix."""
    src, dst = Path(src), Path(dst)
    trash = Path(trash) if trash is not None else dst.with_name(f".{dst.name}.old{os.getpid()}")
    moved = False
    if dst.exists() or dst.is_symlink():
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.replace(dst, trash)
        moved = True
    os.replace(src, dst)
    if moved:
        _remove(trash)


@contextmanager
def atomic_dir(dst: str | os.PathLike, overwrite: bool = False, mode: int = 0o755) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``dst``
    (:func:`replace_dir`), on error it is deleted and ``dst`` is left untouched.

    ``dst`` may be missing or an empty folder; anything else raises FileExistsError naming it
    unless ``overwrite``. The new folder gets permissions ``mode`` (a temporary folder is
    created private, 0700).
    """
    dst = Path(dst)
    if dst.exists() and not overwrite and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst}: already exists and is not empty")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        yield tmp
        os.chmod(tmp, mode)
        replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def json_safe(obj: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """A copy of ``obj`` that strict JSON accepts: NaN and ±inf become None, through dicts
    (keys made ``str``), lists and tuples (made lists); numpy / torch scalars become Python
    numbers. Other values are returned unchanged, or passed through ``default`` when given
    and not a JSON type (e.g. ``default=str`` for paths)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v, default) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, default) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if default is None or obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return default(obj)


def plain_data(obj: Any) -> Any:
    """Convert config objects (ConfigDict, tuples) into plain JSON-able Python."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): plain_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_data(v) for v in obj]
    return obj
