"""Dense CRFs of many images in a process pool (:func:`crf_batch`, :class:`CRFJobs`).

The CRF itself is :func:`pipeline.crf.dense_crf`: one image, one core (pydensecrf is single
threaded), so a batch parallelises over images. Inputs and outputs travel through one
``multiprocessing.shared_memory`` block per batch instead of the pool's pipes (see
:class:`CRFJobs`). Imports numpy and the standard library only (torch lazily).
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
import weakref
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from pipeline.crf import CRFParams, as_uint8_image, crf_output, dense_crf, label_dtype

__all__ = ["make_crf_pool", "CRFJobs", "crf_batch"]

_ALIGN = 64                             # byte alignment of each array in the shared block
SHARED_MIN_BYTES = 1 << 20              # shared memory from this many bytes per image (on average)


def _exit_with_parent(parent_pid: int, period_s: float = 1.0) -> None:
    """Pool initializer: a daemon thread ends the worker once its parent is gone (a killed
    stage would otherwise leave its idle workers waiting on the call queue for ever)."""
    def watch():
        while True:
            time.sleep(period_s)
            if os.getppid() != parent_pid:
                os._exit(0)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def make_crf_pool(workers: int, start_method: str = "spawn") -> ProcessPoolExecutor:
    """A process pool for :func:`crf_batch` / :class:`CRFJobs`. ``spawn`` by default: safe after
    CUDA/torch threads have started in the parent (fork is not). The shared-memory resource
    tracker is started first, so the workers share the parent's (whatever the start method) and
    no worker reports the parent's blocks as leaked. Workers exit when the parent dies. Shut it
    down with ``pool.shutdown()``."""
    resource_tracker.ensure_running()
    return ProcessPoolExecutor(max_workers=int(workers),
                               mp_context=multiprocessing.get_context(start_method),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def _pool_workers(pool) -> int:
    return max(1, int(getattr(pool, "_max_workers", 1) or 1))


def _view(buf, spec) -> np.ndarray:
    offset, shape, dtype = spec
    return np.ndarray(shape, dtype=np.dtype(dtype), buffer=buf, offset=offset)


def _shared_crf_job(args):
    """Pool side of :class:`CRFJobs`: read each image and P from the block, write Q (or its
    label map) in place."""
    name, specs, params, labels = args
    shm = SharedMemory(name=name)
    try:
        for image_spec, probs_spec, out_spec in specs:
            out = crf_output(_view(shm.buf, image_spec), _view(shm.buf, probs_spec), params, labels)
            _view(shm.buf, out_spec)[...] = out
            del out
    finally:
        shm.close()


def _crf_chunk(pairs, params: CRFParams, labels: bool) -> list[np.ndarray]:
    """Pool side of :class:`CRFJobs` without shared memory: (image, P) pairs in, results out."""
    return [crf_output(image, probs, params, labels) for image, probs in pairs]


def _shm_has_room(nbytes: int) -> bool:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return True                     # no /dev/shm (macOS): SharedMemory manages its own
    return st.f_bavail * st.f_frsize >= 2 * nbytes


class CRFJobs:
    """Dense CRFs of several (image, P) pairs submitted to a process pool at once.

    Each image costs C·H·W·4 bytes of P in and as much of Q out (8.7 MB each way for 21
    classes at 321×321); pickled through the pool's pipes that is ~4 copies per image which
    neither the workers nor the parent spend on the CRF. Instead, inputs and outputs live in one
    ``multiprocessing.shared_memory`` block: the parent copies each chunk in and submits it at
    once, the workers receive the block's name and offsets, read in place and write in place.
    Small jobs (under ``SHARED_MIN_BYTES`` per image, e.g. the 41×41 training CRFs) and a
    /dev/shm without room (2× the block; e.g. a container's 64 MB default) use the pipes
    instead (``shared`` forces either). With ``labels=True`` the workers return
    :func:`pipeline.crf.label_map` of Q (H·W bytes) instead of Q, which is all the eval,
    submit and retrain stages need. Results equal :func:`dense_crf`'s bit for bit.

    ``result(i)`` waits for image ``i`` (a copy unless ``copy=False``, a view valid until
    :meth:`close`); ``results()`` returns all. Images may differ in size. Use as a context
    manager or call :meth:`close` (also done when the object is collected).
    """

    def __init__(self, pool: Executor, images, probs, params: CRFParams,
                 chunksize: int | None = None, shared: bool | None = None, labels: bool = False):
        if len(images) != len(probs):
            raise ValueError(f"{len(images)} images but {len(probs)} probability maps")
        n = len(images)
        self.chunk = int(chunksize or max(1, -(-n // (2 * _pool_workers(pool)))))
        specs, size = [], 0

        def take(shape, dtype):
            nonlocal size
            spec = (size, tuple(int(v) for v in shape), np.dtype(dtype).str)
            size += -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // _ALIGN) * _ALIGN
            return spec

        for im, p in zip(images, probs):
            p_shape = np.shape(p)
            out = (take(p_shape[1:], label_dtype(p_shape[0])) if labels
                   else take(p_shape, np.float32))
            specs.append((take(np.shape(im), np.uint8), take(p_shape, np.float32), out))
        if shared is None:              # small jobs (41x41 training CRFs) go faster through pipes
            shared = size >= SHARED_MIN_BYTES * n and _shm_has_room(size)
        use_shm = bool(shared) and n > 0
        self._shm, self._specs, self._futures = None, specs, []
        if use_shm:
            self._shm = SharedMemory(create=True, size=max(size, 1))
            self._release = weakref.finalize(self, _release_shm, self._shm)
        for start in range(0, n, self.chunk):
            stop = min(n, start + self.chunk)
            if use_shm:                     # copy a chunk in, start it, then copy the next
                for i in range(start, stop):
                    _view(self._shm.buf, specs[i][0])[...] = as_uint8_image(images[i])
                    _view(self._shm.buf, specs[i][1])[...] = np.asarray(probs[i], np.float32)
                job = (self._shm.name, specs[start:stop], params, bool(labels))
                self._futures.append(pool.submit(_shared_crf_job, job))
            else:
                pairs = [(images[i], probs[i]) for i in range(start, stop)]
                self._futures.append(pool.submit(_crf_chunk, pairs, params, bool(labels)))

    def __len__(self) -> int:
        return len(self._specs)

    def result(self, i: int, copy: bool = True) -> np.ndarray:
        fut = self._futures[i // self.chunk]
        out = fut.result()
        if self._shm is None:
            return out[i % self.chunk]
        if self._shm.buf is None:
            raise RuntimeError("CRFJobs.result() after close()")
        q = _view(self._shm.buf, self._specs[i][2])
        return q.copy() if copy else q

    def results(self) -> list[np.ndarray]:
        return [self.result(i) for i in range(len(self))]

    def close(self):
        """Wait for the running jobs (they write into the block), then free the block."""
        for fut in self._futures:
            fut.cancel() or fut.exception()
        if self._shm is not None:
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _release_shm(shm: SharedMemory):
    shm.close()
    shm.unlink()


def crf_batch(images, probs, params: CRFParams, pool: Executor | None = None,
              chunksize: int | None = None):
    """:func:`dense_crf` over a batch: ``images`` (B,H,W,3) uint8, ``probs`` (B,C,H,W).

    Accepts numpy arrays or torch tensors (a tensor ``probs`` gives a float32 tensor on its
    device). With ``pool`` (e.g. :func:`make_crf_pool`) the images are processed in parallel
    through :class:`CRFJobs` (shared memory, about two chunks of jobs per worker, so small CRFs
    such as the 41x41 training ones do not pay one round trip each); the result is identical to
    the sequential one (each image is independent, deterministic).
    """
    is_tensor = type(probs).__module__.startswith("torch")
    device = probs.device if is_tensor else None

    def to_np(x):
        return x.detach().cpu().numpy() if type(x).__module__.startswith("torch") else x

    imgs, prb = to_np(images), to_np(probs)
    if len(imgs) != len(prb):
        raise ValueError(f"{len(imgs)} images but {len(prb)} probability maps")
    if pool is not None and len(prb):
        with CRFJobs(pool, imgs, prb, params, chunksize) as jobs:
            results = jobs.results()
    else:
        results = [dense_crf(imgs[i], prb[i], params) for i in range(len(prb))]
    out = (np.stack(results) if results
           else np.zeros(np.shape(prb), dtype=np.float32))
    if is_tensor:
        import torch
        return torch.from_numpy(out).to(device)
    return out
