"""The real-photo configuration's parts on CUDA equal the CPU (skipped without CUDA; on a GPU
machine with a stock PyTorch: ``python3 -m pytest tests/test_cuda_realphoto.py``): the
EfficientNet-Lite2 trunk with multi-level taps, DeepLabV2Lite with its 1×1 projection, the
training-free affinity refinement, and the class-balanced DSRG seeding loss and cross-entropy
(``configs/realphoto_cpu.py``; docs/ALGORITHMS.md §3.4, §4.1, §5.4). TF32 is off, so CPU and GPU
differ only by float32 rounding. Needs torch and numpy only (the config is read with
bench.plain_config)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from bench.plain_config import plain_config
from pipeline.affinity import refine_cam
from pipeline.dsrg import ce_loss, dsrg_losses
from pipeline.losses import class_balance_weights
from pipeline.models.deeplab import build_segmenter
from pipeline.settings.segmenter import SegmenterSettings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")

EXP = Path(__file__).resolve().parent.parent / "configs" / "realphoto_cpu.py"
C = 21


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _segmenter_section() -> dict:
    return plain_config(str(EXP))["segmenter"]


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> None:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    scale = b.abs().max().clamp_min(1.0)
    assert float((a - b).abs().max() / scale) < tol, float((a - b).abs().max())


def test_lite2_segmenter_with_taps_and_projection_cpu_equals_cuda():
    sec = _segmenter_section()
    torch.manual_seed(0)
    net = build_segmenter({**sec["model"], "pretrained": None}, C).eval()
    assert net.backbone.out_channels == 120 + 352 + 1280 and net.reduce is not None
    x = torch.randn(2, 3, 225, 225)
    with torch.no_grad():
        trunk_cpu, out_cpu = net.trunk(x), net(x)
        net_gpu = net.cuda()
        trunk_gpu, out_gpu = net_gpu.trunk(x.cuda()), net_gpu(x.cuda())
        from_trunk = net_gpu(trunk_gpu, from_trunk=True)
    assert out_gpu.shape == (2, C, 29, 29) and trunk_gpu.shape[1] == 1752
    _close(trunk_gpu, trunk_cpu)
    _close(out_gpu, out_cpu)
    _close(from_trunk, out_gpu, 1e-6)            # the cached-trunk path is the same network


def test_affinity_refinement_cpu_equals_cuda():
    g = torch.Generator().manual_seed(1)
    cam, feats = torch.randn(2, 4, 29, 29, generator=g), torch.randn(2, 64, 29, 29, generator=g)
    cpu = refine_cam(cam, feats, beta=8.0, radius=5, iterations=10)
    gpu = refine_cam(cam.cuda(), feats.cuda(), beta=8.0, radius=5, iterations=10)
    assert gpu.device.type == "cuda"
    _close(gpu, cpu)


def test_class_balanced_losses_cpu_equals_cuda():
    sec = _segmenter_section()
    cfg = dataclasses.replace(SegmenterSettings.from_dict(sec, "segmenter").dsrg_config(), crf_backend="torch")
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, C, 29, 29, generator=g)
    labels = torch.randint(0, C, (2, 225, 225), generator=g)
    labels[:, ::3] = 255
    classes = torch.zeros(2, C, dtype=torch.bool)
    classes[:, [0, 3, 7]] = True
    labels[~torch.isin(labels, torch.tensor([3, 7, 255]))] = 0
    images = torch.randint(0, 256, (2, 225, 225, 3), dtype=torch.uint8, generator=g)
    weights = class_balance_weights(torch.arange(1, C + 1).float() ** 2, power=0.5, max_weight=50.0)
    cpu = dsrg_losses(logits, labels, classes, images, cfg, class_weights=weights)
    gpu = dsrg_losses(logits.cuda(), labels.cuda(), classes.cuda(), images.cuda(), cfg, class_weights=weights)
    plain = dsrg_losses(logits.cuda(), labels.cuda(), classes.cuda(), images.cuda(), cfg)
    assert gpu["loss_seed"].device.type == "cuda"
    _close(gpu["loss_seed"], cpu["loss_seed"])
    assert not torch.isclose(gpu["loss_seed"], plain["loss_seed"])      # the weights act
    for res in ("input", "output"):
        _close(ce_loss(logits.cuda(), labels.cuda(), res, weights), ce_loss(logits, labels, res, weights))
