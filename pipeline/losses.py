"""DSRG and SEC training losses (ALGORITHMS.md §5, §6).

Conventions: ``probs`` (B,C,H,W) softmax probabilities with channel 0 = background; seeds/cues
(B,C,H,W) multi-hot (bool or float, a pixel may carry several classes); ``image_classes`` (B,C)
bool with channel 0 true. Every loss is a per-image quantity averaged over the batch, as in the
reference Theano layers of DSRG (``SeedLossLayer3``, ``ConstrainLossLayer``) and SEC
(``SeedLossLayer``, ``ExpandLossLayer``).
"""
from __future__ import annotations

import torch

__all__ = ["stable_softmax_probs", "balanced_seeding_loss", "boundary_loss",
           "sec_seeding_loss", "expansion_loss_gwrp", "MIN_PROB"]

MIN_PROB = 1e-4  # DSRG's ``min_prob``


def stable_softmax_probs(logits: torch.Tensor, eps: float = MIN_PROB) -> torch.Tensor:
    """DSRG softmax: P = (softmax(x) + eps) / Σ_c (softmax(x)_c + eps) over dim 1 (§5).

    Keeps every probability ≥ eps/(1 + C·eps) so that log P in the losses stays finite.
    """
    p = torch.softmax(logits, dim=1) + eps
    return p / p.sum(dim=1, keepdim=True)


def balanced_seeding_loss(probs: torch.Tensor, seeds: torch.Tensor, min_count: float = MIN_PROB):
    """DSRG balanced seeding loss (§5; DSRG reference ``SeedLossLayer3``).

    For image i with seed map s (multi-hot):
        ℓ_bg(i) = −Σ_u s_0(u) log P_0(u) / max(Σ_u s_0(u), min_count)
        ℓ_fg(i) = −Σ_{c≥1} Σ_u s_c(u) log P_c(u) / max(Σ_{c≥1} Σ_u s_c(u), min_count)
    and loss = mean_i ℓ_bg(i) + mean_i ℓ_fg(i). An image without background (foreground) seeds
    contributes 0 to that term but still counts in the batch mean, exactly as the reference.
    Returns ``(loss, {"bg": mean_i ℓ_bg, "fg": mean_i ℓ_fg})``.
    """
    s = seeds.to(probs.dtype)
    logp = torch.log(probs)
    bg_sum = (s[:, 0] * logp[:, 0]).flatten(1).sum(1)
    fg_sum = (s[:, 1:] * logp[:, 1:]).flatten(1).sum(1)
    bg_cnt = s[:, 0].flatten(1).sum(1).clamp_min(min_count)
    fg_cnt = s[:, 1:].flatten(1).sum(1).clamp_min(min_count)
    bg = -(bg_sum / bg_cnt).mean()
    fg = -(fg_sum / fg_cnt).mean()
    return bg + fg, {"bg": bg, "fg": fg}


def boundary_loss(probs: torch.Tensor, crf_probs: torch.Tensor,
                  clip: tuple[float, float] | None = None) -> torch.Tensor:
    """Constrain-to-boundary loss (SEC eq. 4; §5, §6): mean_{i,u} Σ_c Q_c(u) log(Q_c(u)/P_c(u)).

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


def sec_seeding_loss(probs: torch.Tensor, cues: torch.Tensor, min_count: float = MIN_PROB):
    """SEC seeding loss (§6; SEC eq. 2, reference ``SeedLossLayer``).

    ℓ(i) = −Σ_c Σ_u s_c(u) log P_c(u) / max(Σ_c Σ_u s_c(u), min_count); loss = mean_i ℓ(i).
    """
    s = cues.to(probs.dtype)
    num = (s * torch.log(probs)).flatten(1).sum(1)
    cnt = s.flatten(1).sum(1).clamp_min(min_count)
    return -(num / cnt).mean()


def _gwrp(maps: torch.Tensor, q: float) -> torch.Tensor:
    """Global weighted rank pooling over the last dim: Σ_j q^j p_(j) / Σ_j q^j, p sorted desc."""
    n = maps.shape[-1]
    w = q ** torch.arange(n, device=maps.device, dtype=maps.dtype)
    srt = maps.sort(dim=-1, descending=True).values
    return (srt * w).sum(-1) / w.sum()


def expansion_loss_gwrp(probs: torch.Tensor, image_classes: torch.Tensor,
                        q_fg: float = 0.996, q_bg: float = 0.999):
    """SEC expand loss with global weighted rank pooling (§6; SEC eq. 3, ``ExpandLossLayer``).

    G_c = Σ_j q^j P_c(u_(j)) / Σ_j q^j with pixels sorted by decreasing P_c (q_fg for c ≥ 1,
    q_bg for the background). Per image, with T the present and A the absent foreground classes:
        ℓ_present = −(1/|T|) Σ_{c∈T} log G_c,  ℓ_absent = −(1/|A|) Σ_{c∈A} log(1 − max_u P_c(u)),
        ℓ_bg = −log G_0;
    each averaged over the batch (|T|, |A| clamped ≥ 1 so an empty set gives 0).
    Returns ``(loss, {"present", "absent", "bg"})``.
    """
    B, C = probs.shape[:2]
    flat = probs.flatten(2)
    stat = image_classes.to(probs.device)[:, 1:].to(probs.dtype)
    g_fg = _gwrp(flat[:, 1:], q_fg)
    g_bg = _gwrp(flat[:, 0], q_bg)
    pmax = flat[:, 1:].amax(dim=-1)
    present = -((stat * torch.log(g_fg)).sum(1) / stat.sum(1).clamp_min(1)).mean()
    absent = -(((1 - stat) * torch.log1p(-pmax)).sum(1) / (1 - stat).sum(1).clamp_min(1)).mean()
    bg = -torch.log(g_bg).mean()
    return present + absent + bg, {"present": present, "absent": absent, "bg": bg}
