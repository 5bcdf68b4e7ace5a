"""The reference's attention: an explicit (unfused) softmax that records A, v and T per block."""
from __future__ import annotations

from typing import List

from torch import Tensor

from ..adapters import Adapter
from ..adapters.base import Core

__all__ = ["explicit_core"]


def explicit_core(adapter: Adapter, b: int, store: List[dict]) -> Core:
    """Block b's attention core with the full N x N softmax (through the adapter); appends
    {"A": (B, H, N, N), "v": (B, H, N, d), "T": (B, N, H*d) with its graph} to ``store``."""
    H, d, scale = adapter.num_heads, adapter.head_dim, adapter.scale(b)

    def core(x: Tensor, rows, ctx) -> Tensor:
        if rows is not None:
            raise RuntimeError("daam_reference: row reduction is not used by the reference")
        B, N, _ = x.shape
        q, k, v = adapter.qkv(b, x, None, ctx)
        logits = (q * scale) @ k.transpose(-2, -1)                          # (B, H, N, N)
        bias = adapter.attn_bias(b, ctx)
        if bias is not None:
            logits = logits + bias
        A = logits.softmax(dim=-1)
        T = (A @ v).transpose(1, 2).reshape(B, N, H * d)                    # (B, N, C)
        store.append({"A": A.detach(), "v": v.detach(), "T": T})
        return adapter.attn_out(b, T, x)

    return core
