"""Command line of every stage: ``python -m stages.<name> --exp CFG [--work-dir D] [--opts a.b=1 ...]``.

This is the framework edge: it loads the experiment with mmengine's ``Config`` (``_base_``
inheritance, ``--cfg-options``-style overrides), sets up torch.distributed under torchrun,
and hands over to :func:`pipeline.runtime.stage.run_stage`.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import traceback
from pathlib import Path

from pipeline.settings import ConfigError, Settings
from stages.opts import add_opts_argument, expand_opts_line, parse_command_line  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXP = REPO_ROOT / "configs" / "demo_synthetic.py"


def parse_args(stage: str, argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m stages.{stage}",
                                description=f"Run the {stage!r} stage of an experiment.")
    p.add_argument("--exp", default=str(DEFAULT_EXP), help="experiment config file")
    p.add_argument("--work-dir", default=None,
                   help="output folder (default: <repo>/work_dirs/<experiment name>)")
    add_opts_argument(p)
    p.add_argument("--force", action="store_true", help="re-run even when the stage is fresh")
    return p.parse_args(expand_opts_line(argv))


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def load_config(exp: str | os.PathLike) -> dict:
    """The experiment config as a plain dict (mmengine's ``Config``: ``_base_`` inheritance),
    not yet checked."""
    from mmengine.config import Config

    path = Path(exp).expanduser()
    if not path.is_file():
        raise ConfigError(f"experiment config not found: {path}")
    try:
        return Config.fromfile(str(path.resolve())).to_dict()
    except Exception as exc:  # noqa: BLE001 - a config file is Python: what it raises is its error
        raise config_file_error(path, exc) from exc


def _syntax_error_line(exc: SyntaxError, frames) -> tuple[str | None, int | None]:
    """``(file, line)`` of a syntax error mmengine raised while parsing a config file (its
    message names neither): the file is its parser's ``filename``, compiled again for the line."""
    names = [frame.f_locals.get("filename") for frame, _ in frames]
    file = next((f for f in reversed(names) if isinstance(f, str) and Path(f).is_file()), None)
    if file is None:
        return None, exc.lineno
    try:
        compile(Path(file).read_text(), file, "exec")
    except SyntaxError as again:
        return file, again.lineno
    return file, exc.lineno


def _config_line(exc: Exception) -> tuple[str | None, int | None]:
    """``(file, line)`` of the config code that raised ``exc``: the innermost frame outside the
    Python installation and this module."""
    frames = list(traceback.walk_tb(exc.__traceback__))
    if isinstance(exc, SyntaxError):
        return _syntax_error_line(exc, frames)
    installed = (sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(__file__)))
    for frame, line in reversed(frames):
        file = frame.f_code.co_filename
        if file.endswith(".py") and not file.startswith(installed):
            return file, line
    return None, None


def config_file_error(path: Path, exc: Exception) -> ConfigError:
    """The one-line error of an experiment file mmengine could not load: a ``_base_`` file
    that does not resolve, a syntax error, an undefined name or any other error its code
    raises, with the file and line at fault and the fix."""
    shown = _shown(path)
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return ConfigError(f"{shown}: _base_ file {exc.filename} not found: _base_ paths are "
                           f"relative to the config's own folder ({_shown(path.resolve().parent)}): "
                           f"fix the path, make it absolute, or keep the config next to configs/_base_/")
    file, line = _config_line(exc)
    where = f"{_shown(Path(file).resolve())}:{line}" if file else shown
    of = f" (a _base_ file of {shown})" if file and Path(file).resolve() != path.resolve() else ""
    what = (f"syntax error ({exc.msg})" if isinstance(exc, SyntaxError)
            else f"{type(exc).__name__}: {exc}")
    return ConfigError(f"{where}{of}: {what}: fix that line (a config file is Python: strings "
                       f"in quotes, names defined before use)")


def load_experiment(exp: str | os.PathLike, opts: dict | None = None,
                    extra_sections: dict | None = None) -> Settings:
    """Load an experiment config, check it, apply and check the overrides ``opts``
    (``{"seeds.fg_top": 0.2}``, the command line's ``--opts``); return its typed settings.
    Any bad section, key or value raises :class:`pipeline.settings.ConfigError` (one line that
    names the file or OPTS and the key) before anything runs. ``extra_sections``: the typed
    sections of stage modules outside the project's (``{name: Section class}``)."""
    path = Path(exp).expanduser()
    raw = load_config(path)
    try:
        settings = Settings.from_dict(raw, extra_sections=extra_sections)
    except ConfigError as exc:
        raise ConfigError(f"{_shown(path)}: {exc}", exc.key) from None
    if opts:
        settings = settings.with_overrides(dict(opts), "OPTS")
    if settings.experiment.name is None:
        settings = dataclasses.replace(settings, experiment=settings.experiment.replace(name=path.stem))
    return settings


def config_exit(prog: str, exc: ConfigError) -> SystemExit:
    """The one-line exit of a command whose config is wrong (status 1, no traceback), worded
    as :func:`pipeline.runtime.errors.reported_errors` words the stages' errors."""
    return SystemExit(f"[{prog}] error: {exc}")


def load_experiment_or_exit(prog: str, exp, opts: dict | None = None) -> Settings:
    """:func:`load_experiment` for a command line ``prog``: a config error exits with one line."""
    try:
        return load_experiment(exp, opts)
    except ConfigError as exc:
        raise config_exit(prog, exc) from None


def default_work_dir(cfg) -> Path:
    return REPO_ROOT / "work_dirs" / cfg.experiment.name


def resolve_path(value: str | None) -> str | None:
    """Config paths are relative to the repository root, never to the current directory."""
    if value in (None, "", "none", "None"):
        return None
    p = Path(str(value)).expanduser()
    return str(p if p.is_absolute() else (REPO_ROOT / p).resolve())


def load_upstream_model(ctx, stage: str, kind: str, num_classes: int):
    """``(net, meta)`` from ``WORK_DIR/<stage>/model.pth``, checked against the dataset's classes
    (K foreground classes for a classifier, C with background for a segmenter)."""
    from pipeline.mm import MMSegUnavailable, load_any_model
    from pipeline.runtime.guards import check_model_finite
    from pipeline.runtime.stage import StageError

    path = ctx.upstream_dir(stage) / "model.pth"
    try:
        net, meta = load_any_model(path, kind=kind)
    except (FileNotFoundError, ValueError, MMSegUnavailable) as exc:
        raise StageError(str(exc)) from exc
    check_model_finite(net, str(path), f"re-run `make {stage}` (lower {stage}.train.optimizer.lr "
                       f"or set {stage}.train.amp=False if it diverges again)")
    if int(meta["num_classes"]) != int(num_classes):
        raise StageError(f"{path}: the {kind} has {meta['num_classes']} classes, the dataset "
                         f"{num_classes}: re-run `make {stage}` on this dataset")
    return net, meta


def split_ids(ctx) -> tuple:
    """``(index, split, ids)``: the data stage's index and the ids of the section's ``split``."""
    from pipeline.data.index import DatasetIndex

    index = DatasetIndex.load(ctx.upstream_dir("data"))
    split = ctx.section.split
    return index, split, index.ids(split)


def load_inference_classifier(ctx, index, section) -> tuple:
    """``(net, trained_pooling)``: the trained classifier (K = the dataset's foreground classes)
    in eval mode on ``ctx.device``, its pooling switched to ``section.pooling`` when that is set
    (e.g. EP inference on a GAP-trained model)."""
    net, _ = load_upstream_model(ctx, "classifier", "classifier", index.num_classes - 1)
    trained = net.pooling_name
    if section.pooling is not None:
        net.set_pooling(section.pooling)
    return net.eval().to(ctx.device), trained


def choose_device(cfg, rank_device: str | None = None) -> str:
    """The device a stage process uses: "cpu" when the experiment config says
    ``experiment.device="cpu"``; otherwise ``rank_device`` (this rank's GPU under torchrun,
    from :func:`setup_distributed`) when given, else "cuda" when CUDA is available, else "cpu"."""
    import torch

    if cfg.experiment.device == "cpu":
        return "cpu"
    if rank_device is not None:
        return rank_device
    return "cuda" if torch.cuda.is_available() else "cpu"


def setup_distributed() -> tuple[int, int, str | None]:
    """Initialise torch.distributed when launched by torchrun; return (rank, world, device of
    this rank); the device is None outside torchrun (:func:`choose_device` picks it)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend)
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        return dist.get_rank(), world, device
    return 0, 1, None


def stage_upstream(mod, section) -> tuple[str, ...]:
    """A stage module's upstream stages: ``mod.upstream_for(section)`` when the module's inputs
    depend on its config (eval/submit of ``segmenter`` or ``retrain``), else ``mod.UPSTREAM``."""
    fn = getattr(mod, "upstream_for", None)
    return tuple(fn(section) if fn is not None else mod.UPSTREAM)


def stage_section(mod, cfg):
    """The section a stage module's ``run`` gets: its own, or ``{name: section}`` for a stage
    that declares ``SECTIONS``."""
    return cfg.stage_section(mod.STAGE, getattr(mod, "SECTIONS", None))


def main_for(module_name: str, argv=None) -> dict:
    """Entry point used by each ``stages/<name>.py`` under ``if __name__ == '__main__'``.
    The experiment is loaded and checked before anything runs. Expected failures (bad input or
    config, missing upstream, permissions, full disk, Ctrl-C) end in a one-line message and a
    non-zero exit, unless ``DEBUG=1`` (:func:`pipeline.runtime.errors.reported_errors`)."""
    from pipeline.runtime.errors import reported_errors

    mod = sys.modules[module_name] if module_name in sys.modules else importlib.import_module(module_name)
    with reported_errors(mod.STAGE) as where:
        return _run_main(mod, argv, where)


def _run_main(mod, argv, where) -> dict:
    from pipeline.runtime.stage import run_stage
    from pipeline.runtime.upstream_opts import check_upstream_opts

    stage = mod.STAGE
    args = parse_args(stage, argv)
    extra = {stage: mod.SETTINGS} if hasattr(mod, "SETTINGS") else None   # a stage of its own
    cfg = load_experiment(args.exp, args.opts, extra)     # ConfigError: before anything runs
    section = stage_section(mod, cfg)
    upstream = stage_upstream(mod, section)
    work_dir = Path(args.work_dir).expanduser().resolve() if args.work_dir else default_work_dir(cfg)
    where.work_dir = work_dir
    check_upstream_opts(stage, work_dir, upstream, args.opts, cfg)   # OPTS of an upstream stage
    rank, world, rank_device = setup_distributed()
    device = choose_device(cfg, rank_device)
    return run_stage(stage, upstream, mod.run, cfg, section, work_dir,
                     force=args.force, device=device, rank=rank, world_size=world,
                     extra_manifest={"experiment": str(Path(args.exp).resolve())})
