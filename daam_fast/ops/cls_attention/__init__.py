"""``cls_attention``: softmax attention forward that also returns the normalised [class]
row a_cls (B, H, N), dispatched to CUDA / Triton (flash-style, row written in the epilogue)
or SDPA + the O(N d) row (CPU, and the PyTorch fallback). Differentiable: the backward
recomputes with SDPA (and the row) and lets PyTorch's own backward do the work.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _dispatch
from .reference import cls_attention_math, cls_attention_reference, cls_row

__all__ = ["cls_attention", "cls_attention_reference", "cls_attention_math", "cls_row"]


def _check(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"cls_attention: q must be (B, H, M, d) and k, v (B, H, N, d), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, N, d = k.shape
    if q.shape[0] != B or q.shape[1] != H or q.shape[3] != d:
        raise ValueError(f"cls_attention: q {tuple(q.shape)} does not match k / v (B, H, N, d) = {(B, H, N, d)}")
    if not 1 <= q.shape[2] <= N:
        raise ValueError(f"cls_attention: q must have 1 .. N={N} rows (row 0 = [class]), got {q.shape[2]}")
    if N == 0 or d == 0 or B == 0:
        raise ValueError("cls_attention: empty input")
    devs = {t.device for t in (q, k, v)}
    if len(devs) != 1:
        raise ValueError(f"cls_attention: all inputs must be on one device, got {devs}")


def _forward(q: Tensor, k: Tensor, v: Tensor, scale: float, name: str) -> Tuple[Tensor, Tensor]:
    fn = _dispatch.get_impl("cls_attention", name, "cls_attention_" + name, cls_attention_reference)
    return fn(q, k, v, scale)


class ClsAttentionFn(torch.autograd.Function):
    """Forward: the chosen backend. Backward: recompute SDPA (and the row, when its gradient
    is asked for) on the saved q, k, v and run PyTorch's backward of those."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float, name: str):  # type: ignore[override]
        out, a_cls = _forward(q, k, v, scale, name)
        ctx.save_for_backward(q, k, v)
        ctx.scale = scale
        return out, a_cls

    @staticmethod
    def backward(ctx, g_out: Optional[Tensor], g_a: Optional[Tensor]):  # type: ignore[override]
        q, k, v = ctx.saved_tensors
        need = ctx.needs_input_grad[:3]
        with torch.enable_grad():
            qq, kk, vv = (t.detach().requires_grad_(r) for t, r in zip((q, k, v), need))
            outs, grads = [], []
            if g_out is not None:
                outs.append(F.scaled_dot_product_attention(qq, kk, vv, scale=ctx.scale))
                grads.append(g_out)
            if g_a is not None and (need[0] or need[1]):
                outs.append(cls_row(qq[:, :, 0], kk, ctx.scale))
                grads.append(g_a)
            inputs = [t for t, r in zip((qq, kk, vv), need) if r]
            res = torch.autograd.grad(outs, inputs, grads, allow_unused=True) if outs and inputs else []
        it = iter(res)
        dq, dk, dv = (next(it) if r else None for r in need)
        return dq, dk, dv, None, None


def cls_attention(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None,
                  backend: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """Attention forward plus the normalised [class] row, in one pass over k and v on a GPU.

    Args:
        q: (B, H, M, d) queries, 1 <= M <= N (M < N: only the first M rows, e.g. the last
            block reduced to the [class] row); row 0 is the [class] token.
        k, v: (B, H, N, d) keys and values (after any q/k norm); any strides with a unit
            last stride are read in place (views of timm's qkv output need no copy).
        scale: softmax scale; default d ** -0.5.
        backend: None (``DAAM_FAST_BACKEND`` or auto), "torch", "cpp", "triton", "cuda".

    Returns:
        out: (B, H, M, d) in q's dtype, equal to ``F.scaled_dot_product_attention(q, k, v)``.
        a_cls: (B, H, N) float32 (float64 on the CPU for float64 inputs):
            ``softmax(scale * q[:, :, 0] @ k^T)``, row 0 of the attention matrix.

    Gradients flow to q, k, v through both outputs (backward = SDPA's, recomputed).

    Example:
        >>> out, a = cls_attention(q, k, v)          # out: (B, H, N, d), a: (B, H, N)
    """
    _check(q, k, v)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    name = _dispatch.resolve("cls_attention", q.device, backend)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return ClsAttentionFn.apply(q, k, v, float(scale), name)
    return _forward(q, k, v, float(scale), name)
