"""method="row": forward only, then a backward on the rows the head reads (docs/method.md §8).

How one call works:

1. Forward without a graph. Each block's attention runs the model's own computation
   (q / k / v projection, one fused SDPA, output projection) and keeps k_b and v_b (one
   contiguous copy each, read in place by the row graph and the map) and, where the model has
   a position bias (BEiT), its first R rows. A pre-hook on block 1 keeps the rows x_1[:R] of its input.
   The forward stops as soon as the last block's k_L, v_L exist: the last block's
   attention and MLP and the head never run on all tokens.
2. The row graph. From x_1[:R] (R = the rows the head reads: 1, or 2 for a distilled
   model) each block runs again on those R rows only, through its own forward, with the
   attention of the R queries over [their own keys and values (in the graph), the other
   tokens' k_b, v_b (constants)]; then the head. One ``torch.autograd.grad`` of Y with
   respect to every block's T_b[:R] gives G_b = dY/dT_b[0] along the row path:
   O(L (R C^2 + R N C)) work per image, about 3R/N of the forward.
3. The maps: the fused ``block_map`` op from the graph's [class] query q_b[0], k_b, v_b and
   G_b (docs/method.md §3); with a position bias, the graph's attention row weights v_b.

The last block's map is exact, and so is every block of a depth-1 model; elsewhere the paths
through the other tokens' keys and values are dropped (docs/method.md §8). Measured fidelity
to "grad" and cost: README (Methods), ``benchmarks/direct_fidelity.py``.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .._capture import CallState, QKVSlot, RowSlot, block_attention, coefficients, slot_map
from .._rows import softmax_rows
from .._session import in_this_call
from ..adapters import Adapter
from ..targets import Scored
from .base import Method

__all__ = ["METHOD", "RowCall", "row_support"]


def row_support(adapter: Adapter) -> Optional[str]:
    """None if method="row" applies to the model, else the reason it does not."""
    if adapter.pool != "token" or adapter.head_rows is None:
        return ("method='row' follows the rows the head reads; a mean-pooled model (global_pool='avg') reads "
                "every patch row, so its row path is the full backward")
    return None


class _Stop(BaseException):
    """Raised by the last block's attention once k_L, v_L are kept: the rest of the forward is
    not needed. A BaseException, so that a model's ``except Exception`` cannot swallow it."""


class RowCall:
    """What one method="row" call keeps, and block b's attention in each of the two phases.

    Args:
        adapter: the model's adapter (token-pooled: see :func:`row_support`).
        scoped: the forward's hook acts only in the DAAM call that made it
            (:func:`daam_fast._session.in_this_call`); False for a computation run outside a
            call (the exporter's trace, :mod:`daam_fast.export._compute`).
    """

    def __init__(self, adapter: Adapter, scoped: bool = True):
        self.adapter = adapter
        self.scoped = scoped
        self.R = int(adapter.head_rows)
        L = adapter.depth
        self.phase = "forward"
        self.x1: Optional[Tensor] = None                                   # (B, R, C) rows of block 1's input
        self.kv: List[Optional[Tuple[Tensor, Tensor, Optional[Tensor]]]] = [None] * L   # k_b, v_b, bias rows
        self.T: List[Optional[Tensor]] = [None] * L                        # (B, R, C) T_b[:R] in the row graph
        self.q0: List[Optional[Tensor]] = [None] * L                       # (B, H, d) the [class] query
        self.a0: List[Optional[Tensor]] = [None] * L                       # (B, H, N) its row (bias models)

    def grab_input(self, _mod: nn.Module, args, kwargs) -> None:
        """Forward pre-hook (``with_kwargs=True``) on block 1: keep x_1[:R]."""
        if self.phase == "forward":
            x = args[0] if args else next(iter(kwargs.values()))
            self.x1 = x[:, :self.R].detach()

    def attention(self, b: int, x: Tensor, rows: Optional[int], ctx) -> Tensor:
        """Block b's attention output for its input x: (B, N, C) in the forward, (B, R, C) in the graph."""
        adapter = self.adapter
        H, d, R, scale = adapter.num_heads, adapter.head_dim, self.R, adapter.scale(b)
        B = x.shape[0]
        if self.phase == "forward":
            with torch.no_grad():
                att = block_attention(adapter, b, x, rows, ctx, keep=functools.partial(self._keep, b))
                return adapter.attn_out(b, att.T, x, rows)
        if x.shape[1] != R or rows is not None:
            raise RuntimeError(f"method='row': block {b}'s attention got {x.shape[1]} rows in the row graph, "
                               f"expected {R}")
        kc, vc, brow = self.kv[b]
        q, k, v = adapter.qkv(b, x, None, None)                  # rows < R <= P: no rotary embedding
        # the R queries over their own keys (in the graph) and the other tokens' (constants)
        a = softmax_rows(q, (k, kc[:, :, R:]), scale, brow).to(v.dtype)                 # (B, H, R, N)
        o = a[..., :R] @ v + a[..., R:] @ vc[:, :, R:]                        # (B, H, R, d)
        T = o.transpose(1, 2).reshape(B, R, H * d)
        self.T[b] = T
        self.q0[b] = q[:, :, 0].detach()
        if brow is not None:
            self.a0[b] = a[:, :, 0].detach().float()
        return adapter.attn_out(b, T, x, None)

    def _keep(self, b: int, q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor]) -> None:
        """The forward's capture of block b, before its attention runs: contiguous copies of k, v
        (the row graph's matmuls then read them in place; views of the qkv output would be
        copied by each matmul, forward and backward) and the bias's first R rows. After the
        last block's, the forward stops (:class:`_Stop`)."""
        self.kv[b] = (k.contiguous(), v.contiguous(), None if bias is None else bias[:, :, :self.R])
        if b == self.adapter.depth - 1:
            raise _Stop()

    def forward(self, images: Tensor) -> None:
        """Phase 1: the forward without a graph, stopped after the last block's k, v."""
        adapter = self.adapter
        self.phase = "forward"
        hook = in_this_call(self.grab_input) if self.scoped else self.grab_input
        handle = adapter.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                adapter.run(images)
        except _Stop:
            pass
        finally:
            handle.remove()
        missing = [b for b, s in enumerate(self.kv) if s is None]
        if self.x1 is None or missing:
            raise RuntimeError(f"method='row': the forward did not reach blocks {missing or [0]} "
                               "(does the model run its blocks in order on one token sequence?)")

    def row_graph(self) -> Tensor:
        """Phase 2: the model output (logits (B, K) or feature (B, C)) from x_1[:R] through every
        block on R rows, with a graph from each T_b[:R] to it."""
        self.phase = "graph"
        x = self.x1.requires_grad_(True)
        for blk in self.adapter.blocks:
            x = blk(x)
            if isinstance(x, (tuple, list)):
                x = x[0]
        return self.adapter.head(x)

    def slot(self, b: int):
        """Block b's capture in the form :func:`daam_fast._capture.slot_map` reads (and drop it)."""
        k, v, brow = self.kv[b]
        self.kv[b] = None
        return QKVSlot(self.q0[b], k, v) if brow is None else RowSlot(self.a0[b], v)


class Row(Method):
    name = "row"
    summary = "forward only + a backward on the rows the head reads (near-exact; the last block exact)"
    forward_only = True
    reduce_last_block = False          # the forward stops after the last block's k, v instead

    def support(self, adapter: Adapter) -> Optional[str]:
        return row_support(adapter)

    def core(self, adapter: Adapter, b: int, state):
        def core(x: Tensor, rows: Optional[int], ctx) -> Tensor:
            return state().row.attention(b, x, rows, ctx)
        return core

    def run(self, st: CallState, images: Tensor) -> Scored:
        adapter = st.adapter
        call = st.row = RowCall(adapter)
        try:
            call.forward(images)
            with torch.enable_grad():
                scored = self.score(st, call.row_graph())
                grads = torch.autograd.grad(scored.y.sum(), call.T)
            with torch.no_grad():
                for b, g in enumerate(grads):
                    st.maps[b], st.head_maps[b] = slot_map(st, call.slot(b), coefficients(st, g), adapter.scale(b))
        finally:
            st.row = None
        return scored


METHOD = Row()
