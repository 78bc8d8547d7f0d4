"""Pooling heads that turn the last feature map into image-level class logits.

Every head takes the last conv feature map ``U`` (B, C, h, w) and the classifier ``W``
(a 1x1 ``nn.Conv2d`` or an ``nn.Linear`` C -> K, with or without bias) and returns

    dict(logits=(B, K), cam=(B, K, h, w), lam=(B, h, w))

where ``cam_i = Wᵀ v_i + b`` is the per-location class map (the "localized class
prediction" F̂_i of the EP paper) and ``lam`` the entropy weights λ of Eq. 3. λ is computed by
every head, so that "EP inference" and visualisation work on any model. The heads hold no
parameters: swapping one for another keeps the ``state_dict`` unchanged.

Heads (``POOLING_HEADS`` maps config names to classes):

* ``"gap"``   global average pooling, ``logits = Wᵀ (1/hw) Σ_i v_i + b`` (EP paper Eq. 1).
* ``"ep"``    Entropy Pooling, ``logits = Wᵀ (1/hw) Σ_i λ_i v_i + b`` (EP paper Eq. 2-4,
              docs/ALGORITHMS.md §1).
* ``"gndrp"`` RIB's global non-dominant region pooling (Lee et al. NeurIPS 2021;
              docs/ALGORITHMS.md §8.1).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def classifier_weight_bias(classifier: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return ``(W, b)`` with ``W`` of shape (K, C) for a 1x1 ``nn.Conv2d`` or an ``nn.Linear``."""
    if isinstance(classifier, nn.Conv2d):
        if classifier.kernel_size != (1, 1) or classifier.groups != 1:
            raise ValueError(f"the classifier must be a 1x1 conv, got {classifier}")
        return classifier.weight.flatten(1), classifier.bias
    if isinstance(classifier, nn.Linear):
        return classifier.weight, classifier.bias
    raise TypeError(f"classifier must be nn.Conv2d (1x1) or nn.Linear, got {type(classifier).__name__}")


def class_activation_map(features: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None) -> torch.Tensor:
    """Per-location class scores ``cam[b, k, i] = W_kᵀ v_i + b_k`` for features (B, C, h, w)."""
    cam = torch.einsum("bchw,kc->bkhw", features, weight)
    if bias is not None:
        cam = cam + bias.view(1, -1, 1, 1)
    return cam


def entropy_weights(logits_map: torch.Tensor, detach: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """Entropy weighting coefficients λ of the EP paper (Wan et al. ICCV 2019, §3.2, Eq. 2-3;
    docs/ALGORITHMS.md §1.3).

    With ``p_i = softmax_k(F̂_i)`` over the K classes of the localized predictions
    ``logits_map`` (B, K, h, w):

        H_i = -Σ_k p_i(k) log p_i(k)                         (Eq. 2)
        λ_i = 1 - H_i / max_j H_j      (max over the h·w locations of one image)   (Eq. 3)

    so the most uncertain location gets λ = 0. Numerical guards (the paper leaves them open):
    ``log p`` comes from ``log_softmax`` and, as the factor of ``p log p`` only, is clamped at
    ``log(eps)`` (``p = 0`` terms give 0, not ``0·(-inf)``, for one-hot / extreme logits); an image whose max entropy is <= ``eps`` (every location
    one-hot) gets λ = 1 everywhere. ``detach=True`` stops gradients through λ.
    Returns λ of shape (B, h, w), values in [0, 1].
    """
    if logits_map.dim() != 4:
        raise ValueError(f"expected (B, K, h, w) localized predictions, got {tuple(logits_map.shape)}")
    log_p = F.log_softmax(logits_map, dim=1)
    entropy = -(log_p.exp() * log_p.clamp(min=math.log(eps))).sum(dim=1)     # (B, h, w)
    max_entropy = entropy.flatten(1).amax(dim=1).view(-1, 1, 1)       # (B, 1, 1)
    has_entropy = max_entropy > eps
    lam = torch.where(has_entropy, 1.0 - entropy / max_entropy.clamp(min=eps),
                      torch.ones_like(entropy))
    return lam.detach() if detach else lam


class PoolingHead(nn.Module):
    """Base class: computes the class map and λ; subclasses define ``pool``."""

    name = "base"

    def __init__(self, detach_lambda: bool = False, eps: float = 1e-12) -> None:
        super().__init__()
        self.detach_lambda = detach_lambda
        self.eps = eps

    def forward(self, features: torch.Tensor, classifier: nn.Module,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        weight, bias = classifier_weight_bias(classifier)
        cam = class_activation_map(features, weight, bias)
        lam = entropy_weights(cam, detach=self.detach_lambda, eps=self.eps)
        logits = self.pool(features, weight, bias, cam, lam, labels)
        return {"logits": logits, "cam": cam, "lam": lam}

    def pool(self, features, weight, bias, cam, lam, labels):  # pragma: no cover - abstract
        raise NotImplementedError


class GAPHead(PoolingHead):
    """Global average pooling: ``F = Wᵀ (1/hw) Σ_i v_i + b`` (EP paper Eq. 1)."""

    name = "gap"

    def pool(self, features, weight, bias, cam, lam, labels):
        return F.linear(features.mean(dim=(2, 3)), weight, bias)


class EntropyPoolingHead(PoolingHead):
    """Entropy Pooling (EP paper Eq. 4, docs/ALGORITHMS.md §1.4):

        f_EP(U) = (1/hw) Σ_i λ_i v_i,      F = Wᵀ f_EP(U) + b

    The bias is added once, after pooling, as a plain classifier bias (*choice*; the paper omits
    biases). No parameters of its own: "EP inference" on a GAP-trained model is
    ``set_pooling("ep")``.

    ``normalize``: ``"hw"`` (default, Eq. 4) divides by the number of locations; ``"lambda"``
    divides by ``Σ_i λ_i`` instead (a λ-weighted mean of the features, *choice*). They differ by
    the per-image factor ``hw / Σλ``: with a freshly initialised classifier all locations are
    almost equally uncertain, λ ≈ 0.005 everywhere, so Eq. 4 pools features ~200× smaller than
    GAP and a network trained from scratch needs thousands of steps just to grow W; the
    λ-weighted mean starts as GAP and sharpens as λ does.

    ``detach_lambda`` default ``False``: the paper describes EP as a layer inside the network
    with no gradient stopping, so λ is differentiated like any other activation (gradients reach
    the features and W also through the entropies). ``True`` makes λ a fixed per-location
    re-weighting of the supervision, which can be steadier for training from scratch.
    """

    name = "ep"

    def __init__(self, detach_lambda: bool = False, eps: float = 1e-12, normalize: str = "hw") -> None:
        super().__init__(detach_lambda=detach_lambda, eps=eps)
        if normalize not in ("hw", "lambda"):
            raise ValueError(f"EP normalize must be 'hw' (Eq. 4) or 'lambda', got {normalize!r}")
        self.normalize = normalize

    def pool(self, features, weight, bias, cam, lam, labels):
        weighted = (features * lam.unsqueeze(1)).sum(dim=(2, 3))
        if self.normalize == "hw":
            pooled = weighted / (features.shape[2] * features.shape[3])
        else:
            pooled = weighted / lam.sum(dim=(1, 2)).clamp(min=self.eps).unsqueeze(1)
        return F.linear(pooled, weight, bias)


class GNDRPHead(PoolingHead):
    """Global non-dominant region pooling of RIB (Lee et al. NeurIPS 2021;
    docs/ALGORITHMS.md §8.1).

    For a class c present in the image (``labels[b, c] > 0``), with ``x = cam_c``:

        x_norm = x / max(max_i x_i, eps)            (max detached; x clamped at 0 first)
        logit_c = (1/hw) Σ_i x_i · [x_norm_i < τ]   (τ = 0.4)

    i.e. the dominant region (x_norm >= τ) is left out of the average, pushing the network to
    raise the scores of the non-dominant parts. Absent classes, and ``labels=None``
    (inference), use GAP of the class map ``(1/hw) Σ_i x_i``.
    """

    name = "gndrp"

    def __init__(self, tau: float = 0.4, detach_lambda: bool = False, eps: float = 1e-12) -> None:
        super().__init__(detach_lambda=detach_lambda, eps=eps)
        self.tau = tau

    def pool(self, features, weight, bias, cam, lam, labels):
        gap_logits = cam.mean(dim=(2, 3))
        if labels is None:
            return gap_logits
        positive_cam = cam.detach().clamp(min=0)
        peak = positive_cam.flatten(2).amax(dim=2).clamp(min=self.eps)[..., None, None]
        non_dominant = (positive_cam / peak < self.tau).to(cam.dtype)
        gndrp_logits = (cam * non_dominant).mean(dim=(2, 3))
        present = labels.to(device=cam.device) > 0
        return torch.where(present, gndrp_logits, gap_logits)


POOLING_HEADS: dict[str, type[PoolingHead]] = {
    "gap": GAPHead,
    "ep": EntropyPoolingHead,
    "gndrp": GNDRPHead,
}


def build_pooling(cfg: dict | str) -> PoolingHead:
    """Build a head from ``"ep"`` or ``dict(type="ep", detach_lambda=..., tau=...)``.

    Keys a head does not take (e.g. ``tau`` for ``"ep"``) are ignored, so one config dict can
    serve every head.
    """
    cfg = {"type": cfg} if isinstance(cfg, str) else dict(cfg)
    name = cfg.pop("type", "gap")
    if name not in POOLING_HEADS:
        raise ValueError(f"unknown pooling {name!r}; choose from {sorted(POOLING_HEADS)}")
    cls = POOLING_HEADS[name]
    accepted = ({"detach_lambda", "eps"} | ({"tau"} if cls is GNDRPHead else set())
                | ({"normalize"} if cls is EntropyPoolingHead else set()))
    return cls(**{k: v for k, v in cfg.items() if k in accepted})
