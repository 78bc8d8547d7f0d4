"""What the training loop keeps between runs: the infinite sampler, RNG states and checkpoints.

Torch and numpy only. A checkpoint ``work_dir/iter_<N>.pth`` (written atomically every
``checkpoint_interval`` iterations and after the last one; the newest two are kept, and
``work_dir/last_checkpoint`` names the newest) holds::

    {"meta": {"format": "wsss-train-checkpoint/1", "iter": N, "seed": s, "samples": k},
     "state_dict": network weights, "optimizer": ..., "scaler": GradScaler state or None,
     "rng": {"torch", "cuda", "numpy", "python"}}

``samples`` is how many training samples each rank had drawn, so the sampler continues where
it stopped; with the RNG states restored, a resumed run with ``num_workers=0`` repeats an
uninterrupted one exactly. Files are read with ``torch.load(weights_only=True)``; a newest
checkpoint that does not load (truncated by a crash or a full disk) is deleted and the one
before it used (:func:`resume_from_newest`).
"""
from __future__ import annotations

import errno
import itertools
import os
import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from pipeline.data.io_utils import write_stream_atomic, write_text_atomic
from pipeline.runtime.stage import StageError

CHECKPOINT_FORMAT = "wsss-train-checkpoint/1"
KEEP_CHECKPOINTS = 2
_CKPT = re.compile(r"^iter_(\d+)\.pth$")
START_OVER = "delete the train/ folder (or re-run with FORCE=1) to start over"


class CheckpointError(StageError):
    """A checkpoint that is not this project's or does not fit this config's network."""


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint file that does not load (truncated, corrupt); ``what`` is the message
    without the fix."""

    def __init__(self, what: str, fix: str = START_OVER):
        super().__init__(f"{what}: {fix}")
        self.what = what


class InfiniteSampler(Sampler):
    """An endless stream of shuffled dataset indices: permutations drawn one after another from
    a ``torch.Generator`` seeded with ``seed`` (the same stream as mmengine's
    ``InfiniteSampler``), rank ``r`` of ``world_size`` taking every ``world_size``-th index from
    position ``r``. ``start`` = samples this rank has already drawn (resume)."""

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        if size <= 0:
            raise ValueError("the training dataset is empty")
        self.size, self.seed, self.rank, self.world_size = int(size), int(seed), int(rank), int(world_size)
        self.start = int(start)

    def _stream(self, skip: int):
        g = torch.Generator()
        g.manual_seed(self.seed)
        for _ in range(skip // self.size):              # whole permutations already used
            torch.randperm(self.size, generator=g)
        yield from torch.randperm(self.size, generator=g)[skip % self.size:].tolist()
        while True:
            yield from torch.randperm(self.size, generator=g).tolist()

    def __iter__(self):
        return itertools.islice(self._stream(self.start * self.world_size), self.rank, None, self.world_size)

    def __len__(self) -> int:
        return self.size


def seed_everything(seed: int) -> None:
    """``random``, numpy and torch (CPU and every CUDA device) seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def worker_seeder(seed: int, rank: int, start_iter: int):
    """DataLoader ``worker_init_fn``: each worker's torch / numpy / random seed from
    (seed, rank, worker id, first iteration), so a resumed run draws new augmentations."""
    def init(worker_id: int) -> None:
        s = int(np.random.SeedSequence([seed, rank, worker_id, start_iter]).generate_state(1)[0])
        seed_everything(s)
    return init


def rng_state() -> dict:
    """Every RNG state the loop draws from, as tensors and plain Python values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def checkpoints(work_dir: str | os.PathLike) -> list[Path]:
    """``iter_<N>.pth`` files of ``work_dir``, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(work_dir).glob("iter_*.pth") if (m := _CKPT.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(work_dir: Path, it: int, net, optimizer, scaler, seed: int, samples: int) -> Path:
    """Write ``iter_<it>.pth`` atomically, point ``last_checkpoint`` at it, keep the newest two."""
    path = work_dir / f"iter_{it}.pth"
    payload = {"meta": {"format": CHECKPOINT_FORMAT, "iter": int(it), "seed": int(seed),
                        "samples": int(samples)},
               "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
               "optimizer": optimizer.state_dict(),
               "scaler": scaler.state_dict() if scaler is not None else None,
               "rng": rng_state()}
    write_stream_atomic(path, lambda fh: torch.save(payload, fh))      # a full disk: OSError
    write_text_atomic(work_dir / "last_checkpoint", path.name + "\n")
    for old in checkpoints(work_dir)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, net, optimizer, scaler) -> tuple[dict, dict]:
    """Restore weights, optimizer and scaler from ``path``; returns its ``meta`` and its RNG
    states (for :func:`set_rng_state`)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        if isinstance(exc, OSError) and exc.errno != errno.EINVAL:
            raise                          # permissions, I/O errors: not the file's content
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnreadableCheckpoint(f"{path}: unreadable checkpoint ({why}; truncated?)") from exc
    if not isinstance(ckpt, dict) or ckpt.get("meta", {}).get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a training checkpoint of this project ({CHECKPOINT_FORMAT}): "
                              f"{START_OVER}")
    try:
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: does not fit the network / optimizer of this config "
                              f"({str(exc).splitlines()[0]}): {START_OVER}") from None
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt["meta"], ckpt["rng"]


def resume_from_newest(work_dir, net, optimizer, scaler, log) -> tuple[Path, dict, dict] | None:
    """``(path, meta, RNG states)`` of the newest checkpoint in ``work_dir`` that loads into
    ``net`` / ``optimizer`` / ``scaler``, or None when there is none. An unreadable one (a run
    killed while writing it, a full disk) is deleted, logged, and the one before it tried; when
    none is readable, a :class:`UnreadableCheckpoint` names them and the fix."""
    found = checkpoints(work_dir)
    for path in reversed(found):
        try:
            meta, rng = load_checkpoint(path, net, optimizer, scaler)
        except UnreadableCheckpoint as exc:
            log(f"train: warning: {exc.what}: deleted, trying the one before")
            path.unlink(missing_ok=True)
            continue
        return path, meta, rng
    if found:
        raise UnreadableCheckpoint(f"no checkpoint in {work_dir} loads ({', '.join(p.name for p in found)} "
                                   f"unreadable, now deleted)", "run the same command again to train "
                                   "from the start")
    return None
