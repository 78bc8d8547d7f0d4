"""Local Importance-based Pooling (LIP): Gao et al. ICCV 2019; docs/ALGORITHMS.md §8.3."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lip_pool(x: torch.Tensor, logit: torch.Tensor, kernel_size: int = 3, stride: int = 2,
             padding: int = 1, ceil_mode: bool = True) -> torch.Tensor:
    """LIP (paper Eq. 3): ``out = avgpool(x · exp(logit)) / avgpool(exp(logit))``.

    A weighted average over each window with importance weights ``exp(logit)``. Padding
    positions contribute zero weight, so with a constant ``logit`` this is average pooling
    over the valid positions only (``count_include_pad=False``). ``ceil_mode`` defaults to
    ``True`` so output sizes match the VGG cue network's ceil-mode max pools (321 -> 161).
    """
    weight = logit.exp()
    pool = dict(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode)
    return F.avg_pool2d(x * weight, **pool) / F.avg_pool2d(weight, **pool)


class SoftGate(nn.Module):
    """``coeff · sigmoid(x)``: bounds the logit to (0, coeff) so ``exp(logit)`` stays finite."""

    def __init__(self, coeff: float = 12.0) -> None:
        super().__init__()
        self.coeff = coeff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * self.coeff


class LocalImportancePooling(nn.Module):
    """LIP with the paper's bottleneck logit module (docs/ALGORITHMS.md §8.3):

        logit = 12 · sigmoid(IN(conv1x1_{r->C}(ReLU(IN(conv3x3_{r->r}(ReLU(IN(conv1x1_{C->r}(x)))))))))

    (IN = InstanceNorm2d with affine parameters), then ``lip_pool(x, logit)`` with kernel 3,
    pad 1 and the given stride (2 for the down-sampling pools, 1 for VGG's pool4/pool5).

    The last 1x1 conv is zero-initialised, so at init the logit is the constant 12·sigmoid(0)
    = 6 and LIP equals average pooling over valid positions. The hidden width r is 128 in the
    paper; here ``r = min(hidden, channels)`` so width-scaled (small) networks get a
    proportionally small logit module (*choice*).
    """

    def __init__(self, channels: int, stride: int = 2, hidden: int = 128,
                 coeff: float = 12.0) -> None:
        super().__init__()
        width = max(1, min(hidden, channels))
        self.stride = stride
        self.logit = nn.Sequential(
            nn.Conv2d(channels, width, kernel_size=1, bias=False),
            nn.InstanceNorm2d(width, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(width, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, kernel_size=1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
            SoftGate(coeff),
        )
        nn.init.zeros_(self.logit[6].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lip_pool(x, self.logit(x), kernel_size=3, stride=self.stride, padding=1)
