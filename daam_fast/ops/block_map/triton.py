"""Triton kernels of ``block_map`` (GPU; on the CPU under ``TRITON_INTERPRET=1`` for tests).

Kernel 1, one program per (image, head): streams over key tiles computing the [class]
logits (written to a (B, H, N) float32 workspace) with an online max / sum, then streams
again over value tiles turning each logit into softmax weight * <g, v_n>, in place. k and v
are each read once, through their strides. Kernel 2: sum over heads + ReLU for the patch
tokens, writing each head's term too when asked (same pass). No N x N matrix. Offsets are
int64; the launch runs on the tensors' device.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .. import _alloc
from .._backends import device_guard, grid_dim
from .._backends import tl, triton  # noqa: F401  (triton is None when not installed)
from .._backends import triton_available as available  # noqa: F401


if triton is not None:

    @triton.jit
    def _head_kernel(q_ptr, k_ptr, v_ptr, g_ptr, ws_ptr,
                     q_sb, q_sh, k_sb, k_sh, k_sn, v_sb, v_sh, v_sn, g_sb, g_sh,
                     H, N, D, scale,
                     BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        bh = tl.program_id(0).to(tl.int64)
        b = bh // H
        h = bh % H
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        q = tl.load(q_ptr + b * q_sb + h * q_sh + offs_d, mask=dmask, other=0.0).to(tl.float32) * scale
        g = tl.load(g_ptr + b * g_sb + h * g_sh + offs_d, mask=dmask, other=0.0).to(tl.float32)
        ws = ws_ptr + bh * N
        kbase = k_ptr + b * k_sb + h * k_sh
        vbase = v_ptr + b * v_sb + h * v_sh
        m = tl.full((), float("-inf"), tl.float32)
        l = tl.zeros((), tl.float32)
        for start in range(0, N, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N).to(tl.int64)
            nmask = offs_n < N
            kt = tl.load(kbase + offs_n[:, None] * k_sn + offs_d[None, :],
                         mask=nmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)
            s = tl.sum(kt * q[None, :], axis=1)
            s = tl.where(nmask, s, float("-inf"))
            tl.store(ws + offs_n, s, mask=nmask)
            m_new = tl.maximum(m, tl.max(s, axis=0))
            l = l * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new), axis=0)
            m = m_new
        inv = 1.0 / l
        for start in range(0, N, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N).to(tl.int64)
            nmask = offs_n < N
            vt = tl.load(vbase + offs_n[:, None] * v_sn + offs_d[None, :],
                         mask=nmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)
            w = tl.sum(vt * g[None, :], axis=1)
            s = tl.load(ws + offs_n, mask=nmask, other=float("-inf"))
            tl.store(ws + offs_n, tl.exp(s - m) * inv * w, mask=nmask)

    @triton.jit
    def _sum_heads_kernel(ws_ptr, out_ptr, heads_ptr, H, N, P,
                          BLOCK_N: tl.constexpr, HEADS: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        t = tl.program_id(1).to(tl.int64)
        offs = P + t * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
        mask = offs < N
        acc = tl.zeros((BLOCK_N,), tl.float32)
        for h in range(0, H):
            term = tl.load(ws_ptr + (b * H + h) * N + offs, mask=mask, other=0.0)
            if HEADS:
                tl.store(heads_ptr + (b * H + h) * (N - P) + (offs - P), term, mask=mask)
            acc += term
        tl.store(out_ptr + b * (N - P) + (offs - P), tl.maximum(acc, 0.0), mask=mask)


def block_sizes(N: int, D: int) -> Tuple[int, int]:
    """(BLOCK_N, BLOCK_D) of the launches (also what tests/test_gpu_compile.py compiles)."""
    BLOCK_D = max(16, triton.next_power_of_2(D))
    # 64 x 128 tiles (head dim > 64) spill on sm_90 at 128 tokens: 64 tokens there (ptxas sweep, NOTES)
    return max(16, min(128 if BLOCK_D <= 64 else 64, triton.next_power_of_2(N))), BLOCK_D


def launches(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int, ws: Tensor,
             out: Tensor, ht: Optional[Tensor]) -> List[tuple]:
    """The (kernel, grid, args, kwargs) this backend launches, in order."""
    B, H, N, D = k.shape
    BLOCK_N, BLOCK_D = block_sizes(N, D)
    head = (_head_kernel, (B * H,),
            (q_cls, k, v, g, ws, q_cls.stride(0), q_cls.stride(1), k.stride(0), k.stride(1), k.stride(2),
             v.stride(0), v.stride(1), v.stride(2), g.stride(0), g.stride(1), H, N, D, float(scale)),
            dict(BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, num_warps=8))   # 4 warps: ptxas spills some cases (NOTES)
    tiles = grid_dim(triton.cdiv(N - prefix, BLOCK_N), "block_map token tiles")
    total = (_sum_heads_kernel, (B, tiles), (ws, out, ht if ht is not None else out, H, N, prefix),
             dict(BLOCK_N=BLOCK_N, HEADS=ht is not None))
    return [head, total]


def block_map_triton(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int = 0,
                     heads: bool = False, wrap=None) -> Tuple[Tensor, Optional[Tensor]]:
    """(maps (B, N - P), head terms (B, H, N - P) or None), float32; k, v read in place through
    their strides (unit last stride); runs on k's device. ``wrap``: ``wrap_triton`` inside a triton_op."""
    ok, why = available()
    if not ok:
        raise RuntimeError(why)
    if k.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        q_cls, k, v, g = (t.float() for t in (q_cls, k, v, g))
    q_cls, k, v, g = (t if t.stride(-1) == 1 else t.contiguous() for t in (q_cls, k, v, g))
    B, H, N, D = k.shape
    ws = torch.empty(B, H, N, dtype=torch.float32, device=k.device)
    out = _alloc.empty((B, N - prefix), torch.float32, k.device)
    ht = _alloc.empty((B, H, N - prefix), torch.float32, k.device) if heads else None
    with device_guard(k):
        for kernel, grid, args, kwargs in launches(q_cls, k, v, g, scale, prefix, ws, out, ht):
            (wrap(kernel) if wrap is not None else kernel)[grid](*args, **kwargs)
    return out, ht
