"""DSRG training losses (Huang et al. CVPR 2018; docs/ALGORITHMS.md §5, §6).

Conventions: ``probs`` (B,C,H,W) softmax probabilities with channel 0 = background; seeds/cues
(B,C,H,W) multi-hot (bool or float, a pixel may carry several classes); ``image_classes`` (B,C)
bool with channel 0 true. Every loss is a per-image quantity averaged over the batch, as in the
reference layers of DSRG (``SeedLossLayer3``, ``ConstrainLossLayer``).
"""
from __future__ import annotations

import torch

__all__ = ["stable_softmax_probs", "balanced_seeding_loss", "boundary_loss", "class_balance_weights", "MIN_PROB"]

MIN_PROB = 1e-4  # DSRG's ``min_prob``


def stable_softmax_probs(logits: torch.Tensor, eps: float = MIN_PROB) -> torch.Tensor:
    """DSRG softmax: P = (softmax(x) + eps) / Σ_c (softmax(x)_c + eps) over dim 1
    (docs/ALGORITHMS.md §5.1).

    Keeps every probability ≥ eps/(1 + C·eps) so that log P in the losses stays finite.
    """
    p = torch.softmax(logits, dim=1) + eps
    return p / p.sum(dim=1, keepdim=True)


def balanced_seeding_loss(probs: torch.Tensor, seeds: torch.Tensor, min_count: float = MIN_PROB,
                          class_weights: torch.Tensor | None = None):
    """DSRG balanced seeding loss (DSRG Eq. 2; docs/ALGORITHMS.md §5.4; ``SeedLossLayer3``).

    For image i with seed map s (multi-hot):
        ℓ_bg(i) = −Σ_u s_0(u) log P_0(u) / max(Σ_u s_0(u), min_count)
        ℓ_fg(i) = −Σ_{c≥1} Σ_u s_c(u) log P_c(u) / max(Σ_{c≥1} Σ_u s_c(u), min_count)
    and loss = mean_i ℓ_bg(i) + mean_i ℓ_fg(i). An image without background (foreground) seeds
    contributes 0 to that term but still counts in the batch mean, exactly as the reference.

    ``class_weights`` (C,) (None = the reference): the foreground term becomes the weighted mean
    ℓ_fg(i) = −Σ_{c≥1} w_c Σ_u s_c(u) log P_c(u) / max(Σ_{c≥1} w_c Σ_u s_c(u), min_count), so rare
    classes weigh more than their seed count (:func:`class_balance_weights`); ℓ_bg is unchanged.
    Returns ``(loss, {"bg": mean_i ℓ_bg, "fg": mean_i ℓ_fg})``.
    """
    s = seeds.to(probs.dtype)
    logp = torch.log(probs)
    s_fg = s[:, 1:]
    if class_weights is not None:
        s_fg = s_fg * class_weights[1:].to(s.device, s.dtype).view(1, -1, 1, 1)
    bg_sum = (s[:, 0] * logp[:, 0]).flatten(1).sum(1)
    fg_sum = (s_fg * logp[:, 1:]).flatten(1).sum(1)
    bg_cnt = s[:, 0].flatten(1).sum(1).clamp_min(min_count)
    fg_cnt = s_fg.flatten(1).sum(1).clamp_min(min_count)
    bg = -(bg_sum / bg_cnt).mean()
    fg = -(fg_sum / fg_cnt).mean()
    return bg + fg, {"bg": bg, "fg": fg}


def class_balance_weights(counts, power: float, max_weight: float) -> torch.Tensor:
    """Per-class loss weights from the labelled pixel counts of the training labels (inverse
    frequency balancing, Eigen & Fergus ICCV 2015 §4.1; Paszke et al., ENet 2016 §5.2, use
    other normalisations): ``w_c = min((n_max / n_c)^power, max_weight)``, ``n_max`` the count
    of the most frequent class (weight 1), so ``power = 0`` gives 1 everywhere (the unweighted
    loss) and 0.5 the inverse square root of the frequency. A class without any labelled pixel
    gets weight 1 (it contributes nothing either way)."""
    n = torch.as_tensor(counts, dtype=torch.float64)
    if n.ndim != 1 or bool((n < 0).any()):
        raise ValueError("counts must be a 1-d sequence of non-negative pixel counts")
    if power < 0 or max_weight < 1:
        raise ValueError(f"need power >= 0 and max_weight >= 1, got {power}, {max_weight}")
    w = torch.ones_like(n)
    seen = n > 0
    if bool(seen.any()):
        w[seen] = (n.max() / n[seen]).pow(power).clamp(max=max_weight)
    return w.float()


def boundary_loss(probs: torch.Tensor, crf_probs: torch.Tensor,
                  clip: tuple[float, float] | None = None) -> torch.Tensor:
    """Constrain-to-boundary loss (Kolesnikov & Lampert ECCV 2016; DSRG Eq. 3;
    docs/ALGORITHMS.md §5.5, §6): mean_{i,u} Σ_c Q_c(u) log(Q_c(u)/P_c(u)).

    Q = ``crf_probs`` (the dense CRF of the image and P) is treated as a constant (detached), as
    in SEC. With ``clip=(lo, hi)`` the ratio Q/P is clipped to [lo, hi] before the log, as DSRG's
    ``ConstrainLossLayer`` does with (0.05, 20); the gradient is then zero where the ratio is
    clipped (that is how the clip differentiates). DSRG additionally passes (1−Q)·grad back
    through its CRF layer to P; this implementation does not (Q is constant).
    Terms with Q = 0 contribute 0 (0·log 0 = 0).
    """
    q = crf_probs.detach().to(probs.dtype)
    if clip is None:
        kl = torch.xlogy(q, q) - q * torch.log(probs)
    else:
        lo, hi = clip
        kl = q * torch.log((q / probs).clamp(lo, hi))
    return kl.sum(dim=1).mean()
