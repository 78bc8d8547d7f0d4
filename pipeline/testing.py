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
