"""method="grad": the paper's coefficients G_b = dY/dT_b[0] from one backward (docs/method.md §2, §3).

Forward: each block's attention runs the model's own q / k / v, SDPA and output projection,
then passes T_b (the input of ``proj``) through :class:`_Sink`, an identity that saves the
[class] query q[:, :, 0], k and v (views of the qkv output that SDPA's autograd node saves
anyway: nothing is copied, no N x N matrix exists; with an attention bias or mean-pooling
the row is formed at once instead) and takes a per-block zero "sink" tensor that requires
grad. The parameters are frozen, so the autograd graph starts at the sinks. In block 1 only
the [class] row of T_1 goes through the sink (G_1 = dY/dT_1[0] is all block 1 needs), so
block 1's residual + MLP path has a backward on that row alone.

Backward: ``torch.autograd.grad(Y, sinks)``: no parameter gradient, nothing below block 1.
When dY/dT_b reaches block b's sink node, its backward forms block b's map (and per-head
terms) with the fused ``block_map`` op and returns it as the sink's gradient; autograd
frees the saved q, k, v as it goes, so memory falls as the backward proceeds. Nothing is
written to Python state in the forward or the backward, so ``compile=True`` traces each
block whole, the capture included (no graph break), and activation checkpointing needs no
special case (the recompute saves what the sink's backward reads).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._capture import CallState, block_coefficients, formed_row, map_terms
from ..targets import Scored
from .base import Method

__all__ = ["METHOD"]


class _Sink(torch.autograd.Function):
    """Identity on T_b in the forward. In the backward, block b's map (and per-head terms)
    from G_b = dY/dT_b, returned as the gradient of ``sink`` (R, S, N - P), S = 1 (+ H with
    heads), a zero tensor that requires grad: the maps come out of ``torch.autograd.grad``
    with respect to the sinks. No tensor hook, no Python state written during the forward or
    the backward, so ``torch.compile`` can trace a block with it.

    ``kind`` "qkv": x1 = the [class] query (R, H, d), x2 = k (the fused block_map op forms the
    row); "row": x1 = the attention row (R, H, N) formed in the forward, x2 unused (= v).
    """

    @staticmethod
    def forward(ctx, T, sink, x1, x2, v, kind: str, scale: float, prefix: int, pool: str, relu: bool,
                heads: bool, backend, H: int, d: int):  # type: ignore[override]
        ctx.save_for_backward(x1, x2, v)
        ctx.conf = (kind, scale, prefix, pool, relu, heads, backend, H, d)
        return T.view_as(T)

    @staticmethod
    def backward(ctx, gT):  # type: ignore[override]
        x1, x2, v = ctx.saved_tensors
        kind, scale, P, pool, relu, heads, backend, H, d = ctx.conf
        G = block_coefficients(gT, pool, P, relu)                                  # (R, C) docs/method.md §2, §7
        m, ht = map_terms(x1, x2 if kind == "qkv" else None, v, G.reshape(G.shape[0], H, d), scale, P, backend,
                          heads)
        m = m.float()[:, None]
        sink = m if ht is None else torch.cat([m, ht.float()], dim=1)
        return gT, sink, None, None, None, None, None, None, None, None, None, None, None, None


class Grad(Method):
    name = "grad"
    summary = "the paper's exact coefficients dY/dT_b[0], one backward"
    reduce_first_block = True
    traceable = True

    def capture(self, st: CallState, b: int, scale: float, x: Tensor, rows: Optional[int], q: Tensor,
                k: Tensor, v: Tensor, T: Tensor, a: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
        adapter = st.adapter
        if adapter.pool == "token" and bias is None:                 # row formed by the fused op later
            slot = ("qkv", q[:, :, 0].detach(), k.detach())
        else:                                                        # row (with the bias) formed now
            slot = ("row", formed_row(st, q, k, scale, bias), v.detach())
        conf = (slot[0], scale, adapter.num_prefix, adapter.pool, st.relu, st.heads, st.backend,
                adapter.num_heads, adapter.head_dim)
        sink = st.sinks[b]
        if b == 0 and st.split_first:                                # G_1 needs dY/dT_1[0] only: the
            with torch.no_grad():                                    # other rows carry no graph
                rest = adapter.attn_out(b, T[:, 1:], x[:, 1:])
            T0 = _Sink.apply(T[:, :1].detach(), sink, slot[1], slot[2], v.detach(), *conf)
            return torch.cat([adapter.attn_out(b, T0, x, 1), rest], dim=1)
        T = _Sink.apply(T, sink, slot[1], slot[2], v.detach(), *conf)   # the graph starts at the sink
        return adapter.attn_out(b, T, x, rows)

    def run(self, st: CallState, images: Tensor) -> Scored:
        adapter = st.adapter
        S = 1 + (adapter.num_heads if st.heads else 0)
        with torch.enable_grad():
            st.sinks = [torch.zeros(images.shape[0], S, st.patches, device=images.device, requires_grad=True)
                        for _ in range(adapter.depth)]
            out = adapter.run(images)
            scored = self.score(st, out)
            grads = torch.autograd.grad(scored.y.sum(), st.sinks, allow_unused=True)
        st.sinks = []
        for b, g in enumerate(grads):
            if g is not None:                                        # None: the explainer names the block
                st.maps[b], st.head_maps[b] = g[:, 0], (g[:, 1:] if st.heads else None)
        return scored


METHOD = Grad()
