"""Helpers for tests of the stages (importable because pytest's importlib mode cannot share
modules between test files)."""
from __future__ import annotations

import torch


def save_untrained_classifier(ctx) -> dict:
    """A fake `classifier` stage ``run``: an untrained classifier of ``ctx.section['model']``
    whose class maps vary in sign (std-1 classifier weights), saved as ``model.pth``."""
    from pipeline.data.index import DatasetIndex
    from pipeline.models.checkpoint import save_model
    from pipeline.models.classifier import build_classifier

    index = DatasetIndex.load(ctx.upstream_dir("data"))
    torch.manual_seed(0)
    cfg = ctx.section["model"].to_dict()
    net = build_classifier(cfg, index.num_classes - 1)
    torch.nn.init.normal_(net.classifier.weight, std=1.0)
    save_model(ctx.out / "model.pth", net, "classifier", cfg, index.num_classes - 1, index.classes)
    return {"counts": {}, "metrics": {}}


def tiny_work_dir(root, exp_text: str, classifier_run=save_untrained_classifier):
    """Write ``exp_text`` to ``root/exp.py``, run the data stage and a fake classifier stage
    (``classifier_run``) into ``root/work``; return ``(exp_path, work_dir, cfg)``."""
    from pathlib import Path

    import stages.data
    from pipeline.stage import run_stage
    from stages.common import load_experiment

    root = Path(root)
    exp = root / "exp.py"
    exp.write_text(exp_text)
    wd = root / "work"
    cfg = load_experiment(exp)
    run_stage("data", (), stages.data.run, cfg, cfg.data, wd)
    run_stage("classifier", ("data",), classifier_run, cfg, cfg.classifier, wd)
    return exp, wd, cfg


def write_exp(tmp_path, text: str):
    """Write an experiment file ``tmp_path/exp.py`` (``text`` dedented); return its path."""
    import textwrap
    from pathlib import Path

    path = Path(tmp_path) / "exp.py"
    path.write_text(textwrap.dedent(text))
    return path


def run_stage_cli(module: str, exp, work, *opts: str, force: bool = False):
    """A stage through its command-line entry (``main_for``), as ``make`` runs it."""
    from stages.common import main_for

    argv = ["--exp", str(exp), "--work-dir", str(work)] + (["--opts", *opts] if opts else [])
    return main_for(module, argv + (["--force"] if force else []))


def expect_one_line_error(capsys, fn, *needles, code: int = 1) -> str:
    """Run ``fn``: it must exit with ``code`` and at most two stderr lines, no traceback,
    containing every needle; returns stderr."""
    import pytest

    with pytest.raises(SystemExit) as exc:
        fn()
    err = capsys.readouterr().err
    assert exc.value.code == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err
