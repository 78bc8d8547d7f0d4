"""Spatial Group-wise Enhance (SGE): Li, Hu, Yang, arXiv:1905.09646, 2019;
docs/ALGORITHMS.md §8.4."""
from __future__ import annotations

import torch
from torch import nn


def largest_divisor_at_most(channels: int, groups: int) -> int:
    """The largest ``g <= groups`` that divides ``channels`` (at least 1)."""
    for g in range(max(1, min(groups, channels)), 0, -1):
        if channels % g == 0:
            return g
    return 1


class SpatialGroupEnhance(nn.Module):
    """SGE attention, nearly parameter-free (2·G parameters).

    The C channels are split into G groups; within a group with vectors x_i (C/G channels) at
    position i:

        g   = (1/hw) Σ_i x_i                      group descriptor (global average)
        c_i = g · x_i                             similarity score per position
        ĉ_i = (c_i - mean_j c_j) / (std_j c_j + eps)   normalised over the h·w positions
        a_i = γ ĉ_i + β                           per-group scale / shift (init γ = 0, β = 1)
        out_i = x_i · sigmoid(a_i)

    At init (γ = 0, β = 1) the module is ``x · sigmoid(1)`` everywhere. ``std`` is the unbiased
    sample std over positions (as torch's ``std``). When ``groups`` does not divide C it is
    reduced to the largest divisor of C not above it (``self.groups`` holds the value used),
    so width-scaled networks keep working.
    """

    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups = largest_divisor_at_most(channels, groups)
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(1, self.groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, self.groups, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        grouped = x.reshape(b, self.groups, c // self.groups, h, w)
        descriptor = grouped.mean(dim=(3, 4), keepdim=True)
        score = (grouped * descriptor).sum(dim=2).view(b, self.groups, h * w)
        score = score - score.mean(dim=2, keepdim=True)
        std = score.std(dim=2, keepdim=True) if h * w > 1 else torch.zeros_like(score)
        score = (score / (std + self.eps)).view(b, self.groups, h, w)
        gate = torch.sigmoid(score * self.weight + self.bias)          # (B, G, h, w)
        return (grouped * gate.unsqueeze(2)).reshape(b, c, h, w)
