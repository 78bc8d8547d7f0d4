"""What a user types or points at, when it is wrong, ends in one line naming the file, config key
or Make variable and the fix, and what is right reaches the config unchanged: malformed dataset
files, broken config files, malformed OPTS, quoted OPTS values, Makefile paths with spaces,
quotes and parentheses. The table of every case: docs/FAILURES.md."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.runtime.stage import read_manifest
from stage_helpers import (expect_one_line_error as _expect_one_line_error,
                           run_stage_cli as _run_cli,
                           write_voc_exp)

REPO = Path(__file__).resolve().parent.parent



def _voc_exp(tmp_path, tiny_voc):
    return write_voc_exp(tmp_path, tiny_voc.root)


# ------------------------------------------------------------------ 1. dataset files -----------

def _malformed_xml(root):
    (root / "Annotations/img_a.xml").write_text("<annotation><object><name>cat</name>")
    return "Annotations/img_a.xml", "unreadable VOC annotation XML", "repair or replace the file"


def _object_without_name(root):
    (root / "Annotations/img_a.xml").write_text("<annotation><object><pose>Left</pose></object></annotation>")
    return "Annotations/img_a.xml", "<object> #0 has no <name>", "delete the <object>"


def _rgb_mask(root):
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "SegmentationClass/img_a.png")
    return "SegmentationClass/img_a.png", "got mode 'RGB'", "not as colours"


def _truncated_mask(root):
    png = root / "SegmentationClass/img_a.png"
    png.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])
    return "SegmentationClass/img_a.png", "unreadable label PNG", "replace the file"


def _duplicate_id(root):
    lst = root / "ImageSets/Segmentation/train.txt"
    lst.write_text(lst.read_text() + "img_a\n")
    return "ImageSets/Segmentation/train.txt:4", "duplicate id 'img_a'", "delete one of the lines"


@pytest.mark.parametrize("breaks", [_malformed_xml, _object_without_name, _rgb_mask, _truncated_mask,
                                    _duplicate_id], ids=lambda f: f.__name__.strip("_"))
def test_malformed_dataset_file_is_one_line_naming_it(tiny_voc, tmp_path, capsys, breaks):
    file, what, fix = breaks(tiny_voc.root)
    work = tmp_path / "work"
    _expect_one_line_error(capsys, lambda: _run_cli("stages.data", _voc_exp(tmp_path, tiny_voc), work),
                           "[data] error: ", str(tiny_voc.root / file), what, fix, "data.root=")
    assert not (work / "data").exists()


# ------------------------------------------------------------------ 2. config files, OPTS ------

def _run_line(exp, work, line: str):
    """A stage as ``make`` runs it: OPTS as one ``--opts-line`` word."""
    from stages.common import main_for

    return main_for("stages.data", ["--exp", str(exp), "--work-dir", str(work), "--opts-line", line])


DEMO = REPO / "configs" / "demo_synthetic.py"


@pytest.mark.parametrize("text, needles", [
    ("experiment = dict(name='x', seed=0\n", ("exp.py:1: syntax error", "was never closed")),
    (f"_base_ = [{str(DEMO)!r}]\nexperiment = dict(name=demo)\n",
     ("exp.py:2: NameError: name 'demo' is not defined", "fix that line")),
    (DEMO.read_text(), ("exp.py: _base_ file", "_base_/classifier_vgg16_ep.py not found",
                        "relative to the config's own folder")),
], ids=["syntax_error", "undefined_name", "copied_config_relative_base"])
def test_broken_config_file_is_one_line_naming_file_and_line(tmp_path, capsys, text, needles):
    exp = tmp_path / "exp.py"
    exp.write_text(text)
    _expect_one_line_error(capsys, lambda: _run_cli("stages.data", exp, tmp_path / "work"),
                           "[data] error: ", str(exp.parent), *needles)
    assert not (tmp_path / "work" / "data").exists()


@pytest.mark.parametrize("line, needles", [
    ("seeds.fg_top", ("OPTS: 'seeds.fg_top' is not key=value", "seeds.fg_top=0.2")),
    ("eval.scales=(0.75,1.0", ("OPTS: eval.scales=(0.75,1.0: unbalanced brackets", "close every (")),
    ("eval.scales=[0.75,1.0))", ("unbalanced brackets",)),
    ("experiment.name='my run", ("quote is not closed", "balance the quotes")),
], ids=["word_without_equals", "open_bracket", "mismatched_brackets", "open_quote"])
def test_malformed_opts_are_one_line_errors(tmp_path, capsys, line, needles):
    _expect_one_line_error(capsys, lambda: _run_line(DEMO, tmp_path / "work", line), "[data] error: ",
                           *needles)
    assert not (tmp_path / "work" / "data").exists()


# ------------------------------------------------------------------ 3. quoted OPTS values ------

@pytest.mark.parametrize("argv, key, value", [
    (["--opts-line", "data.root='/x/VOC 2012 (copy)'"], "data.root", "/x/VOC 2012 (copy)"),
    (["--opts-line", "experiment.name='a,b' seeds.fg_top=0.2"], "experiment.name", "a,b"),
    (["--opts-line", "experiment.name=\"[it's], (x)\""], "experiment.name", "[it's], (x)"),
    (["--opts", "experiment.name='a,b'"], "experiment.name", "a,b"),          # python -m stages.x --opts
], ids=["path_with_spaces_and_parentheses", "comma", "brackets_and_quote", "direct_opts"])
def test_quoted_opts_values_reach_the_config_unchanged(argv, key, value):
    from stages.common import load_experiment, parse_args

    cfg = load_experiment(DEMO, parse_args("data", argv).opts)
    section, name = key.split(".")
    assert getattr(cfg.section(section), name) == value


def test_unquoted_opts_values_keep_their_types():
    from stages.common import parse_args

    opts = parse_args("eval", ["--opts-line", "eval.scales=(0.75, 1.0) seeds.fg_top=0.2 a.b=x,y "
                               "c.d=[1,2] e.f=None g.h=True"]).opts
    assert opts == {"eval.scales": (0.75, 1.0), "seeds.fg_top": 0.2, "a.b": ["x", "y"], "c.d": [1, 2],
                    "e.f": None, "g.h": True}


# ------------------------------------------------------------------ 4. Makefile paths ----------

def _make(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(REPO), "-o", ".venv/.stamp", *args],
                          capture_output=True, text=True, check=check)


def test_make_data_with_spaces_quotes_and_parentheses_in_every_path(tmp_path):
    """A real ``make data`` whose VOC_ROOT, EXP and WORK_DIR hold a space, a quote and parentheses."""
    from conftest import build_tiny_voc

    odd = tmp_path / "it's a (copy)"
    voc = build_tiny_voc(odd / "VOC 2012 (copy)")
    exp = write_voc_exp(odd, "unused")
    work = odd / "work dir, 1"
    _make("data", f"PY={sys.executable}", f"EXP={exp}", f"WORK_DIR={work}", f"VOC_ROOT={voc.root}")
    assert read_manifest(work / "data")["config"]["root"] == str(voc.root)
    assert read_manifest(work / "data")["experiment"] == str(exp)


def test_make_quotes_every_path_variable(tmp_path):
    dump = tmp_path / "dump_argv.py"
    dump.write_text("import json, sys\nprint('ARGV=' + json.dumps(sys.argv[1:]))\n")
    odd = "/x/it's VOC (copy), 2"
    out = _make("data", f"PY={sys.executable} {dump}", f"EXP={odd}/exp.py", f"WORK_DIR={odd}/w",
                f"VOC_ROOT={odd}/VOC", f"SBD_ROOT={odd}/SBD", f"AUG_DIR=rel dir/Aug",
                "OPTS=experiment.name='my run'").stdout
    from stages.common import parse_args

    args = parse_args("data", json.loads(out.split("ARGV=", 1)[1])[2:])
    assert (args.exp, args.work_dir) == (f"{odd}/exp.py", f"{odd}/w")
    assert args.opts == {"data.root": f"{odd}/VOC", "data.dataset": "voc", "data.sbd_root": f"{odd}/SBD",
                         "data.aug_dir": f"{REPO}/rel dir/Aug", "experiment.name": "my run"}


def test_make_clean_work_removes_only_the_quoted_folder(tmp_path):
    for name in ("a b", "a", "b"):
        (tmp_path / name).mkdir()
    _make("clean-work", f"WORK_DIR={tmp_path / 'a b'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_make_refuses_an_environment_folder_with_a_space():
    res = _make("-n", "data", "VENV=my venv", check=False)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "VENV=my venv: a space, quote or parenthesis cannot be" in res.stderr
