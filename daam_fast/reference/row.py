"""Reference of method="row" (docs/method.md §8), literally.

The full model runs with the explicit N x N softmax in every block, in which the keys and
values of the tokens j >= R (R = the rows the head reads) are detached: the rows 0..R-1 then
depend on the other tokens only through constants, which is the row path. Autograd of Y with
respect to every block's full T_b gives G_b = dY/dT_b[0] on that path. Shares nothing with the
fast path (daam_fast/methods/row.py) but the adapter.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..adapters import Adapter
from ..adapters.base import Core
from ..targets import Scored, Target


def support(adapter: Adapter) -> Optional[str]:
    if adapter.pool != "token" or adapter.head_rows is None:
        return "method='row' follows the rows the head reads; a mean-pooled model (global_pool='avg') reads every row"
    return None


def core(adapter: Adapter, b: int, store: List[dict]) -> Core:
    """Block b's attention with the full N x N softmax over [k_r, v_r for r < R (in the graph),
    k_j, v_j for j >= R (detached)]; appends {"A", "v", "T"} to ``store`` as the explicit core does."""
    H, d, scale, R = adapter.num_heads, adapter.head_dim, adapter.scale(b), int(adapter.head_rows)

    def attention(x: Tensor, rows, ctx) -> Tensor:
        if rows is not None:
            raise RuntimeError("daam_reference: row reduction is not used by the reference")
        B, N, _ = x.shape
        q, k, v = adapter.qkv(b, x, None, ctx)
        k = torch.cat([k[:, :, :R], k[:, :, R:].detach()], dim=2)          # the other tokens: constants
        v = torch.cat([v[:, :, :R], v[:, :, R:].detach()], dim=2)
        logits = (q * scale) @ k.transpose(-2, -1)                          # (B, H, N, N)
        bias = adapter.attn_bias(b, ctx)
        if bias is not None:
            logits = logits + bias
        A = logits.softmax(dim=-1)
        T = (A @ v).transpose(1, 2).reshape(B, N, H * d)
        store.append({"A": A.detach(), "v": v.detach(), "T": T})
        return adapter.attn_out(b, T, x)

    return attention


def coefficients(adapter: Adapter, x: Tensor, store: List[dict], target: Target) -> Tuple[List[Tensor], Scored]:
    scored = target.score(adapter.run(x))
    grads = torch.autograd.grad(scored.y.sum(), [s["T"] for s in store])  # row 0 is read by the caller
    return list(grads), scored
