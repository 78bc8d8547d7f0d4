"""Branched Entropy Weighting (BEW) layer: EP paper (Wan et al. ICCV 2019) §3.3, Fig. 3;
docs/ALGORITHMS.md §2."""
from __future__ import annotations

import torch
from torch import nn

from .pooling import entropy_weights


class BranchedEntropyWeighting(nn.Module):
    """Entropy-weight an intermediate feature map with the help of a side classifier.

    For an intermediate map ``x`` (B, C, h, w):

        z    = ReLU(conv1x1_{C -> C/2}(x))                      bottleneck (paper §3.3)
        ŷ_i  = conv1x1_{C/2 -> K}(z)_i = W_bᵀ z_i + b_b         localized predictions
        λ_i  = 1 - H(softmax(ŷ_i)) / max_j H(softmax(ŷ_j))     EP paper Eq. 2-3
        out  = x · λ                                            (broadcast over channels)
        branch logits = W_bᵀ (1/hw) Σ_i λ_i z_i + b_b           EP (Eq. 4) on the branch

    The branch logits feed the branch's own classification loss (paper Fig. 4). The bias of
    the branch classifier is added once after pooling, as in the main EP head (*choice*; with
    no bias it is exactly ``(1/hw) Σ_i λ_i ŷ_i``).

    ``forward`` returns ``(x · λ, dict(logits=(B, K), cam=ŷ (B, K, h, w), lam=λ (B, h, w)))``.
    ``detach_lambda`` as in ``pooling.EntropyPoolingHead`` (default ``False``: λ is
    differentiated, so the backbone's gradient also trains the branch through λ).
    """

    def __init__(self, in_channels: int, num_classes: int, detach_lambda: bool = False,
                 bias: bool = True, eps: float = 1e-12) -> None:
        super().__init__()
        hidden = max(1, in_channels // 2)
        self.bottleneck = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.relu = nn.ReLU(inplace=False)
        self.classifier = nn.Conv2d(hidden, num_classes, kernel_size=1, bias=bias)
        self.detach_lambda = detach_lambda
        self.eps = eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hidden = self.relu(self.bottleneck(x))
        cam = self.classifier(hidden)
        lam = entropy_weights(cam, detach=self.detach_lambda, eps=self.eps)
        pooled = (hidden * lam.unsqueeze(1)).mean(dim=(2, 3))
        logits = nn.functional.linear(pooled, self.classifier.weight.flatten(1), self.classifier.bias)
        return x * lam.unsqueeze(1), {"logits": logits, "cam": cam, "lam": lam}
