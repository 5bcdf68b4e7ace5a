"""Similarity of two batches of maps, per pair: Spearman rank correlation, SSIM, top-k intersection.

Used by the randomisation test (:mod:`.randomisation`) and the stability score (:mod:`.robustness`).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import _minmax

__all__ = ["spearman", "ssim", "topk_intersection", "rank_with_ties"]


def _pair(a: Tensor, b: Tensor, name: str):
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"{name}: a and b must be tensors of the same shape (B, ...), got "
                         f"{tuple(getattr(a, 'shape', ()))} and {tuple(getattr(b, 'shape', ()))}")
    return a.float(), b.float()


def rank_with_ties(x: Tensor) -> Tensor:
    """Ranks 0..M-1 per row, tied values given their average rank.

    Args:
        x: (B, M).

    Returns:
        (B, M) float32.
    """
    B, M = x.shape
    v, idx = x.sort(dim=1)
    new = torch.ones_like(v, dtype=torch.bool)
    new[:, 1:] = v[:, 1:] != v[:, :-1]
    gid = new.long().cumsum(dim=1) - 1 + torch.arange(B, device=x.device)[:, None] * M   # group ids, unique per row
    pos = torch.arange(M, device=x.device, dtype=torch.float32).expand(B, M)
    tot = torch.zeros(B * M, device=x.device).index_add_(0, gid.flatten(), pos.flatten())
    cnt = torch.zeros(B * M, device=x.device).index_add_(0, gid.flatten(), torch.ones(B * M, device=x.device))
    avg = (tot / cnt.clamp_min(1))[gid]
    out = torch.empty_like(avg)
    out.scatter_(1, idx, avg)
    return out


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row, ties given their average rank.

    rho = Pearson(rank(a), rank(b)); a constant row gives NaN.

    Args:
        a, b: (B, M) (or (B, ...), flattened per row).

    Returns:
        (B,) float32.
    """
    a, b = _pair(a, b, "spearman")
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    ra, rb = rank_with_ties(a), rank_with_ties(b)
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    den = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    return torch.where(den > 0, (ra * rb).sum(1) / den.clamp_min(1e-30), torch.full_like(den, float("nan")))


def ssim(a: Tensor, b: Tensor, win_size: int = 7, data_range: Optional[float] = None, normalise: bool = True,
         k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Structural similarity per pair of maps (Wang et al. 2004), as ``skimage.metrics.structural_similarity``.

    With means, variances and covariance over a ``win_size`` x ``win_size`` uniform window
    (sample covariance, factor n / (n - 1)), C1 = (k1 L)^2, C2 = (k2 L)^2 and L the data range:

        SSIM = mean over windows of (2 mu_a mu_b + C1) (2 cov_ab + C2) / ((mu_a^2 + mu_b^2 + C1) (var_a + var_b + C2))

    averaged over the windows lying fully inside the map (skimage crops (win_size - 1) / 2 pixels).

    Args:
        a, b: (B, H, W) maps, H and W >= win_size.
        win_size: odd window side.
        data_range: L; default 1 with ``normalise`` (maps min-max normalised to [0, 1] first, as
            Adebayo et al.), else max - min over both maps of the pair.
        normalise: min-max normalise each map first (a constant map becomes 0).
        k1, k2: constants.

    Returns:
        (B,) float32; identical maps give 1.
    """
    a, b = _pair(a, b, "ssim")
    if a.dim() != 3:
        raise ValueError(f"ssim takes (B, H, W) maps, got {tuple(a.shape)}")
    if win_size < 1 or win_size % 2 == 0 or min(a.shape[-2:]) < win_size:
        raise ValueError(f"win_size must be odd and at most the map size {tuple(a.shape[-2:])}, got {win_size}")
    if normalise:
        a, b = _minmax(a), _minmax(b)
    if data_range is None:
        if normalise:
            L = torch.ones(a.shape[0], device=a.device)
        else:
            L = (torch.maximum(a.amax(dim=(1, 2)), b.amax(dim=(1, 2))) - torch.minimum(a.amin(dim=(1, 2)),
                                                                                       b.amin(dim=(1, 2))))
    else:
        L = torch.full((a.shape[0],), float(data_range), device=a.device)
    L = L.view(-1, 1, 1)
    # the five window means in one uniform filter (avg_pool2d, stride 1: the windows inside the map)
    stack = torch.stack([a, b, a * a, b * b, a * b], dim=1)                      # (B, 5, H, W)
    mx, my, xx, yy, xy = F.avg_pool2d(stack, win_size, stride=1).unbind(1)
    n = win_size ** 2
    cov = n / (n - 1)
    vx, vy, vxy = cov * (xx - mx * mx), cov * (yy - my * my), cov * (xy - mx * my)
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2)).float()


def topk_intersection(a: Tensor, b: Tensor, k: int, tie_seed: int = 0) -> Tensor:
    """Share of the ``k`` most salient cells of ``a`` that are also among the ``k`` most salient of ``b``.

    Ties are broken by one fixed random order of the cells (drawn from ``tie_seed``, the same
    for both maps), never by raster order.

    Args:
        a, b: (B, ...) maps, flattened per row.  k: cells compared, 1 <= k <= cells.

    Returns:
        (B,) float32 in [0, 1]; identical maps give 1.
    """
    a, b = _pair(a, b, "topk_intersection")
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    M = a.shape[1]
    if not 1 <= int(k) <= M:
        raise ValueError(f"k must be in [1, {M}], got {k}")
    perm = torch.randperm(M, generator=torch.Generator().manual_seed(int(tie_seed))).to(a.device)
    ta = perm[a[:, perm].argsort(dim=1, descending=True, stable=True)[:, :k]]
    tb = perm[b[:, perm].argsort(dim=1, descending=True, stable=True)[:, :k]]
    ina = torch.zeros_like(a, dtype=torch.bool).scatter_(1, ta, True)
    inb = torch.zeros_like(b, dtype=torch.bool).scatter_(1, tb, True)
    return (ina & inb).sum(dim=1).float() / int(k)
