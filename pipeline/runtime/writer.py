"""Background file writing for the per-image stages (heatmaps, seeds).

Compressing and writing a file per image (``np.savez_compressed``: zlib; PNG: OpenCV) spends its
time in C code that releases the GIL, so a few threads write in parallel with each other and with
the main loop. :class:`BackgroundWriter` bounds the calls in flight (memory stays flat however
many images a stage has), keeps the order irrelevant (each call writes its own file, atomically)
and re-raises the first failure, naming the call, in the main thread (an ``OSError`` of the system
as it is: it names its file, and a full disk stays an expected failure).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

__all__ = ["BackgroundWriter"]


class BackgroundWriter:
    """``submit(fn, *args, **kwargs)`` runs ``fn`` on one of ``threads`` threads; with
    ``threads <= 0`` it runs at once in the caller. At most ``max_pending`` calls (default
    2 × threads) are queued or running: ``submit`` waits for the oldest beyond that. ``close()``
    (or leaving the ``with`` block) waits for all and raises the first error."""

    def __init__(self, threads: int = 2, max_pending: int | None = None):
        self.threads = max(0, int(threads))
        self.max_pending = max(1, int(max_pending or 2 * max(1, self.threads)))
        self._pool = (ThreadPoolExecutor(self.threads, thread_name_prefix="writer")
                      if self.threads > 0 else None)
        self._pending: deque[tuple[Future, str]] = deque()

    def submit(self, fn: Callable, *args, **kwargs) -> None:
        if self._pool is None:
            fn(*args, **kwargs)
            return
        while len(self._pending) >= self.max_pending:
            self._wait_oldest()
        what = f"{getattr(fn, '__name__', fn)}({args[0] if args else ''})"
        self._pending.append((self._pool.submit(fn, *args, **kwargs), what))

    def _wait_oldest(self) -> None:
        fut, what = self._pending.popleft()
        try:
            fut.result()
        except Exception as e:
            if isinstance(e, OSError) and e.errno is not None:
                raise                   # the system's error: a full disk stays ENOSPC, naming its file
            raise RuntimeError(f"background write {what} failed: {e}") from e

    def close(self) -> None:
        try:
            while self._pending:
                self._wait_oldest()
        finally:
            for fut, _ in self._pending:
                fut.cancel()
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
            return
        for fut, _ in self._pending:            # failing already: do not mask the error
            fut.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
