"""Training-free affinity refinement of class maps (docs/ALGORITHMS.md §3.4).

The random walk of AffinityNet (Ahn & Kwak, CVPR 2018, §3.3, Eq. 5–6) propagates each class
map along semantic affinities between the cells of the output grid:

    W_ij = a_ij^β  for cells i, j at most ``radius`` cells apart (else 0),
    T    = D⁻¹ W,  D = diag(Σ_j W_ij)                                     (Eq. 5)
    vec(M*_c) = T^t · vec(M_c)                                            (Eq. 6, t iterations)

AffinityNet *trains* a network to predict a_ij from the CAMs; here a_ij is read off the frozen
ImageNet features the classifier already computes (no training): the cosine similarity of the
two cells' feature vectors, clipped at 0, ``a_ij = max(0, ⟨f_i, f_j⟩ / (‖f_i‖ ‖f_j‖))``. A large β
keeps only strong affinities, so a map spreads inside regions whose features agree (one object)
and stops at feature edges; ``radius`` keeps the walk local, as AffinityNet's (radius 5 on its
stride-8 grid). Pure torch; batched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["feature_affinity_transition", "random_walk", "refine_cam"]


def _cell_distance_mask(h: int, w: int, radius: int, device) -> torch.Tensor:
    """(hw, hw) bool: cells at most ``radius`` apart (Euclidean distance on the grid)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1).float()
    return torch.cdist(pos, pos) <= radius + 1e-6


def feature_affinity_transition(features: torch.Tensor, beta: float, radius: int) -> torch.Tensor:
    """Row-stochastic transition matrices T (B, hw, hw) of features (B, C, h, w): Eq. 5 above
    with ``a_ij = max(0, cos(f_i, f_j))``. Every cell keeps its self-affinity 1, so no row is 0."""
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w), got {tuple(features.shape)}")
    if beta <= 0 or radius < 0:
        raise ValueError(f"need beta > 0 and radius >= 0, got beta={beta}, radius={radius}")
    B, C, h, w = features.shape
    f = F.normalize(features.float().flatten(2), dim=1)                  # (B, C, hw)
    cos = torch.einsum("bci,bcj->bij", f, f).clamp(0, 1)
    weights = cos.pow(beta) * _cell_distance_mask(h, w, radius, features.device)
    idx = torch.arange(h * w, device=features.device)
    weights[:, idx, idx] = 1.0
    return weights / weights.sum(-1, keepdim=True)


def random_walk(maps: torch.Tensor, transition: torch.Tensor, iterations: int) -> torch.Tensor:
    """Eq. 6: each of the (B, K, h, w) maps propagated ``iterations`` times by T (B, hw, hw):
    ``m ← T m`` (the value at cell i becomes the T-weighted mean of its neighbours' values)."""
    B, K, h, w = maps.shape
    m = maps.float().flatten(2).transpose(1, 2)                          # (B, hw, K)
    for _ in range(int(iterations)):
        m = torch.bmm(transition, m)
    return m.transpose(1, 2).reshape(B, K, h, w)


def refine_cam(cam: torch.Tensor, features: torch.Tensor, beta: float, radius: int,
               iterations: int) -> torch.Tensor:
    """ReLU(cam) (B, K, h, w) after ``iterations`` random-walk steps on the affinities of
    ``features`` (B, C, h, w) of the same grid; ``iterations = 0`` returns ReLU(cam)."""
    if cam.shape[-2:] != features.shape[-2:] or cam.shape[0] != features.shape[0]:
        raise ValueError(f"cam {tuple(cam.shape)} and features {tuple(features.shape)} must share "
                         "batch and grid")
    cam = cam.float().clamp_min(0)
    if iterations == 0:
        return cam
    return random_walk(cam, feature_affinity_transition(features, beta, radius), iterations)
