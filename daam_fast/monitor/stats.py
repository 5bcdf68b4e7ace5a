"""What the monitor measures on each probe's final map D_L (all batched torch, on the CPU).

Every quantity reads the final accumulated map D_L as a distribution over the patch grid,
``p = D_L / sum(D_L)`` (a map that is zero everywhere counts as uniform):

- ``entropy``: ``-sum p log p / log(h w)``, in [0, 1] (1: spread evenly; 0: one patch).
- ``drift``: ``1 - Spearman(D_L, D_L at the previous logged step)``, in [0, 2] (0: same
  ranking of the patches; 1: unrelated). Ties get their average rank.
- ``mask_energy``: the mass of p inside the object mask (the energy-based pointing game);
  the mass outside is ``1 - mask_energy``.
- ``region/<name>``: the mass of p inside a watched region.

Masks and regions are given in the probe pictures' pixel coordinates; each patch counts the
fraction of its area they cover (area-averaged onto the grid, exact where the picture's side
is a multiple of the grid's, as for the shapes pictures).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["distribution", "entropy", "spearman", "drift", "mass", "coverage", "box_mask"]


def distribution(final: Tensor) -> Tensor:
    """(N, h, w) non-negative maps -> (N, h*w) float32 distributions (a zero map: uniform)."""
    p = final.detach().float().flatten(1).clamp_min(0)
    s = p.sum(1, keepdim=True)
    uniform = torch.full_like(p, 1.0 / p.shape[1])
    return torch.where(s > 0, p / s.clamp_min(1e-30), uniform)


def entropy(p: Tensor) -> Tensor:
    """(N, n) distributions -> (N,) entropy divided by log(n), in [0, 1]."""
    if p.shape[1] < 2:
        return torch.zeros(p.shape[0])
    h = -(p * torch.log(p.clamp_min(1e-30))).sum(1)
    return (h / math.log(p.shape[1])).clamp(0, 1)


def _ranks(v: Tensor) -> Tensor:
    """(n,) -> (n,) float64 ranks 1..n, ties sharing their average rank."""
    _, inv, counts = torch.unique(v, sorted=True, return_inverse=True, return_counts=True)
    end = counts.cumsum(0).double()
    return (end - (counts.double() - 1) / 2)[inv]


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """(N, n), (N, n) -> (N,) Spearman rank correlation per row (NaN where a row is constant)."""
    out = torch.empty(a.shape[0], dtype=torch.float64)
    for i in range(a.shape[0]):
        ra, rb = _ranks(a[i].double()), _ranks(b[i].double())
        ra, rb = ra - ra.mean(), rb - rb.mean()
        den = torch.sqrt((ra * ra).sum() * (rb * rb).sum())
        out[i] = (ra * rb).sum() / den if den > 0 else float("nan")
    return out.float()


def drift(p: Tensor, previous: Tensor) -> Tensor:
    """(N, n) now and at the previous logged step -> (N,) 1 - Spearman (NaN for a constant map)."""
    return 1.0 - spearman(p, previous)


def mass(p: Tensor, cover: Tensor) -> Tensor:
    """(N, n) distributions, (N, n) coverage in [0, 1] -> (N,) mass inside."""
    return (p * cover).sum(1).clamp(0, 1)


def coverage(masks: Sequence[Tensor], grid: Tuple[int, int]) -> Tensor:
    """N masks (H_i, W_i) (bool or [0, 1]) -> (N, h*w) fraction of each patch they cover."""
    out = [F.adaptive_avg_pool2d(m.float()[None, None], grid).flatten() for m in masks]
    return torch.stack(out).clamp(0, 1)


def box_mask(box: Sequence[float], size: Tuple[int, int]) -> Tensor:
    """(x0, y0, x1, y1) in pixels (x1, y1 exclusive) -> (H, W) float mask of the box's area,
    partial pixels counted by the fraction they overlap."""
    x0, y0, x1, y1 = (float(v) for v in box)
    H, W = size
    xs = torch.arange(W, dtype=torch.float32)
    ys = torch.arange(H, dtype=torch.float32)
    fx = (torch.minimum(xs + 1, torch.tensor(x1)) - torch.maximum(xs, torch.tensor(x0))).clamp(0, 1)
    fy = (torch.minimum(ys + 1, torch.tensor(y1)) - torch.maximum(ys, torch.tensor(y0))).clamp(0, 1)
    return fy[:, None] * fx[None, :]
