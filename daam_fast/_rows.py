"""The attention rows DAAM reads, and the map formed from one, in one place.

The row the head reads is row 0 of the softmax (the [class] query, docs/method.md §1) or,
for a mean-pooled model, the mean of the patch-query rows P..N-1 (§7). The fused ops form
the [class] row inside their kernels; this module forms it where they cannot (an attention
bias such as BEiT's, mean-pooling, method="direct") and for the baselines. The bias-free
[class] row is :func:`daam_fast.ops.cls_attention.reference.cls_row`, the one the ops'
references use.

:func:`softmax_rows` is the one explicit softmax with a position bias: the rows above, the
row graph of method="row" and the pure-PyTorch reference's full N x N softmax
(:mod:`daam_fast.reference`, whose "row" reference detaches the other tokens' keys with
``detach_from``) all use it.

Rows are float32 (float64 for float64 inputs).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .ops.cls_attention.reference import cls_row

__all__ = ["cls_row", "softmax_rows", "attention_row", "query_row", "row_map"]


def _dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def softmax_rows(q: Tensor, k: Union[Tensor, Sequence[Tensor]], scale: float, bias: Optional[Tensor] = None, *,
                 detach_from: Optional[int] = None) -> Tensor:
    """(B, H, R, N) softmax(q k^T scale + bias) over the keys, for R query rows (R = N: all of A).

    Args:
        q: (B, H, R, d) queries.
        k: (B, H, N, d) keys, or consecutive blocks of them (B, H, N_i, d), sum N_i = N,
            e.g. the rows in a graph and the constant rest (method="row"); the logits of each
            block are one product.
        scale: softmax scale.
        bias: None or (1 or B, H, >= R, N) additive position bias; its first R rows are used.
        detach_from: None, or j: the keys j..N-1 enter as constants (no gradient flows to
            them), as on the row path of method="row" (docs/method.md §8).

    Returns:
        (B, H, R, N) float32 (float64 for float64 queries), with q's (and k's) graph.
    """
    dt = _dtype(q)
    if detach_from is not None:
        k = torch.cat([k[:, :, :detach_from], k[:, :, detach_from:].detach()], dim=2)
    blocks = [k] if isinstance(k, Tensor) else list(k)
    qd = q.to(dt)
    parts = [torch.einsum("bhqd,bhnd->bhqn", qd, kb.to(dt)) for kb in blocks]
    s = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)) * scale
    if bias is not None:
        s = s + bias[:, :, :q.shape[2]].to(dt)
    return s.softmax(dim=-1)


def attention_row(q: Tensor, k: Tensor, scale: float, prefix: int, pool: str = "token",
                  bias: Optional[Tensor] = None, budget: int = 1 << 24) -> Tensor:
    """(B, H, N) the attention row the head reads (docs/method.md §1 and §7).

    Args:
        q: (B, H, R, d) queries (R >= 1 for pool "token", R = N for "avg").  k: (B, H, N, d).
        scale: softmax scale.  prefix: P, prefix tokens.
        pool: "token": row 0, the [class] query's; "avg": rows P..N-1 averaged (taken in
            query chunks of about ``budget`` elements, so no N x N matrix is kept).
        bias: None or (1 or B, H, N, N) additive attention bias.
    """
    if pool == "token":
        if bias is None:
            return cls_row(q[:, :, 0], k, scale)
        return softmax_rows(q[:, :, :1], k, scale, bias)[:, :, 0]
    B, H, N, _ = k.shape
    chunk = max(1, budget // max(1, B * H * N))
    acc = torch.zeros(B, H, N, dtype=_dtype(q), device=k.device)
    for s in range(prefix, N, chunk):
        e = min(N, s + chunk)
        acc += softmax_rows(q[:, :, s:e], k, scale, None if bias is None else bias[:, :, s:e]).sum(dim=2)
    return acc / (N - prefix)


def query_row(M: Tensor, prefix: int, pool: str = "token") -> Tensor:
    """The row the head reads of a (..., N, N) matrix -> (..., N): row 0 or the mean of rows P..N-1."""
    if pool == "token":
        return M[..., 0, :]
    return M[..., prefix:, :].mean(dim=-2)


def row_map(a: Tensor, v: Tensor, g: Tensor, prefix: int,
            heads: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Per-block map from an attention row: ReLU(sum_h a^h[n] <g^h, v^h[n]>) (docs/method.md §3).

    Args:
        a: (B, H, N) attention row.  v: (B, H, N, d) values.  g: (B, H, d) coefficients
            (ReLU applied by the caller where the method asks for it).  prefix: P.
        heads: also return each head's term before the ReLU.

    Returns:
        (B, N - P) map; with ``heads`` also (B, H, N - P) per-head terms, whose sum over H
        before the ReLU is the map. float32 (float64 for a float64 row).
    """
    dt = _dtype(a)
    terms = a.to(dt) * torch.einsum("bhd,bhnd->bhn", g.to(dt), v.to(dt))
    m = terms.sum(dim=1)[:, prefix:].clamp_min(0)
    return (m, terms[:, :, prefix:]) if heads else m
