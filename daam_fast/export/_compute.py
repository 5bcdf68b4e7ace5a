"""The computation an exported graph holds: DAAM's "row" and "grad" methods written as one
function of (weights, pixels), for tracing.

This is the computation of :mod:`daam_fast.methods.row` (docs/method.md §8) and of
:mod:`daam_fast.methods.grad` (§2-§3) restated without the explainer's per-call machinery
(value checks read on the host, top-k rows, kernels chosen at run time): every step is an
ordinary tensor op, so ``make_fx`` can trace it, the backward included, into a graph of aten
ops with no autograd in it. The model is run through its adapter, with each block's
attention patched for the duration of the trace (:class:`daam_fast._session.patched`).

- "row": the method's own two phases (:class:`daam_fast.methods.row.RowCall`, its row graph
  written for a graph runtime by :class:`daam_fast.export._rowgraph.RowTrace`): a forward
  without a graph that stops once the last block's k, v exist, keeping each block's k_b, v_b
  (and, with a position bias, its first R rows); then the R rows the head reads run through
  every block again, attending over their own keys and values and the other tokens' kept
  ones; one backward from the score to every block's T_b[:R].
- "grad": the whole forward with an explicit softmax in every block (its backward is then
  plain matrix products), T_1 a leaf of the graph, one backward from the score to every T_b.

The map of block b: ReLU(sum_h a^h[n] <g^h, v^h[n]>) over the patch tokens, with a the
[class] query's attention row and g = G_b = dY/dT_b[0] (ReLU'd for a model with a head; a
mean-pooled model, "grad" only: the mean of the patch queries' rows and dY/dT_b summed over
the patch rows, §7): the math of :func:`daam_fast.ops.block_map.reference.block_map_reference`
and :func:`daam_fast._rows.row_map` (:meth:`Computation._maps`).
"""
from __future__ import annotations

import copy
import functools
from typing import Any, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .._rows import softmax_rows
from ..adapters import Adapter
from ..bank import dimension_weights, label_free_weights
from ..methods.row import RowCall
from ._rowgraph import RowTrace, scores
from ._targets import TargetSpec

__all__ = ["Computation", "METHODS"]

METHODS = ("row", "grad")


class _GradTrace:
    """What one traced "grad" call keeps per block (the fields :class:`RowCall` keeps for "row")."""

    def __init__(self, depth: int):
        self.kv: List[Optional[Tuple[Tensor, Tensor, Optional[Tensor]]]] = [None] * depth
        self.T: List[Optional[Tensor]] = [None] * depth               # (B, N, C) in the graph
        self.q0: List[Optional[Tensor]] = [None] * depth              # (B, H, d) the [class] query
        self.a0: List[Optional[Tensor]] = [None] * depth              # (B, H, N) its row (avg pool, bias models)


class Computation(nn.Module):
    """``forward(x, target=None) -> (output, block_maps)``: DAAM as one traceable function.

    Holds the model as a submodule, so ``torch.func.functional_call`` can run it on weights
    given as inputs. Call it with the model's attentions patched by :meth:`cores` (the
    tracer does).

    Args:
        model: the model, in eval mode.  adapter: its adapter.  method: "row" or "grad".
        target: what is scored (:class:`daam_fast.export._targets.TargetSpec`).
    """

    def __init__(self, model: nn.Module, adapter: Adapter, method: str, target: TargetSpec):
        super().__init__()
        self.model = model
        self.adapter = adapter
        self.method = method
        self.target = target
        self.relu = target.relu(adapter)
        self.trace: Optional[Union[RowCall, _GradTrace]] = None     # what the call in progress keeps
        self.block: Optional[int] = None                # the block being traced, for messages
        self.failed_in: Optional[int] = None            # the block a failed trace stopped in
        if target.kind == "bank":                       # the bank: tensors of the graph, like the weights
            self.register_buffer("bank_features", target.bank.features.detach().clone())
            self.register_buffer("bank_labels", target.bank.labels.detach().clone())

    # ------------------------------------------------------------------ attention cores
    def core(self, b: int):
        """Block b's attention ``core(x, rows, ctx)`` for :func:`daam_fast._session.patched`."""
        def core(x: Tensor, rows: Optional[int], ctx: Any) -> Tensor:
            self.block = b
            if self.method == "grad":
                return self._grad_attention(b, x, rows, ctx)
            return self.trace.attention(b, x, rows, ctx)
        return core

    def _grad_attention(self, b: int, x: Tensor, rows: Optional[int], ctx: Any) -> Tensor:
        ad, tr = self.adapter, self.trace
        H, d, scale = ad.num_heads, ad.head_dim, ad.scale(b)
        B = x.shape[0]
        q, k, v = ad.qkv(b, x, rows, ctx)
        bias = ad.attn_bias(b, ctx)
        a = softmax_rows(q, k, scale, bias).to(v.dtype)                          # (B, H, N, N)
        T = (a @ v).transpose(1, 2).reshape(B, q.shape[2], H * d)
        if b == 0:
            T = T.detach().requires_grad_(True)          # the graph starts at T_1: dY/dT_b is exact for every b
        tr.T[b] = T
        tr.kv[b] = (k.detach(), v.detach(), None)
        tr.q0[b] = q[:, :, 0].detach()
        if ad.pool == "avg":                            # the mean of the patch queries' rows (§7)
            tr.a0[b] = a[:, :, ad.num_prefix:].float().mean(dim=2).detach()
        elif bias is not None:
            tr.a0[b] = a[:, :, 0].detach().float()
        return ad.attn_out(b, T, x, rows)

    # ------------------------------------------------------------------ the call
    def forward(self, x: Tensor, target: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """The model output, the block maps and the classes explained of a batch.

        Args:
            x: (B, C, H, W) pixels, normalised as the model expects.
            target: (B,) int64 classes, when the target is the graph's second input.

        Returns:
            (output, block_maps, targets): logits (B, K) or the feature (B, C) float32, the
            per-block maps (B, L, N - P) float32 (docs/method.md §3), and (B,) int64 the class
            explained (the bank's vote with a bank; -1 where there is no class).
        """
        ad = self.adapter
        self.block = None
        self.trace = tr = RowTrace(ad, self.relu) if self.method == "row" else _GradTrace(ad.depth)
        hooks = [blk.register_forward_pre_hook(functools.partial(self._enter, b)) for b, blk in enumerate(ad.blocks)]
        hooks.append(ad.blocks[-1].register_forward_hook(functools.partial(self._enter, None)))
        try:
            with torch.enable_grad():
                if self.method == "row":
                    tr.forward(x)                       # the forward without a graph, then the row graph
                    out = tr.row_graph()
                else:
                    out = ad.run(x)
                self.block = None
                y, cls = self._score(out, target)
                grads = torch.autograd.grad(y.sum(), tr.T)
            G = [g[:, 0] if ad.pool == "token" else g[:, ad.num_prefix:].sum(dim=1) for g in grads]
            return out.detach().float(), self._maps([g.clamp_min(0) if self.relu else g for g in G]), cls
        except Exception:
            self.failed_in = self.block                 # where the trace stopped, for the error message
            raise
        finally:
            self.trace = None
            for hk in hooks:
                hk.remove()

    def _enter(self, b: Optional[int], *_) -> None:
        """Block hook: the trace is now in block b (None: past the last block)."""
        self.block = b

    def _score(self, out: Tensor, target: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """(B,) the score Y per image whose gradient gives the coefficients, and (B,) the class."""
        spec = self.target
        none = torch.full_like(out[:, 0], -1, dtype=torch.long).detach()
        if spec.kind == "prediction":
            idx = out.detach().argmax(dim=1)
        elif spec.kind == "class":
            idx = torch.full_like(out[:, 0], spec.index, dtype=torch.long)
        elif spec.kind == "input":
            idx = target.to(torch.long)
        elif spec.kind == "score":
            return spec.fn(out), none
        else:                                                              # "label-free" / "bank"
            if spec.kind == "bank":
                bank = copy.copy(spec.bank)
                bank.features, bank.labels = self.bank_features, self.bank_labels
                w, cls = dimension_weights(out.detach(), bank)
            else:
                w, cls = label_free_weights(out.detach()), none
            return (w.to(out.dtype) * out).sum(dim=1), cls
        return out.gather(1, idx[:, None])[:, 0], idx

    def _maps(self, G: List[Tensor]) -> Tensor:
        """(B, L, N - P) every block's map from its coefficients G_b (B, C):
        ReLU(sum_h a_b^h[n] <g_b^h, v_b^h[n]>) (docs/method.md §3), block by block. a_b is the
        row kept by the trace (the row graph's softmax row; a bias model's or a mean-pooled
        model's row) or softmax(scale k_b q_b[0]); <g_b, v_b[n]> the row graph's backward formed
        for every block it passes through (all but the first), else v_b @ g_b. Products read the
        keys and values in place."""
        ad, tr = self.adapter, self.trace
        H, d, P = ad.num_heads, ad.head_dim, ad.num_prefix
        B = G[0].shape[0]
        formed = tr.w if isinstance(tr, RowTrace) else [None] * ad.depth
        maps = []
        for b, (k, v, _) in enumerate(tr.kv):
            w = formed[b] if formed[b] is not None else (v.float() @ G[b].float().reshape(B, H, d, 1))[..., 0]
            a = tr.a0[b]
            if a is None:
                a = (scores(k.float(), tr.q0[b].float()[:, :, None]) * ad.scale(b)).softmax(dim=-1)[:, :, 0]
            maps.append((a.float() * w.float()).sum(dim=1)[:, P:].clamp_min(0))
        return torch.stack(maps, dim=1)
