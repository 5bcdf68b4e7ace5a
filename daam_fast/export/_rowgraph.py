"""The row graph of method="row" (docs/method.md §8) written for a graph runtime.

The values are those of :class:`daam_fast.methods.row.RowCall`'s row graph: the R query rows
the head reads attend over their own keys and values (in the graph) and the other tokens'
kept k_b, v_b (constants). What changes is the cost of the traced graph at small token counts,
where each op's fixed cost in ONNX Runtime, and each pass over a (B, H, N, d) tensor, costs
more than the arithmetic on the R rows:

- the forward without a graph writes each attention as softmax(q k^T scale + bias) v and
  keeps the R rows' attention output o and softmax row a (the values the model's own attention
  gives, to float rounding);
- the row graph's attention is one :class:`torch.autograd.Function` whose forward returns
  those kept o and a (it computes them only for the last block, where the forward stopped
  before the attention) and whose backward is written out: no padding op per slice, and the
  kept keys and values read in place (``k @ q^T`` transposed, ``a @ v``), a product over
  R = 1 rows a broadcast product;
- the map's attention row is the forward's a, and its <g^h, v^h[n]> one more product in the
  backward (for every block but the first, whose backward does not run).

Per block the row graph reads the kept values and keys once each, in the backward.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .._capture import bias_mask
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
                known: Optional[Tuple[Tensor, Tensor]], scale: float, sink: Dict[str, Any]) -> Tuple[Tensor, Tensor]:
        if known is not None:
            return known[0].clone(), known[1].clone()
        R = q.shape[2]
        s = torch.cat([_dot(q, k), scores(kc, q)[..., R:]], dim=-1) * scale
        if bias is not None:
            s = s + bias
        a = s.softmax(dim=-1)
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
        self.known: List[Optional[Tuple[Tensor, Tensor]]] = [None] * L   # the forward's o, a at the R rows
        self.sinks: List[Dict[str, Any]] = [{"relu": relu} for _ in range(L)]

    def _forward_attention(self, b: int, x: Tensor, rows: Optional[int], ctx: Any) -> Tensor:
        """Block b's attention in the forward without a graph: the model's attention, written as
        softmax(q k^T scale + bias) v (in the graph, k^T is read by the product in place), keeping
        k_b, v_b (the last block's stops the forward there) and o, a at the R rows."""
        ad, R = self.adapter, self.R
        with torch.no_grad():
            q, k, v = ad.qkv(b, x, rows, ctx)
            bias = ad.attn_bias(b, ctx)
            self._keep(b, q, k, v, bias)
            s = (q @ k.transpose(-1, -2)) * ad.scale(b)
            if bias is not None:
                s = s + bias_mask(bias, q)
            a = s.softmax(dim=-1).to(v.dtype)
            o = a @ v                                                            # (B, H, rows, d)
            self.known[b] = (o[:, :, :R], a[:, :, :R])
            T = o.transpose(1, 2).reshape(x.shape[0], q.shape[2], ad.num_heads * ad.head_dim)
            return ad.attn_out(b, T, x, rows)

    @property
    def w(self) -> List[Optional[Tensor]]:
        return [s.get("w") for s in self.sinks]

    def attention(self, b: int, x: Tensor, rows: Optional[int], ctx: Any) -> Tensor:
        ad, R = self.adapter, self.R
        if self.phase == "forward":
            return self._forward_attention(b, x, rows, ctx)
        kc, vc, brow = self.kv[b]
        q, k, v = ad.qkv(b, x, None, None)                   # (B, H, R, d): rows < R <= P
        B, H, _, d = q.shape
        dt = torch.float64 if q.dtype == torch.float64 else torch.float32
        bias = None if brow is None else brow[:, :, :R].to(dt)
        known = self.known[b]
        if known is not None:
            known = (known[0].to(dt), known[1].to(dt))
        o, a = _RowAttention.apply(q.to(dt), k.to(dt), v.to(dt), kc.to(dt), vc.to(dt), bias, known,
                                   ad.scale(b), self.sinks[b])
        T = o.to(v.dtype).transpose(1, 2).reshape(B, R, H * d)
        self.T[b] = T
        self.q0[b] = q[:, :, 0].detach()
        self.a0[b] = a[:, :, 0].detach().float()
        return ad.attn_out(b, T, x, None)
