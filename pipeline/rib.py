"""RIB heatmaps: per-image fine-tuning that reduces the information bottleneck.

Lee et al., "Reducing Information Bottleneck for Weakly Supervised Semantic Segmentation"
(NeurIPS 2021; docs/ALGORITHMS.md §8.2). For one target image with classes Y:

1. the trained classifier is fine-tuned for a few ``steps`` (10) on a batch made of the target
   image at several ``scales`` with horizontal flips plus images that share no class with it
   ("negatives", with their own labels), using the raw-logit loss without the last activation

       L = -Σ_b Σ_k y_bk · F_bk                    ('sum'; 'mean' divides by the batch size)

   and GNDRP pooling (``tau`` = 0.4; pipeline/models/pooling.py) for the labelled classes;
   SGD with a poly learning-rate decay over the steps, ``lr`` (8e-6 for VOC, as RIB) and
   ``classifier_lr_mult`` × lr for the 1x1 classifier (RIB's 10× for the new layers);
2. before each update the CAM of the target image, ReLU(Wᵀv + b) for its classes (flip-merged,
   upsampled to the image size, summed over scales), is added to an accumulator;
3. early stop (RIB's guards): when a labelled logit of the target views exceeds ``max_logit``
   (the logits "explode"; checked before the update, whose CAM is then already accumulated),
   or — from step 1 on, checked on the first scale before accumulating — when the union over
   its classes of ``cam / max cam > explode_th`` (0.3) covers more than ``explode_ratio`` (70%)
   of the pixels; also (a guard of ours) when a logit or CAM of the step is not finite (that
   step's CAM is then not accumulated);
4. the accumulated maps are normalised per class (``ReLU(h) / max h``).

Copy-free: the network is fine-tuned in place — no model copy — and restored exactly afterwards
(``state_dict`` clone loaded back, gradients, ``requires_grad`` flags, pooling rule, per-module
train/eval flags and a caller-supplied optimizer's state). By default the forward passes run in
eval mode (``train_mode=False``: BatchNorm keeps its running statistics and dropout is off), as
RIB's ResNet with frozen BatchNorm; ``train_mode=True`` fine-tunes in train mode.

Processes: :func:`rib_heatmaps` handles one image in the calling process; nothing here forks.
Parallelism is left to the caller (shard the image ids over processes, each loading its own
model — results do not depend on the order since the weights are restored after every image).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from pipeline.geometry import grid_to_frame
from pipeline.heatmaps import normalise_per_class

__all__ = ["RIB_OPTIONS", "rib_heatmaps", "plain_cam", "pick_negatives"]

# the options of rib_heatmaps (every one must be given; reference values in configs/_base_/cues.py)
RIB_OPTIONS = (
    "steps",                       # fine-tuning steps per image (RIB_iter)
    "lr",                          # RIB_lr (VOC: 8e-6 with the 'sum' loss)
    "classifier_lr_mult",          # lr multiplier of the 1x1 classifier
    "weight_decay",
    "momentum",                    # RIB: plain SGD (PolyOptimizer), momentum 0
    "poly_power",                  # lr · (1 - step/steps)^poly_power
    "scales",                      # target views (the first is used for the coverage check)
    "flip",
    "tau",                         # GNDRP threshold
    "max_logit",                   # stop when a labelled target logit exceeds this
    "explode_th",                  # coverage check: normalised CAM > explode_th ...
    "explode_ratio",               # ... on more than this fraction of the pixels -> stop
    "neg_batch",                   # negatives per step (random subset when more are given)
    "loss_reduction",              # 'sum' (RIB) | 'mean' (over the images of the batch)
    "train_mode",                  # False: eval-mode forwards (frozen BN statistics, no dropout)
    "seed",                        # negatives sub-sampling
)


def _cfg(cfg) -> dict:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(RIB_OPTIONS))
    missing = [k for k in RIB_OPTIONS if k not in cfg]
    if unknown or missing:
        raise ValueError(f"RIB options: unknown {unknown}, missing {missing}; expected {list(RIB_OPTIONS)}")
    return cfg


def _views(image: torch.Tensor, scales, flip: bool) -> list[torch.Tensor]:
    H, W = image.shape[-2:]
    out = []
    for s in scales:
        size = (max(1, int(round(H * s))), max(1, int(round(W * s))))
        x = image[None] if size == (H, W) else F.interpolate(
            image[None], size=size, mode="bilinear", align_corners=False)
        out.append(torch.cat([x, x.flip(-1)]) if flip else x)
    return out


def _merged_cam(cam: torch.Tensor, flip: bool, view_size, size) -> torch.Tensor:
    """ReLU CAM of a view batch (1 or 2 with flip) of input size ``view_size`` → (K, H, W)
    flip-merged, at ``size`` (stride-8 alignment, :func:`pipeline.geometry.grid_to_frame`; the
    mirrored view's map is mirrored back after upsampling)."""
    cam = grid_to_frame(cam.detach().float().clamp_min(0), view_size, size)
    return cam[0] + cam[1].flip(-1) if flip else cam[0]


def _raw_logit_sum(out: dict, targets: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """Σ_b Σ_k y_bk F_bk of the main logits plus ``aux_weight`` × the same for BEW branches."""
    total = (out["logits"] * targets).sum()
    for aux in out.get("aux_logits", []):
        total = total + aux_weight * (aux * targets).sum()
    return total


def _coverage(cam: torch.Tensor, present: torch.Tensor, th: float) -> float:
    c = cam[present]
    norm = c / (c.flatten(1).amax(1).view(-1, 1, 1) + 1e-5)
    return float((norm > th).any(0).float().mean())


@torch.no_grad()
def plain_cam(net, image: torch.Tensor, labels: torch.Tensor, scales=(1.0,), flip: bool = True):
    """The unmodified network's heatmaps accumulated like RIB's step 0: (K, H, W), labelled
    classes normalised to max 1, others 0 (for comparison with :func:`rib_heatmaps`)."""
    was = [m.training for m in net.modules()]
    net.eval()
    try:
        device = next(net.parameters()).device
        image = image.to(device)
        present = labels.to(device) > 0
        acc = torch.zeros((len(labels), *image.shape[-2:]), device=device)
        for x in _views(image, scales, flip):
            acc += _merged_cam(net(x)["cam"], flip, x.shape[-2:], image.shape[-2:])
        acc[~present] = 0
        return normalise_per_class(acc)
    finally:
        for m, flag in zip(net.modules(), was):
            m.training = flag


def rib_heatmaps(net, image: torch.Tensor, labels: torch.Tensor,
                 negatives: torch.Tensor | None, cfg: dict,
                 negative_labels: torch.Tensor | None = None,
                 optimizer: torch.optim.Optimizer | None = None, return_info: bool = False):
    """RIB heatmaps of one image (see the module docstring).

    ``net``: a ``WSSSClassifier`` (fine-tuned in place, restored before returning, also on
    error); ``image`` (3, H, W) normalised tensor; ``labels`` (K,) multi-hot over the K
    foreground channels; ``negatives`` (N, 3, h, w) images sharing no class with it (or None);
    ``negative_labels`` (N, K) their labels — RIB raises the negatives' own class logits; with
    None they get all-zero labels and add nothing to the loss (they then only matter for
    BatchNorm with ``train_mode=True``). ``cfg``: every option of :data:`RIB_OPTIONS`.
    ``optimizer``: optional optimizer over ``net``'s parameters (its state is restored too);
    default a fresh SGD per call. Returns ``cam`` (K, H, W) on the image's device — labelled
    classes normalised to max 1, others 0 — and with ``return_info`` also ``info`` =
    ``dict(steps (CAMs accumulated), updates, stop ('steps' | 'logit' | 'coverage' |
    'nonfinite' | 'no_labels'), max_logit [per step], coverage [per step])``.
    """
    cfg = _cfg(cfg)
    device = next(net.parameters()).device
    image = image.to(device)
    labels = labels.to(device=device, dtype=torch.float32)
    present = labels > 0
    H, W = image.shape[-2:]
    K = labels.numel()
    info = dict(steps=0, updates=0, stop="steps", max_logit=[], coverage=[])
    acc = torch.zeros((K, H, W), device=device)
    if not present.any():
        info["stop"] = "no_labels"
        return (acc, info) if return_info else acc

    saved_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    saved_modes = [m.training for m in net.modules()]
    params = list(net.parameters())
    saved_flags = [p.requires_grad for p in params]
    saved_grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    saved_pooling, saved_pooling_cfg = net.pooling, dict(net.pooling_cfg)
    user_opt = optimizer
    saved_opt = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    try:
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        net.train(bool(cfg["train_mode"]))
        net.set_pooling("gndrp", tau=float(cfg["tau"]))
        if optimizer is None:
            head = {id(p) for p in net.classifier.parameters()}
            optimizer = torch.optim.SGD(
                [{"params": [p for p in params if id(p) not in head], "lr": float(cfg["lr"])},
                 {"params": [p for p in params if id(p) in head],
                  "lr": float(cfg["lr"]) * float(cfg["classifier_lr_mult"])}],
                lr=float(cfg["lr"]), momentum=float(cfg["momentum"]),
                weight_decay=float(cfg["weight_decay"]))
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        _finetune(net, optimizer, base_lrs, image, labels, present, negatives, negative_labels,
                  cfg, acc, info)
    finally:
        net.load_state_dict(saved_state)
        for p, flag, grad in zip(params, saved_flags, saved_grads):
            p.requires_grad_(flag)
            p.grad = grad
        net.pooling, net.pooling_cfg = saved_pooling, saved_pooling_cfg
        for m, flag in zip(net.modules(), saved_modes):
            m.training = flag
        if user_opt is not None:
            user_opt.load_state_dict(saved_opt)
    acc[~present] = 0
    cam = normalise_per_class(acc)
    return (cam, info) if return_info else cam


def _finetune(net, optimizer, base_lrs, image, labels, present, negatives, negative_labels,
              cfg, acc, info) -> None:
    steps, flip = int(cfg["steps"]), bool(cfg["flip"])
    views = _views(image, tuple(cfg["scales"]), flip)
    n_target = sum(v.shape[0] for v in views)
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    if negatives is not None and len(negatives) == 0:
        negatives = None
    if negatives is not None:
        negatives = negatives.to(image.device)
        neg_labels = (torch.zeros((len(negatives), labels.numel()), device=image.device)
                      if negative_labels is None else negative_labels.to(image.device, torch.float32))
    aux_w = float(getattr(net, "bew_loss_weight", 0.0))
    with torch.enable_grad():
        for step in range(steps):
            factor = (1.0 - step / steps) ** float(cfg["poly_power"]) if steps > 0 else 1.0
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * factor
            optimizer.zero_grad(set_to_none=True)
            neg_idx = None
            if negatives is not None:
                n = min(int(cfg["neg_batch"]), len(negatives))
                neg_idx = torch.randperm(len(negatives), generator=gen)[:n].to(image.device)
            batch = n_target + (0 if neg_idx is None else len(neg_idx))
            scale = 1.0 if cfg["loss_reduction"] == "sum" else 1.0 / batch
            step_cam = torch.zeros_like(acc)
            max_logit = -math.inf
            for i, x in enumerate(views):
                tgt = labels.expand(x.shape[0], -1)
                out = net(x, labels=tgt)
                cam = _merged_cam(out["cam"], flip, x.shape[-2:], acc.shape[-2:])
                if i == 0 and step > 0:
                    cov = _coverage(cam, present, float(cfg["explode_th"]))
                    info["coverage"].append(cov)
                    if cov > float(cfg["explode_ratio"]):
                        info["stop"] = "coverage"
                        return
                step_cam += cam
                top = float(out["logits"].detach()[:, present].max())
                max_logit = top if not math.isfinite(top) else max(max_logit, top)
                if not math.isfinite(top) or not bool(torch.isfinite(cam).all()):
                    info["stop"] = "nonfinite"
                    return
                (-scale * _raw_logit_sum(out, tgt, aux_w)).backward()
            acc += step_cam
            info["steps"] += 1
            info["max_logit"].append(max_logit)
            if max_logit > float(cfg["max_logit"]):
                info["stop"] = "logit"
                return
            if neg_idx is not None:
                out = net(negatives[neg_idx], labels=neg_labels[neg_idx])
                (-scale * _raw_logit_sum(out, neg_labels[neg_idx], aux_w)).backward()
            optimizer.step()
            info["updates"] += 1


def pick_negatives(labels_by_id: dict, classes, n: int, rng=None, exclude=()) -> list[str]:
    """Up to ``n`` ids (random order) whose label lists share no class with ``classes``."""
    import random

    rng = rng or random.Random(0)
    wanted = {int(c) for c in classes}
    skip = set(exclude)
    pool = [i for i, labs in labels_by_id.items()
            if i not in skip and labs and not wanted & {int(c) for c in labs}]
    rng.shuffle(pool)
    return pool[:n]
