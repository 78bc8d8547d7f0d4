"""Saliency maps: import from files, a classic built-in method (RBD), and quality metrics
(docs/ALGORITHMS.md §11).

The EP paper (§4.4) takes background seeds from DRFI saliency maps (Jiang et al. CVPR 2013);
users with such maps import them with :func:`import_saliency`. Without them,
:func:`rbd_saliency` computes "Saliency Optimization from Robust Background Detection"
(W. Zhu, S. Liang, Y. Wei, J. Sun, CVPR 2014) from the image alone.
"""
from __future__ import annotations


import numpy as np


# --------------------------------------------------------------------------------------------
# RBD: Zhu et al., CVPR 2014
# --------------------------------------------------------------------------------------------

def rbd_saliency(image: np.ndarray, n_segments: int = 250, compactness: float = 10.0,
                 sigma_clr: float = 10.0, sigma_bndcon: float = 1.0, sigma_spa: float = 0.25,
                 mu: float = 0.1, bg_lambda: float = 1.0) -> np.ndarray:
    """Saliency Optimization from Robust Background Detection (Zhu et al., CVPR 2014;
    docs/ALGORITHMS.md §11).

    Superpixels p_i (SLIC, mean CIE-Lab colour c_i, mean normalised position r_i in [0,1]²):
      * graph: edges between spatially adjacent superpixels, plus between every pair of
        superpixels touching the image border; weight ``d_app(p,q) = ||c_p − c_q||``;
      * geodesic distance ``d_geo`` = shortest path (scipy.sparse.csgraph.dijkstra);
      * ``S(p,q) = exp(−d_geo²/(2σ_clr²))``; ``Area(p) = Σ_q S(p,q)``,
        ``Len_bnd(p) = Σ_{q ∈ border} S(p,q)``, ``BndCon(p) = Len_bnd(p) / sqrt(Area(p))`` (Eq. 1-4);
      * background probability ``w_bg(p) = 1 − exp(−BndCon²/(2σ_bndCon²))`` (Eq. 7);
      * background-weighted contrast ``wCtr(p) = Σ_q d_app(p,q) · exp(−d_spa²(p,q)/(2σ_spa²)) · w_bg(q)``
        (Eq. 6), min-max normalised → foreground weight ``w_fg``;
      * optimisation (Eq. 8): ``min_s Σ_i bg_lambda·w_bg(i) s_i² + Σ_i w_fg(i)(s_i − 1)² + Σ_{i~j} w_ij (s_i − s_j)²``
        with ``w_ij = exp(−d_app²/(2σ_clr²)) + μ`` over adjacent pairs (each unordered pair once);
        closed form ``(diag(bg_lambda·w_bg + w_fg) + D − W) s = w_fg`` (D − W the graph Laplacian).
    The paper's energy has ``bg_lambda = 1`` (default here). Output: per-pixel saliency of its
    superpixel, min-max normalised to [0, 1], float32 (H, W).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got {img.shape}")
    H, W = img.shape[:2]
    seg = slic(img, n_segments=n_segments, compactness=compactness, start_label=0)
    _, seg = np.unique(seg, return_inverse=True)
    seg = seg.reshape(H, W)
    n = int(seg.max()) + 1
    if n < 2:
        return np.zeros((H, W), dtype=np.float32)

    lab = rgb2lab(img).reshape(-1, 3)
    cnt = np.bincount(seg.ravel(), minlength=n).astype(np.float64)
    col = np.stack([np.bincount(seg.ravel(), lab[:, k], n) for k in range(3)], 1) / cnt[:, None]
    yy, xx = np.mgrid[0:H, 0:W]
    pos = np.stack([np.bincount(seg.ravel(), (yy / max(H - 1, 1)).ravel(), n),
                    np.bincount(seg.ravel(), (xx / max(W - 1, 1)).ravel(), n)], 1) / cnt[:, None]

    # adjacency (4-connectivity between pixels of different superpixels)
    a = np.concatenate([seg[:, :-1].ravel(), seg[:-1, :].ravel()])
    b = np.concatenate([seg[:, 1:].ravel(), seg[1:, :].ravel()])
    m = a != b
    pairs = np.unique(np.sort(np.stack([a[m], b[m]], 1), axis=1), axis=0)
    border = np.unique(np.concatenate([seg[0], seg[-1], seg[:, 0], seg[:, -1]]))

    d_app = np.sqrt(((col[:, None, :] - col[None, :, :]) ** 2).sum(-1))
    bi, bj = np.meshgrid(border, border, indexing="ij")
    bsel = bi < bj
    gpairs = np.unique(np.concatenate([pairs, np.stack([bi[bsel], bj[bsel]], 1)]), axis=0)
    # tiny offset keeps zero-distance edges as edges in the sparse graph
    wts = d_app[gpairs[:, 0], gpairs[:, 1]] + 1e-10
    graph = coo_matrix((wts, (gpairs[:, 0], gpairs[:, 1])), shape=(n, n)).tocsr()
    d_geo = dijkstra(graph, directed=False)
    d_geo[~np.isfinite(d_geo)] = d_geo[np.isfinite(d_geo)].max()

    S = np.exp(-d_geo ** 2 / (2 * sigma_clr ** 2))
    area = S.sum(1)
    len_bnd = S[:, border].sum(1)
    bndcon = len_bnd / np.sqrt(area)
    w_bg = 1.0 - np.exp(-bndcon ** 2 / (2 * sigma_bndcon ** 2))

    d_spa2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
    wctr = (d_app * np.exp(-d_spa2 / (2 * sigma_spa ** 2)) * w_bg[None, :]).sum(1)
    rng = wctr.max() - wctr.min()
    w_fg = (wctr - wctr.min()) / rng if rng > 0 else np.zeros_like(wctr)

    wij = np.exp(-d_app[pairs[:, 0], pairs[:, 1]] ** 2 / (2 * sigma_clr ** 2)) + mu
    Wm = np.zeros((n, n))
    Wm[pairs[:, 0], pairs[:, 1]] = wij
    Wm[pairs[:, 1], pairs[:, 0]] = wij
    A = np.diag(bg_lambda * w_bg + w_fg + Wm.sum(1)) - Wm
    s = np.linalg.solve(A, w_fg)
    s = s - s.min()
    if s.max() > 0:
        s = s / s.max()
    return s[seg].astype(np.float32)


# --------------------------------------------------------------------------------------------
# quality
# --------------------------------------------------------------------------------------------

class SaliencyQuality:
    """MAE and max F-measure of saliency maps against binary foreground masks, over images.

    * ``MAE`` = mean over images of ``mean_x |s(x) − g(x)|``.
    * F-measure (Achanta et al. CVPR 2009; β² = 0.3): for thresholds ``t_k = k/255``,
      k = 0..255, binarise ``s >= t_k``; per image ``P_k = TP/(TP+FP)`` (0 when nothing is
      predicted) and ``R_k = TP/(TP+FN)``; P_k and R_k are averaged over images, then
      ``F_k = (1+β²) P_k R_k / (β² P_k + R_k)`` (0 when both are 0) and ``maxF = max_k F_k``.
      Images whose mask has no foreground are skipped for F (recall undefined); they count
      for MAE.
    """

    def __init__(self, beta2: float = 0.3, n_thresholds: int = 256):
        self.beta2 = beta2
        self.thresholds = np.linspace(0.0, 1.0, n_thresholds)
        self.mae_sum = 0.0
        self.n_images = 0
        self.p_sum = np.zeros(n_thresholds)
        self.r_sum = np.zeros(n_thresholds)
        self.n_f = 0

    def update(self, sal, gt_fg_mask) -> None:
        s = np.asarray(sal, dtype=np.float64)
        g = np.asarray(gt_fg_mask).astype(bool)
        if s.shape != g.shape:
            raise ValueError(f"saliency shape {s.shape} != mask shape {g.shape}")
        self.mae_sum += float(np.abs(s - g).mean())
        self.n_images += 1
        n_pos = int(g.sum())
        if n_pos == 0:
            return
        # histogram trick: count fg / all pixels with s >= t for every threshold at once
        idx = np.searchsorted(self.thresholds, s.ravel(), side="right") - 1  # last t_k <= s
        nt = self.thresholds.size
        all_c = np.bincount(np.clip(idx, 0, nt - 1)[idx >= 0], minlength=nt)[::-1].cumsum()[::-1]
        fg_idx = idx[g.ravel()]
        tp = np.bincount(np.clip(fg_idx, 0, nt - 1)[fg_idx >= 0], minlength=nt)[::-1].cumsum()[::-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            self.p_sum += np.where(all_c > 0, tp / np.maximum(all_c, 1), 0.0)
        self.r_sum += tp / n_pos
        self.n_f += 1

    def summary(self) -> dict:
        nan = float("nan")
        out = {"MAE": self.mae_sum / self.n_images if self.n_images else nan,
               "maxF": nan, "best_threshold": nan, "images": self.n_images}
        if self.n_f:
            p, r = self.p_sum / self.n_f, self.r_sum / self.n_f
            den = self.beta2 * p + r
            f = np.where(den > 0, (1 + self.beta2) * p * r / np.where(den > 0, den, 1), 0.0)
            k = int(f.argmax())
            out.update(maxF=float(f[k]), best_threshold=float(self.thresholds[k]))
        return out
