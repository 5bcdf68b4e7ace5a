"""method="direct": forward only; G_b taken along the residual path (docs/method.md §7).

G_b ~= proj_b^T (ls_b * dY/dx_L[0]), with dY/dx_L[0] exact through the final norm and the
head: the blocks run without a graph, each keeping its attention row (B, H, N) and v; one
small backward through the norm and head gives dY/dx_L. An approximation of "grad": its
measured fidelity is in the README.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._capture import CallState, RowSlot, formed_row, slot_map
from .._session import in_this_call
from ..adapters import Adapter
from ..targets import Scored
from .base import Method

__all__ = ["METHOD"]


class Direct(Method):
    name = "direct"
    summary = "forward only: coefficients along the residual path (an approximation)"
    forward_only = True
    kernel_row = True
    traceable = True            # the slot write is a plain list store: Dynamo replays it after the graph

    def support(self, adapter: Adapter) -> Optional[str]:
        return adapter.direct_support()

    def capture(self, st: CallState, b: int, scale: float, x: Tensor, rows: Optional[int], q: Tensor,
                k: Tensor, v: Tensor, T: Tensor, a: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
        with torch.no_grad():                                         # keep row + v; q, k and the qkv
            a = a.detach() if a is not None else formed_row(st, q, k, scale, bias)     # buffer can go
            st.slots[b] = RowSlot(a, v.contiguous())
        return st.adapter.attn_out(b, T, x, rows)

    def run(self, st: CallState, images: Tensor) -> Scored:
        adapter = st.adapter

        def grab(_mod, args):
            st.x_last = args[0].detach()

        handle = adapter.final_norm().register_forward_pre_hook(in_this_call(grab))       # this call only
        try:
            with torch.no_grad():
                adapter.run(images)
        finally:
            handle.remove()
        with torch.enable_grad():
            xL = st.x_last.requires_grad_(True)                          # (B, R, C), R = rows the head reads
            scored = self.score(st, adapter.head(xL))
            (r,) = torch.autograd.grad(scored.y.sum(), [xL])
        st.x_last = None
        r = r[:, 0] if adapter.pool == "token" else r[:, adapter.num_prefix:].sum(dim=1)    # (B, C) dY/dx_L
        with torch.no_grad():
            for b in range(adapter.depth):
                slot, st.slots[b] = st.slots[b], None
                proj_w, gamma = adapter.residual_weights(b)
                rr = r if gamma is None else r * gamma
                G = rr.to(proj_w.dtype) @ proj_w                                  # proj^T (ls * r)
                G = G.clamp_min(0) if st.relu else G
                st.maps[b], st.head_maps[b] = slot_map(st, slot, G, adapter.scale(b))
        return scored


METHOD = Direct()
