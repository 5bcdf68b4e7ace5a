"""The reference's attention: an explicit (unfused) softmax that records A, v and T per block."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .._rows import softmax_rows
from ..adapters import Adapter
from ..adapters.base import Core

__all__ = ["explicit_core"]


def explicit_core(adapter: Adapter, b: int, store: List[dict], detach_from: Optional[int] = None) -> Core:
    """Block b's attention core with the full N x N softmax (through the adapter); appends
    {"A": (B, H, N, N), "v": (B, H, N, d), "T": (B, N, H*d) with its graph} to ``store``.

    Args:
        adapter: the model's adapter.  b: block index.  store: the per-block records.
        detach_from: None, or R: the keys and values of the tokens j >= R enter as constants
            (the row path of method="row", docs/method.md §8).
    """
    H, d, scale = adapter.num_heads, adapter.head_dim, adapter.scale(b)

    def core(x: Tensor, rows, ctx) -> Tensor:
        if rows is not None:
            raise RuntimeError("daam_reference: row reduction is not used by the reference")
        B, N, _ = x.shape
        q, k, v = adapter.qkv(b, x, None, ctx)
        if detach_from is not None:                                         # the other tokens: constants
            v = torch.cat([v[:, :, :detach_from], v[:, :, detach_from:].detach()], dim=2)
        A = softmax_rows(q, k, scale, adapter.attn_bias(b, ctx), detach_from=detach_from)   # (B, H, N, N)
        T = (A.to(v.dtype) @ v).transpose(1, 2).reshape(B, N, H * d)                       # (B, N, C)
        store.append({"A": A.detach(), "v": v.detach(), "T": T})
        return adapter.attn_out(b, T, x)

    return core
