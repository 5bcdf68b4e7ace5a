"""method="grad": the paper's coefficients G_b = dY/dT_b[0] from one backward (docs/method.md §2, §3).

Forward: each block's attention runs the model's own q / k / v, SDPA and output projection
and keeps references to the [class] query q[:, :, 0] and to k and v (views of the qkv
output that SDPA's autograd node saves anyway: nothing is copied, no N x N matrix exists);
with an attention bias or mean-pooling it forms the row at once instead. The input T_b of
``proj`` gets a tensor hook. In block 1 only the [class] row of T_1 starts the graph
(G_1 = dY/dT_1[0] is all block 1 needs), so block 1's residual + MLP path has a backward on
that row alone.

Backward: ``torch.autograd.grad(Y, T_1)``: no parameter gradient, nothing below block 1.
When the gradient of T_b arrives, its hook forms block b's map at once with the fused
``block_map`` op and drops the block's references, so memory falls as the backward proceeds.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from .._capture import CallState, QKVSlot, RowSlot, coefficients, formed_row, slot_map
from ..targets import Scored
from .base import Method

__all__ = ["METHOD"]


def _on_grad(st: CallState, b: int, scale: float, grad: Tensor) -> None:
    """Tensor hook on T_b: block b's map from G_b (errors surface after the backward)."""
    slot = st.slots[b]
    if slot is None:
        st.error = st.error or RuntimeError(
            f"DAAM: block {b}'s gradient arrived before its attention inputs were captured"
            + (" (checkpoint=True: the block was not recomputed first)" if st.checkpoint else ""))
        return None
    try:
        st.slots[b] = None
        with torch.no_grad():
            st.maps[b], st.head_maps[b] = slot_map(st, slot, coefficients(st, grad), scale)
    except BaseException as e:  # never a silent wrong map
        st.error = e
    return None


class Grad(Method):
    name = "grad"
    summary = "the paper's exact coefficients dY/dT_b[0], one backward"
    reduce_first_block = True

    def capture(self, st: CallState, b: int, scale: float, x: Tensor, rows: Optional[int], q: Tensor,
                k: Tensor, v: Tensor, T: Tensor, a: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
        adapter = st.adapter
        out = None
        if b == 0 and st.split_first:                                # G_1 needs dY/dT_1[0] only: the
            with torch.no_grad():                                    # other rows carry no graph
                rest = adapter.attn_out(b, T[:, 1:], x[:, 1:])
            T = T[:, :1].detach().requires_grad_(True)
            out = torch.cat([adapter.attn_out(b, T, x, 1), rest], dim=1)
        elif not T.requires_grad:                                    # frozen model: graph starts here
            T.requires_grad_(True)
        if st.first is None:
            st.first = T
        if st.deferred:                                              # checkpoint=True: the recompute in
            pass                                                     # the backward fills the slot
        elif adapter.pool == "token" and bias is None:                    # row formed by the fused op later
            st.slots[b] = QKVSlot(q[:, :, 0].detach(), k.detach(), v.detach())
        else:                                                        # row (with the bias) formed now
            st.slots[b] = RowSlot(formed_row(st, q, k, scale, bias), v.detach())
        T.register_hook(functools.partial(_on_grad, st, b, scale))
        return adapter.attn_out(b, T, x, rows) if out is None else out

    def run(self, st: CallState, images: Tensor) -> Scored:
        with torch.enable_grad():
            out = st.adapter.run(images)
            scored = self.score(st, out)
            torch.autograd.grad(scored.y.sum(), [st.first])
        return scored


METHOD = Grad()
