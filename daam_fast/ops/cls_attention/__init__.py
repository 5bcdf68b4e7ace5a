"""``cls_attention``: softmax attention forward that also returns the normalised [class]
row a_cls (B, H, N), dispatched to CUDA / Triton (flash-style, row written in the epilogue)
or SDPA + the O(N d) row (CPU, and the PyTorch fallback), as the PyTorch op
``daam_fast::cls_attention`` (``daam_fast/ops/_library.py``). Differentiable
(``register_autograd``): the backward recomputes with SDPA (and the row) and lets PyTorch's own
backward do the work.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _dispatch, _library
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


def _out_dtype(q: Tensor, backend: str) -> torch.dtype:
    if backend == "torch" or q.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return q.dtype
    return torch.float32


def _row_dtype(q: Tensor, backend: str) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 and backend == "torch" else torch.float32


def _forward(q: Tensor, k: Tensor, v: Tensor, scale: float, name: str) -> Tuple[Tensor, Tensor]:
    fn = _dispatch.get_impl("cls_attention", name, "cls_attention_" + name, cls_attention_reference)
    out, a_cls = fn(q, k, v, scale)
    return out.contiguous(), a_cls.contiguous()


def _backward(q: Tensor, k: Tensor, v: Tensor, scale: float, need, g_out: Optional[Tensor],
              g_a: Optional[Tensor]):
    """Gradients of q, k, v: recompute SDPA (and the row, when its gradient is asked for) on the
    saved inputs and run PyTorch's own backward of those."""
    with torch.enable_grad():
        qq, kk, vv = (t.detach().requires_grad_(r) for t, r in zip((q, k, v), need))
        outs, grads = [], []
        if g_out is not None:
            outs.append(F.scaled_dot_product_attention(qq, kk, vv, scale=scale))
            grads.append(g_out.to(outs[-1].dtype))
        if g_a is not None and (need[0] or need[1]):
            outs.append(cls_row(qq[:, :, 0], kk, scale))
            grads.append(g_a.to(outs[-1].dtype))
        inputs = [t for t, r in zip((qq, kk, vv), need) if r]
        res = torch.autograd.grad(outs, inputs, grads, allow_unused=True) if outs and inputs else []
    it = iter(res)
    return tuple(next(it) if r else None for r in need)


if _library.HAS_CUSTOM_OP:
    @torch.library.custom_op("daam_fast::cls_attention", mutates_args=())
    def _op(q: Tensor, k: Tensor, v: Tensor, scale: float, backend: str) -> Tuple[Tensor, Tensor]:
        return _forward(q, k, v, scale, backend)

    @_op.register_fake
    def _(q, k, v, scale, backend):
        B, H, M, D = q.shape
        return (q.new_empty((B, H, M, D), dtype=_out_dtype(q, backend)),
                q.new_empty((B, H, k.shape[2]), dtype=_row_dtype(q, backend)))

    def _setup_context(ctx, inputs, output):
        q, k, v, scale, _backend = inputs
        ctx.save_for_backward(q, k, v)
        ctx.scale = scale

    def _op_backward(ctx, g_out, g_a):
        q, k, v = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, ctx.scale, ctx.needs_input_grad[:3], g_out, g_a)
        return dq, dk, dv, None, None

    _op.register_autograd(_op_backward, setup_context=_setup_context)

    if _library.HAS_TRITON_OP:
        @torch.library.triton_op("daam_fast::cls_attention_triton", mutates_args=())
        def _triton_op(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
            from .triton import cls_attention_triton
            out, a_cls = cls_attention_triton(q, k, v, scale, wrap=_library.wrap)
            return out, a_cls

        def _setup_triton(ctx, inputs, output):
            q, k, v, scale = inputs
            ctx.save_for_backward(q, k, v)
            ctx.scale = scale

        def _triton_backward(ctx, g_out, g_a):
            q, k, v = ctx.saved_tensors
            return (*_backward(q, k, v, ctx.scale, ctx.needs_input_grad[:3], g_out, g_a), None)

        _triton_op.register_autograd(_triton_backward, setup_context=_setup_triton)

    def _apply(q, k, v, scale, name):
        if _library.use_triton_op(name, q):
            return torch.ops.daam_fast.cls_attention_triton(q, k, v, scale)
        return _op(q, k, v, scale, name)
else:  # pragma: no cover - torch < 2.4
    class ClsAttentionFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, scale, name):  # type: ignore[override]
            out, a_cls = _forward(q, k, v, scale, name)
            ctx.save_for_backward(q, k, v)
            ctx.scale = scale
            return out, a_cls

        @staticmethod
        def backward(ctx, g_out, g_a):  # type: ignore[override]
            q, k, v = ctx.saved_tensors
            return (*_backward(q, k, v, ctx.scale, ctx.needs_input_grad[:3], g_out, g_a), None, None)

    def _apply(q, k, v, scale, name):
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
            return ClsAttentionFn.apply(q, k, v, scale, name)
        return _forward(q, k, v, scale, name)


def cls_attention(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None,
                  backend: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """Attention forward plus the normalised [class] row, in one pass over k and v on a GPU.

    Args:
        q: (B, H, M, d) queries, 1 <= M <= N (M < N: only the first M rows, e.g. the last
            block reduced to the [class] row); row 0 is the [class] token.
        k, v: (B, H, N, d) keys and values (after any q/k norm); any strides with a unit
            last stride are read in place (views of timm's qkv output need no copy).
        scale: softmax scale; default d ** -0.5.
        backend: None (``DAAM_FAST_BACKEND``, else auto: chosen by device and sizes, see
            ``daam_fast/ops/_dispatch.py``), "torch" (SDPA + row: the CPU path), "triton", "cuda".
            There is no "cpp" kernel: asking for it raises. "cuda" is a correctness reference,
            not a fast path: its kernel does scalar FMAs, no tensor cores, far slower than SDPA
            plus the row (the Triton kernel is the fused GPU path). An explicit backend whose
            kernel cannot take the sizes raises ValueError naming the limit (CUDA: d <= 128,
            B * H <= 65535).

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
    B, H, M, d = (int(x) for x in q.shape)
    name = _library.resolve("cls_attention", str(q.device), backend, (B, H, M, int(k.shape[2]), d))
    return _apply(q, k, v, float(scale), name)
