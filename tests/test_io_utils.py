"""Shared runtime helpers: atomic file / folder writes, JSON-safe values, size and device."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.data.io_utils import (atomic_dir, atomic_file, json_safe, replace_dir,
                                    write_json_atomic, write_text_atomic)
from pipeline.transforms import parse_size
from stages.common import choose_device


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_file_keeps_the_old_file_when_the_write_fails(tmp_path, error):
    target = tmp_path / "model.pth"
    target.write_text("old")
    with pytest.raises(error):
        with atomic_file(target) as tmp:
            tmp.write_text("half written")
            raise error("stop")
    assert target.read_text() == "old"
    assert _hidden(tmp_path) == []                   # the temporary file is gone


def test_atomic_file_replaces_and_keeps_the_extension(tmp_path):
    target = tmp_path / "sub" / "pred.png"           # parent folder created on the way
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and tmp.name.startswith(".")
        assert not target.exists()                   # nothing visible before the rename
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and _hidden(target.parent) == []


def test_write_text_and_json_atomic(tmp_path):
    write_text_atomic(tmp_path / "a.md", "x\n")
    write_json_atomic(tmp_path / "m.json", {"b": 1, "a": tmp_path})
    assert (tmp_path / "a.md").read_text() == "x\n"
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": str(tmp_path), "b": 1}
    with pytest.raises(TypeError):                   # not serialisable: old file stays
        write_text_atomic(tmp_path / "a.md", None)
    assert (tmp_path / "a.md").read_text() == "x\n" and _hidden(tmp_path) == []


def test_atomic_dir_failure_leaves_the_old_folder(tmp_path):
    dst = tmp_path / "report"
    dst.mkdir()
    (dst / "index.html").write_text("old")
    with pytest.raises(ValueError):
        with atomic_dir(dst, overwrite=True) as tmp:
            (tmp / "index.html").write_text("new")
            raise ValueError("figure failed")
    assert (dst / "index.html").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_atomic_dir_replaces_refuses_and_accepts_empty(tmp_path):
    dst = tmp_path / "data"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="data: already exists"):
        with atomic_dir(dst):
            pass
    with atomic_dir(dst, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in dst.iterdir()) == ["new.txt"]
    assert (dst.stat().st_mode & 0o777) == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["data"]       # no temporary or old folder
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty) as tmp:                   # an empty folder may be replaced
        (tmp / "x").write_text("1")
    assert (empty / "x").read_text() == "1"


def test_replace_dir_moves_the_old_folder_to_trash_and_deletes_it(tmp_path):
    src, dst, trash = tmp_path / "new", tmp_path / "out", tmp_path / "bin" / "out.old"
    src.mkdir()
    (src / "a").write_text("new")
    dst.mkdir()
    (dst / "a").write_text("old")
    replace_dir(src, dst, trash=trash)
    assert (dst / "a").read_text() == "new" and not src.exists() and not trash.exists()


def test_json_safe():
    obj = {1: [float("nan"), np.float32(0.5), (np.int64(3), float("-inf"))],
           "t": torch.tensor(2.0), "p": None, "ok": True}
    out = json_safe(obj)
    assert out == {"1": [None, 0.5, [3, None]], "t": 2.0, "p": None, "ok": True}
    json.dumps(out, allow_nan=False)
    assert json_safe({"path": json}) == {"path": json}              # unknown types unchanged
    assert json_safe([json], default=str) == [str(json)]
    assert json_safe(float("inf")) is None and json_safe(float("nan")) is None


@pytest.mark.parametrize("size,expected", [
    (321, (321, 321)), (96.0, (96, 96)), ((40, 60), (40, 60)), ([8, 9], (8, 9)), ("64", (64, 64)),
    (None, None), (0, None), ("none", None), ("None", None), ("original", None), ("Original", None),
])
def test_parse_size(size, expected):
    assert parse_size(size) == expected


@pytest.mark.parametrize("size", [-1, (3, 0), (1, 2, 3), "big", [None, 2]])
def test_parse_size_rejects_bad_values(size):
    with pytest.raises(ValueError, match="size"):
        parse_size(size)


def test_choose_device(monkeypatch):
    def cfg(device):                                     # the typed settings' experiment.device
        return SimpleNamespace(experiment=SimpleNamespace(device=device))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device(cfg("auto")) == "cuda"
    assert choose_device(cfg("auto"), "cuda:3") == "cuda:3"
    assert choose_device(cfg("cpu"), "cuda:3") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device(cfg("auto")) == "cpu"
