"""Complexity of a map: how concentrated it is. Computed on the maps as given (e.g. the patch grid).

- :func:`sparseness`: the Gini index of |S| (Chalasani et al., ICML 2020): 0 for a constant
  map, (M - 1) / M for a one-hot map of M cells. Higher is sparser.
- :func:`complexity`: the entropy of the fractional contributions |S| / sum |S| (Bhatt et al.,
  IJCAI 2020): 0 for a one-hot map, ln M for a constant one. Lower is simpler.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sparseness", "complexity"]


def _flat_abs(maps: Tensor, name: str) -> Tensor:
    if not isinstance(maps, Tensor) or maps.dim() < 2:
        raise ValueError(f"{name}: maps must be a tensor (B, ...), got "
                         f"{tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__}")
    a = maps.reshape(maps.shape[0], -1).double().abs()
    if not torch.isfinite(a).all():
        raise ValueError(f"{name}: maps contain NaN or inf")
    return a


def sparseness(maps: Tensor) -> Tensor:
    """Gini index of each map's absolute values (Chalasani et al. 2020).

    With a = |S| sorted ascending, a_1 <= ... <= a_M:

        G = sum_i (2 i - M - 1) a_i / (M sum_i a_i)

    A map that is zero everywhere gives 0 (Quantus adds 1e-7 to every value instead; the
    same limit).

    Args:
        maps: (B, h, w) (or (B, ...)) maps.

    Returns:
        (B,) float32 in [0, (M - 1) / M].
    """
    a = _flat_abs(maps, "sparseness").sort(dim=1).values
    M = a.shape[1]
    i = torch.arange(1, M + 1, device=a.device, dtype=torch.float64)
    total = a.sum(dim=1)
    g = ((2 * i - M - 1) * a).sum(dim=1) / (M * total.clamp_min(1e-300))
    return torch.where(total > 0, g, torch.zeros_like(g)).float()


def complexity(maps: Tensor) -> Tensor:
    """Entropy of each map's fractional contributions (Bhatt et al. 2020).

    p_i = |S_i| / sum_j |S_j|;  H = -sum_i p_i ln p_i  (0 ln 0 = 0; natural log).

    Args:
        maps: (B, h, w) (or (B, ...)) maps.

    Returns:
        (B,) float32 in [0, ln M]; NaN for a map that is zero everywhere (no distribution).
    """
    a = _flat_abs(maps, "complexity")
    total = a.sum(dim=1, keepdim=True)
    p = a / total.clamp_min(1e-300)
    h = -torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p)).sum(dim=1)
    return torch.where(total[:, 0] > 0, h, torch.full_like(h, float("nan"))).float()
