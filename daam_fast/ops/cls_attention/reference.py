"""Pure-PyTorch reference of ``cls_attention``: softmax attention plus its [class] row.

    out    = softmax(scale * q k^T) v                      (B, H, M, d), M query rows
    a_cls  = softmax_n(scale * <q[:, :, 0], k[:, :, n]>)   (B, H, N) float32, row 0 of A

``cls_attention_reference`` is what the CPU runs: PyTorch's fused SDPA (no N x N matrix kept)
plus the O(N d) row. ``cls_attention_math`` is the literal oracle of the tests (explicit
N x N softmax, float64 if given float64).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def cls_row(q_cls: Tensor, k: Tensor, scale: float) -> Tensor:
    """(B, H, N) float32 (float64 for float64 inputs) softmax row of the [class] query.

    Args:
        q_cls: (B, H, d) query of the [class] token.  k: (B, H, N, d), any strides.
        scale: softmax scale.
    """
    dt = torch.float64 if q_cls.dtype == torch.float64 else torch.float32
    return (torch.einsum("bhd,bhnd->bhn", q_cls.to(dt), k.to(dt)) * scale).softmax(dim=-1)


def cls_attention_reference(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
    """SDPA forward plus the [class] row (the CPU implementation; also the fallback on GPUs).

    Args:
        q: (B, H, M, d) queries (M <= N rows; row 0 is the [class] token).
        k, v: (B, H, N, d) keys and values; any strides.
        scale: softmax scale (usually d ** -0.5).

    Returns:
        out (B, H, M, d) in q's dtype, a_cls (B, H, N) float32 (float64 for float64 inputs).
    """
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out, cls_row(q[:, :, 0], k, scale)


def cls_attention_math(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
    """The literal oracle: explicit (B, H, M, N) softmax (tests only; O(N^2) memory)."""
    a = (q @ k.transpose(-1, -2) * scale).softmax(dim=-1)
    return a @ v, a[:, :, 0]
