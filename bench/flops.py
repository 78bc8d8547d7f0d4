"""FLOPs of the two networks (``torch.utils.flop_counter.FlopCounterMode``), for docs/PERFORMANCE.md.

Counted on the ``meta`` device (no computation, no memory): the VGG-16 classifier
(``build_classifier``, EP pooling) and DeepLab v2 VGG-16 ASPP (``build_segmenter``) at the VOC input
size 321×321, width 1.0, per image: forward, and forward + backward (the backward of a sum of the
logits w.r.t. weights and activations, = the training step without the optimizer). A FLOP is one
multiply or one add (a multiply-accumulate = 2 FLOPs), as FlopCounterMode counts.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import row

NAME = "flops"
DEFAULTS = dict(size=321, width=1.0, num_classes=21)


def _logits(out):
    return out["logits"] if isinstance(out, dict) else out


def build_net(kind: str, width: float = 1.0, num_classes: int = 21, batch_norm: bool = False, **seg):
    """The classifier (``num_classes - 1`` foreground outputs) or the segmenter, random init."""
    if kind == "classifier":
        from pipeline.models.classifier import build_classifier
        return build_classifier({"backbone": {"width": width, "batch_norm": batch_norm}, "pretrained": None},
                                num_classes - 1)
    from pipeline.models.deeplab import build_segmenter
    return build_segmenter({"width": width, "batch_norm": batch_norm, "pretrained": None, **seg}, num_classes)


def count_flops(kind: str, size: int = 321, width: float = 1.0, num_classes: int = 21, **seg) -> dict:
    """``{"forward": FLOPs, "forward_backward": FLOPs, "params": n}`` per image (batch 1)."""
    with torch.device("meta"):
        net = build_net(kind, width, num_classes, **seg)
    x = torch.empty(1, 3, int(size), int(size), device="meta")
    fwd = FlopCounterMode(display=False)
    with fwd:
        _logits(net(x))
    both = FlopCounterMode(display=False)
    with both:
        _logits(net(x)).sum().backward()
    return {"forward": fwd.get_total_flops(), "forward_backward": both.get_total_flops(),
            "params": sum(p.numel() for p in net.parameters())}


def run(cfg: dict, ctx) -> list[dict]:
    cfg = {**DEFAULTS, **cfg}
    S, w = int(cfg["size"]), float(cfg["width"])
    rows = []
    names = {"classifier": "VGG-16 classifier (EP)", "segmenter": "DeepLab v2 VGG-16 ASPP"}
    for kind in ("classifier", "segmenter"):
        f = count_flops(kind, S, w, int(cfg["num_classes"]))
        ctx.shared[f"flops_{kind}"] = {**f, "size": S, "width": w}
        rows.append(row(NAME, f"{names[kind]} FLOPs per image at {S}×{S}, width {w:g} (fwd+bwd)",
                        f["forward_backward"] / 1e9, "GFLOP",
                        notes=f"forward {f['forward'] / 1e9:.1f} GFLOP; {f['params'] / 1e6:.1f} M parameters; "
                              "counted by FlopCounterMode on the meta device",
                        extra={**f, "size": S, "width": w}))
    return rows
