"""The row graph of method="row" (docs/method.md §8) written for a graph runtime.

The values are those of :class:`daam_fast.methods.row.RowCall`'s row graph: the R query rows
the head reads attend over their own keys and values (in the graph) and the other tokens'
kept k_b, v_b (constants). What changes is the cost of the traced graph at small token counts,
where a pass over a (B, H, N, d) tensor costs more than all the ops on the R rows:

- the attention of the R rows is one :class:`torch.autograd.Function` whose backward is
  written out, so the traced backward holds those ops and no padding op per slice;
- its forward output is the forward pass's own attention output at those rows (the same
  values; the model's fused attention computed them), so the row graph reads the kept values
  only in the backward;
- the backward's one product with the kept values also gives the map's <g^h, v^h[n]> (the
  coefficients appended to the product's rows), and the map's attention row is the forward's
  softmax: the maps read no (B, H, N, d) tensor of their own;
- every product reads the kept keys and values in place (``k @ q^T`` transposed, ``a @ v``),
  and a product over R = 1 rows is a broadcast product.

Per block, three passes over (B, H, N, d) tensors remain: k in the forward, v and k in the
backward.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .._capture import block_attention
from ..methods.row import RowCall

__all__ = ["RowTrace", "scores"]


def scores(keys: Tensor, q: Tensor) -> Tensor:
    """(B, H, R, N) q k^T for R query rows, as ``keys @ q^T`` transposed: the (B, H, N, d) keys
    are read in place and only the small (B, H, N, R) product is transposed."""
    return (keys @ q.transpose(-1, -2)).transpose(-1, -2)


def _dot(q: Tensor, k: Tensor) -> Tensor:
    """(B, H, R, R) q k^T of the R rows (a broadcast product for R = 1)."""
    return (q * k).sum(dim=-1, keepdim=True) if q.shape[2] == 1 else q @ k.transpose(-1, -2)


def _apply(a: Tensor, v: Tensor) -> Tensor:
    """(B, H, R, d) a @ v for a (B, H, R, R) (a broadcast product for R = 1)."""
    return a * v if a.shape[-1] == 1 else a @ v


class _RowAttention(torch.autograd.Function):
    """(o, a) of R query rows: a = softmax(scale [q k^T | q kc[R:]^T] + bias), o = a [v | vc[R:]].

    q, k, v (B, H, R, d) are in the graph; kc, vc (B, H, N, d) the kept keys and values, bias
    (B or 1, H, R, N) and ``known`` (None or o's value, from the forward pass) are constants.
    a (B, H, R, N) is returned without a gradient. ``sink`` (a dict) receives, in the
    backward, ``w`` (B, H, N) = <g^h, vc^h[n]> with g the gradient of o's row 0, ReLU'd where
    ``sink["relu"]``.
    """

    @staticmethod
    def forward(q: Tensor, k: Tensor, v: Tensor, kc: Tensor, vc: Tensor, bias: Optional[Tensor],
                known: Optional[Tensor], scale: float, sink: Dict[str, Any]) -> Tuple[Tensor, Tensor]:
        R = q.shape[2]
        s = torch.cat([_dot(q, k), scores(kc, q)[..., R:]], dim=-1) * scale
        if bias is not None:
            s = s + bias
        a = s.softmax(dim=-1)
        if known is not None:
            return known.clone(), a
        rest = torch.cat([torch.zeros_like(a[..., :R]), a[..., R:]], dim=-1)
        return _apply(a[..., :R], v) + rest @ vc, a

    @staticmethod
    def setup_context(ctx: Any, inputs, output) -> None:
        q, k, v, kc, vc, _, _, scale, sink = inputs
        ctx.save_for_backward(q, k, v, kc, vc, output[1])
        ctx.scale, ctx.sink = scale, sink
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, do: Tensor, _da: Optional[Tensor]):
        q, k, v, kc, vc, a = ctx.saved_tensors
        R = q.shape[2]
        g = do[:, :, :1]
        ctx.sink["w"] = scores(vc, g.clamp_min(0) if ctx.sink["relu"] else g)[:, :, 0]         # (B, H, N)
        da = torch.cat([_dot(do, v), scores(vc, do)[..., R:]], dim=-1)                         # (B, H, R, N)
        ds = a * (da - (a * da).sum(dim=-1, keepdim=True)) * ctx.scale
        own = ds[..., :R]
        rest = torch.cat([torch.zeros_like(own), ds[..., R:]], dim=-1)
        dq = _apply(own, k) + rest @ kc
        dk = _apply(own.transpose(-1, -2), q)
        dv = _apply(a[..., :R].transpose(-1, -2), do)
        return dq, dk, dv, None, None, None, None, None, None


class RowTrace(RowCall):
    """:class:`RowCall` with the row graph's attention of :class:`_RowAttention` (same values).

    Args:
        adapter: the model's adapter.  relu: the map's coefficients are ReLU'd (a model with a head).

    After the backward, ``w[b]`` (B, H, N) is <g_b^h, v_b^h[n]> and ``a0[b]`` (B, H, N) the
    [class] query's attention row, for every block b.
    """

    def __init__(self, adapter, relu: bool):
        super().__init__(adapter, scoped=False)
        L = adapter.depth
        self.known: List[Optional[Tensor]] = [None] * L          # (B, R, C) the forward's T_b[:R]
        self.sinks: List[Dict[str, Any]] = [{"relu": relu} for _ in range(L)]

    @property
    def w(self) -> List[Optional[Tensor]]:
        return [s.get("w") for s in self.sinks]

    def attention(self, b: int, x: Tensor, rows: Optional[int], ctx: Any) -> Tensor:
        ad, R = self.adapter, self.R
        if self.phase == "forward":
            with torch.no_grad():
                att = block_attention(ad, b, x, rows, ctx, keep=functools.partial(self._keep, b))
                self.known[b] = att.T[:, :R]
                return ad.attn_out(b, att.T, x, rows)
        kc, vc, brow = self.kv[b]
        q, k, v = ad.qkv(b, x, None, None)                   # (B, H, R, d): rows < R <= P
        B, H, _, d = q.shape
        dt = torch.float64 if q.dtype == torch.float64 else torch.float32
        bias = None if brow is None else brow[:, :, :R].to(dt)
        known = self.known[b]
        if known is not None:
            known = known.reshape(B, R, H, d).transpose(1, 2).to(dt)
        o, a = _RowAttention.apply(q.to(dt), k.to(dt), v.to(dt), kc.to(dt), vc.to(dt), bias, known,
                                   ad.scale(b), self.sinks[b])
        T = o.to(v.dtype).transpose(1, 2).reshape(B, R, H * d)
        self.T[b] = T
        self.q0[b] = q[:, :, 0].detach()
        self.a0[b] = a[:, :, 0].detach().float()
        return ad.attn_out(b, T, x, None)
