"""Faults met while a stage runs end in one line and leave nothing half-written: a full disk
under a checkpoint, an image or a background write (``/dev/full`` stands in for the full disk:
the kernel's own ENOSPC, whatever the writing library does with it), a truncated newest
checkpoint, OPTS of an upstream stage given to a downstream one, a run killed while building
the synthetic tree, a NaN metric, a WORK_DIR that is a file. The table of every case:
docs/FAILURES.md."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.io_utils import _temp_name
from pipeline.runtime.stage import read_manifest, run_stage
from stage_helpers import (expect_one_line_error as _expect_one_line_error,
                           run_stage_cli as _run_cli, write_exp as _exp,
                           install_fake_stage)

REPO = Path(__file__).resolve().parent.parent
FULL = "/dev/full"

FAKE_STAGE = """
import numpy as np, torch
from pipeline.data.files import save_rgb, write_label_png
from pipeline.runtime.train_state import save_checkpoint
from pipeline.runtime.writer import BackgroundWriter
from pipeline.settings.checks import Str
from pipeline.settings.section import make_section
from stages.common import main_for
STAGE = "fake"
UPSTREAM = ()
SETTINGS = make_section("fake", mode=Str())
FULL_DISK = {}                                       # mode -> the file the test puts on /dev/full
def run(ctx):
    mode = ctx.section["mode"]
    target = ctx.out / {"checkpoint": "iter_6.pth", "image": "overlay.png",
                        "background": "labels.png", "nan": "x"}.get(mode, "x")
    if mode in FULL_DISK:
        FULL_DISK[mode](target)
    if mode == "checkpoint":
        net = torch.nn.Linear(4, 4)
        save_checkpoint(ctx.out, 6, net, torch.optim.Adam(net.parameters()), None, 0, 4)
    if mode == "image":
        save_rgb(target, np.zeros((8, 8, 3), np.uint8))
    if mode == "background":
        with BackgroundWriter(2) as writer:
            writer.submit(write_label_png, target, np.zeros((8, 8), np.uint8))
    return {"metrics": {"nan": float("nan"), "inf": float("inf"), "ok": 1.0}}
"""


@pytest.fixture
def fake_stage(tmp_path, monkeypatch):
    exp = install_fake_stage(tmp_path, monkeypatch, "fake_fault_mod", FAKE_STAGE)
    return lambda mode: _run_cli("fake_fault_mod", exp, tmp_path / "work", f"fake.mode={mode}", force=True)


def _on_full_disk(path: Path) -> None:
    """The temporary file an atomic write of ``path`` uses, and ``path`` itself, on /dev/full."""
    for p in (_temp_name(path), path):
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(FULL, p)


# ------------------------------------------------------------------ 5. full disk ---------------

@pytest.mark.skipif(not os.path.exists(FULL), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("mode, file", [("checkpoint", "iter_6.pth"), ("image", "overlay.png"),
                                        ("background", "labels.png")])
def test_full_disk_names_the_file_and_leaves_no_temporary(fake_stage, tmp_path, capsys, mode, file):
    import fake_fault_mod

    fake_fault_mod.FULL_DISK[mode] = _on_full_disk
    partial = tmp_path / "work" / ".partial" / "fake"
    _expect_one_line_error(capsys, lambda: fake_stage(mode), "[fake] error: no space left on the device "
                           f"while writing {partial / file}", "WORK_DIR=")
    assert not [p for p in partial.iterdir() if ".tmp" in p.name]
    assert not (tmp_path / "work" / "fake").exists()


# ------------------------------------------------------------------ 6. OPTS of an upstream stage

TINY = "data = dict(synthetic=dict(seed=1, image_size=32, n_train=6, n_val=2, n_test=2, n_classes=3))\n"


def test_opts_of_an_upstream_stage_name_the_stage_to_re_run(tmp_path, capsys, monkeypatch):
    import stages.data
    from stages.common import load_experiment

    monkeypatch.delenv("DEBUG", raising=False)
    exp = _exp(tmp_path, f"_base_ = [{str(REPO / 'configs' / 'demo_synthetic.py')!r}]\n" + TINY)
    cfg, work = load_experiment(exp), tmp_path / "work"
    run_stage("data", (), stages.data.run, cfg, cfg.data, work)
    run_stage("seeds", ("data",), lambda ctx: {}, cfg, cfg.seeds, work)                 # fg_top=0.3
    run_stage("segmenter", ("data", "seeds"), lambda ctx: {}, cfg, cfg.segmenter, work)
    _expect_one_line_error(capsys, lambda: _run_cli("stages.segmenter", exp, work, "seeds.fg_top=0.2"),
                           "[segmenter] error: OPTS seeds.fg_top=0.2 differ from what WORK_DIR/seeds was "
                           "built with (0.3)", 'make seeds OPTS="seeds.fg_top=0.2"', "make seeds segmenter")
    assert "fresh" not in capsys.readouterr().out
    # the value the seeds were built with, and keys of stages the segmenter does not read, pass
    _run_cli("stages.segmenter", exp, work, "seeds.fg_top=0.3", "eval.split=val", "experiment.seed=0")
    assert "[segmenter] fresh (config and upstream unchanged)" in capsys.readouterr().out


# ------------------------------------------------------------------ 7. resume, leftovers, JSON -

def _checkpoints(work: Path, *iters: int) -> tuple:
    from pipeline.runtime.train_state import save_checkpoint

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 4)
    opt = torch.optim.Adam(net.parameters())
    for it in iters:
        save_checkpoint(work, it, net, opt, None, 0, it)
    return net, opt


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    from pipeline.runtime.training import _resume

    net, opt = _checkpoints(tmp_path, 2, 4)
    _truncate(tmp_path / "iter_4.pth")
    logs: list[str] = []
    start, samples, _ = _resume(tmp_path, net, opt, None, logs.append)
    assert (start, samples) == (2, 2)
    assert f"{tmp_path / 'iter_4.pth'}: unreadable checkpoint" in logs[0] and "trying the one before" in logs[0]
    assert f"resumed from {tmp_path / 'iter_2.pth'}" in logs[1]
    assert not (tmp_path / "iter_4.pth").exists()


def test_no_readable_checkpoint_is_one_line(tmp_path):
    from pipeline.runtime.errors import describe
    from pipeline.runtime.stage import StageError
    from pipeline.runtime.training import _resume

    net, opt = _checkpoints(tmp_path, 2)
    _truncate(tmp_path / "iter_2.pth")
    with pytest.raises(StageError) as exc:
        _resume(tmp_path, net, opt, None, lambda line: None)
    message = describe(exc.value, "classifier")
    assert f"no checkpoint in {tmp_path} loads (iter_2.pth unreadable" in message
    assert "run the same command again" in message and "\n" not in message


def test_a_killed_data_run_leaves_no_temporary_folder_in_data(tmp_path):
    import stages.data
    from pipeline.runtime.stage import config_digests
    from stages.common import load_experiment

    exp = _exp(tmp_path, f"_base_ = [{str(REPO / 'configs' / 'demo_synthetic.py')!r}]\n" + TINY)
    cfg, work = load_experiment(exp), tmp_path / "work"
    partial = work / ".partial" / "data"                      # what a SIGKILLed run leaves behind
    for left in (".synthetic.tmp-k1ll3d", "._index.tmp-k1ll3d"):
        (partial / left / "VOC2012").mkdir(parents=True)
    (work / ".partial" / "data.json").write_text(json.dumps(
        {"config_digest": config_digests(cfg.data)[0], "upstream": {}}))
    man = run_stage("data", (), stages.data.run, cfg, cfg.data, work)
    assert man["resumed"]
    assert not [p.name for p in (work / "data").iterdir() if ".tmp-" in p.name]


def test_manifest_is_strict_json_with_a_nan_metric(fake_stage, tmp_path):
    fake_stage("ok")                                          # its metrics: nan, inf, 1.0
    text = (tmp_path / "work" / "fake" / "manifest.json").read_text()
    manifest = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in manifest.json"))
    assert manifest["metrics"] == {"nan": None, "inf": None, "ok": 1.0}


@pytest.mark.parametrize("below", ["", "sub"])
def test_work_dir_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch, below):
    monkeypatch.delenv("DEBUG", raising=False)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    exp = _exp(tmp_path, f"_base_ = [{str(REPO / 'configs' / 'demo_synthetic.py')!r}]\n" + TINY)
    _expect_one_line_error(capsys, lambda: _run_cli("stages.data", exp, afile / below),
                           f"[data] error: WORK_DIR={afile / below}".rstrip("/"),
                           f"{afile} is a file, not a folder", "choose another WORK_DIR=")
