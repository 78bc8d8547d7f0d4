"""Expected failures get a clear one- or two-line error (what, where, how to fix), a non-zero
exit and nothing half-written; bugs keep their traceback. Each test reproduces a case a user
meets: a truncated JPEG, an empty split, a bad mask, a missing folder, a colour saliency map,
a read-only work dir, a full disk, Ctrl-C, a truncated submission archive, OPTS with
parentheses and spaces. Diverging training and non-finite inputs: test_reliability_training.py."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.runtime.stage import read_manifest
from stages.common import parse_args
from stage_helpers import (expect_one_line_error as _expect_one_line_error,
                           run_stage_cli as _run_cli,
                           install_fake_stage, write_voc_exp)

REPO = Path(__file__).resolve().parent.parent




def _voc_exp(tmp_path, tiny_voc, sal=None) -> Path:
    return write_voc_exp(tmp_path, tiny_voc.root, workers=2,
                         extra=f"saliency = dict(split='trainaug', dir={sal!r}, workers=1, allow_colour=False)\n")


# ------------------------------------------------------------------ data stage validation ------

def test_truncated_jpeg_fails_the_data_stage_naming_the_file(tiny_voc, tmp_path, capsys):
    jpg = tiny_voc.root / "JPEGImages" / "img_b.jpg"
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])
    work = tmp_path / "work"
    _expect_one_line_error(capsys, lambda: _run_cli("stages.data", _voc_exp(tmp_path, tiny_voc), work),
                           "[data] error: 1 of 6 listed images do not decode", str(jpg), "truncated",
                           "remove their ids")
    assert not (work / "data").exists()


def test_empty_val_list_fails_before_any_image_is_read(tiny_voc, tmp_path, capsys):
    (tiny_voc.root / "ImageSets/Segmentation/val.txt").write_text("")
    (tiny_voc.root / "ImageSets/Segmentation/test.txt").unlink()      # test: only a warning
    work = tmp_path / "work"
    _expect_one_line_error(capsys, lambda: _run_cli("stages.data", _voc_exp(tmp_path, tiny_voc), work),
                           "split 'val' is empty but classifier.val.split, eval.split need it",
                           "val.txt")
    assert not (work / "data").exists()


def test_data_stage_lists_label_disagreements(tiny_voc, tmp_path, capsys):
    work = tmp_path / "work"
    man = _run_cli("stages.data", _voc_exp(tmp_path, tiny_voc), work)
    listed = json.loads((work / "data" / "label_disagreements.json").read_text())
    assert man["metrics"]["label_disagreements"] == len(listed) == 2
    assert {"id": "img_c", "xml": ["cat"], "mask": ["cat", "car"]} in listed
    assert "img_c: xml ['cat'] mask ['cat', 'car']" in capsys.readouterr().out


def test_bad_mask_and_missing_folder_are_one_line_errors(tiny_voc, tmp_path, capsys):
    mask = tiny_voc.root / "SegmentationClass" / "img_a.png"
    Image.fromarray(np.full((6, 8), 9, np.uint8)).save(mask)          # class 9 of 4
    exp, work = _voc_exp(tmp_path, tiny_voc), tmp_path / "work"
    _expect_one_line_error(capsys, lambda: _run_cli("stages.data", exp, work),
                           str(mask), "mask values [9] outside 0..3", "data.root=")
    _expect_one_line_error(capsys, lambda: _run_cli("stages.data", exp, work,
                                                    f"data.root={tmp_path / 'nowhere'}"),
                           str(tmp_path / "nowhere" / "JPEGImages"), "data.root=", "VOC_ROOT=")
    assert not (work / "data").exists() and not (work / ".partial" / "data" / "manifest.json").exists()


# ------------------------------------------------------------------ saliency import ------------

def test_colour_saliency_map_is_rejected_unless_allowed(tiny_voc, tmp_path, capsys):
    sal = tmp_path / "sal"
    sal.mkdir()
    for k, img_id in enumerate(["img_a", "img_b", "img_c"]):
        Image.fromarray(np.full((6, 8), 40 * k, np.uint8)).save(sal / f"{img_id}.png")
    Image.fromarray(np.full((6, 8, 3), 128, np.uint8)).save(sal / "img_b.png")   # grey stored as RGB
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[..., 0] = 255                                                          # a red "heatmap"
    Image.fromarray(colour).save(sal / "img_c.png")
    exp, work = _voc_exp(tmp_path, tiny_voc, sal=str(sal)), tmp_path / "work"
    _run_cli("stages.data", exp, work)
    _expect_one_line_error(capsys, lambda: _run_cli("stages.saliency", exp, work),
                           str(sal / "img_c.png"), "one grey channel", "saliency.allow_colour=True")
    assert not (work / "saliency").exists()
    man = _run_cli("stages.saliency", exp, work, "saliency.allow_colour=True")
    assert man["metrics"]["colour_maps_converted"] == 1
    assert "1 colour map(s) converted to luma" in capsys.readouterr().out
    with Image.open(work / "saliency" / "maps" / "img_c.png") as im:
        assert np.asarray(im).max() == round(0.299 * 255)


# ------------------------------------------------------------------ entry-point failures -------

FAKE_STAGE = """
import errno, os
from pipeline.settings.checks import Str
from pipeline.settings.section import make_section
from pipeline.runtime.stage import StageError
from stages.common import main_for
STAGE = "fake"
UPSTREAM = ()
SETTINGS = make_section("fake", mode=Str())                 # its config section
def run(ctx):
    mode = ctx.section["mode"]
    (ctx.out / "out.txt").write_text(mode)
    if mode == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ctx.out / "big.bin"))
    if mode == "interrupt":
        raise KeyboardInterrupt
    if mode == "bug":
        return 1 / 0
    if mode == "config":
        class ConfigError(StageError):
            pass
        raise ConfigError("fake.mode: not a mode; use ok")
    return {"counts": {"files": 1}}
"""


@pytest.fixture
def fake_stage(tmp_path, monkeypatch):
    exp = install_fake_stage(tmp_path, monkeypatch, "fake_stage_mod", FAKE_STAGE)
    work = tmp_path / "work"
    _run_cli("fake_stage_mod", exp, work)
    return lambda mode, **kw: _run_cli("fake_stage_mod", exp, work, f"fake.mode={mode}", force=True, **kw)


def _previous_output_intact(work: Path) -> None:
    assert (work / "fake" / "out.txt").read_text() == "ok"
    assert read_manifest(work / "fake")["config"] == {"mode": "ok"}


def test_full_disk_is_a_one_line_error_and_keeps_the_previous_output(fake_stage, tmp_path, capsys):
    work = tmp_path / "work"
    _expect_one_line_error(capsys, lambda: fake_stage("enospc"), "no space left on the device",
                           str(work / ".partial" / "fake" / "big.bin"), "WORK_DIR=")
    _previous_output_intact(work)


def test_read_only_work_dir_is_a_one_line_error(fake_stage, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    real_mkdir = Path.mkdir

    def refuse(self, *a, **kw):                  # what a read-only WORK_DIR does (CI runs as root)
        if str(self).startswith(str(work)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", refuse)
    _expect_one_line_error(capsys, lambda: fake_stage("ok"), "permission denied", str(work),
                           "writable")
    monkeypatch.setattr(Path, "mkdir", real_mkdir)
    _previous_output_intact(work)


def test_interrupted_run_says_how_to_resume(fake_stage, tmp_path, capsys):
    work = tmp_path / "work"
    _expect_one_line_error(capsys, lambda: fake_stage("interrupt"), "interrupted",
                           str(work / ".partial" / "fake"), "run the same command again", code=130)
    _previous_output_intact(work)
    assert (work / ".partial" / "fake" / "out.txt").read_text() == "interrupt"


def test_config_errors_are_one_liners_and_debug_shows_tracebacks(fake_stage, capsys, monkeypatch):
    _expect_one_line_error(capsys, lambda: fake_stage("config"), "[fake] error: fake.mode: not a mode")
    monkeypatch.setenv("DEBUG", "1")
    with pytest.raises(OSError, match="No space left"):
        fake_stage("enospc")
    monkeypatch.delenv("DEBUG")
    with pytest.raises(ZeroDivisionError):        # a bug keeps its traceback
        fake_stage("bug")


def test_check_submission_reports_a_truncated_archive(tiny_voc, tmp_path, capsys):
    from pipeline.data.prepare import prepare_dataset
    from pipeline.data.submission import (SUBMISSION_SUBDIR, make_submission_archive,
                                          write_prediction_png)
    from stages.check_submission import main as check_main

    work = tmp_path / "work"
    prepare_dataset(tiny_voc.root, work / "data")
    res = tmp_path / "res"
    write_prediction_png(res / SUBMISSION_SUBDIR.format(comp="comp6") / "img_f.png",
                         np.zeros((6, 8), np.uint8), 4)
    tgz = tmp_path / "results.tgz"
    make_submission_archive(res, tgz)
    assert check_main(["--work-dir", str(work), "--dir", str(tgz)]) == 0
    capsys.readouterr()
    tgz.write_bytes(tgz.read_bytes()[: len(tgz.read_bytes()) // 2])
    assert check_main(["--work-dir", str(work), "--dir", str(tgz)]) == 1
    out = capsys.readouterr()
    assert "truncated or corrupt archive" in out.out and "Traceback" not in out.err


# ------------------------------------------------------------------ Makefile OPTS --------------

def test_make_passes_opts_with_parentheses_spaces_and_quotes(tmp_path):
    dump = tmp_path / "dump_argv.py"
    dump.write_text("import json, sys\nprint('ARGV=' + json.dumps(sys.argv[1:]))\n")
    opts = "eval.scales=(0.75, 1.0) seeds.bg_sal=0.05 experiment.name='my run' data.root=\"/a b/it's\""
    out = subprocess.run(["make", "-s", "-C", str(REPO), "-o", ".venv/.stamp", "eval",
                          f"PY={sys.executable} {dump}", f"OPTS={opts}", "WORK_DIR=/tmp/w"],
                         capture_output=True, text=True, check=True).stdout
    argv = json.loads(out.split("ARGV=", 1)[1])
    assert argv[:2] == ["-m", "stages.eval"]
    args = parse_args("eval", argv[2:])
    assert args.opts == {"eval.scales": (0.75, 1.0), "seeds.bg_sal": 0.05,
                         "experiment.name": "my run", "data.root": "/a b/it's"}
    assert args.work_dir == "/tmp/w"
