"""Triton kernel of ``cls_attention`` (GPU; on the CPU under ``TRITON_INTERPRET=1`` for tests).

Flash-attention forward: one program per (image x head, tile of BLOCK_M query rows); it
streams over key / value tiles with an online max and sum, so no N x N matrix exists. The
program that holds query row 0 (the [class] token) also stores that row's raw logits into
a_cls as the tiles pass, and in its epilogue, once the row's final max m_0 and sum l_0 are
known, rewrites them as exp(s - m_0) / l_0: the normalised [class] row for one extra
O(N) read/write, no extra pass over k. Offsets are int64; the launch runs on the tensors' device.
Tile sizes and warps per dtype and head dim (:func:`config`) keep every specialisation free
of register spills on sm_80 and sm_90 (tests/test_gpu_compile.py checks ptxas).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor

from .. import _alloc
from .._backends import device_guard, grid_dim
from .._backends import tl, triton  # noqa: F401  (triton is None when not installed)
from .._backends import triton_available as available  # noqa: F401


if triton is not None:

    @triton.jit
    def _cls_attn_fwd(q_ptr, k_ptr, v_ptr, o_ptr, a_ptr,
                      q_sb, q_sh, q_sm, k_sb, k_sh, k_sn, v_sb, v_sh, v_sn,
                      H, M, N, D, scale,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      PRECISION: tl.constexpr):
        bh = tl.program_id(0).to(tl.int64)            # axis 0: up to 2^31 - 1 programs
        pid_m = tl.program_id(1)
        b = bh // H
        h = bh % H
        offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        mmask = offs_m < M
        dmask = offs_d < D
        q = tl.load(q_ptr + b * q_sb + h * q_sh + offs_m[:, None] * q_sm + offs_d[None, :],
                    mask=mmask[:, None] & dmask[None, :], other=0.0)
        kbase = k_ptr + b * k_sb + h * k_sh
        vbase = v_ptr + b * v_sb + h * v_sh
        arow = a_ptr + bh * N
        has_cls = pid_m == 0
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
        for start in range(0, N, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N).to(tl.int64)
            nmask = offs_n < N
            kt = tl.load(kbase + offs_n[:, None] * k_sn + offs_d[None, :],
                         mask=nmask[:, None] & dmask[None, :], other=0.0)
            s = tl.dot(q, tl.trans(kt), input_precision=PRECISION) * scale          # (BLOCK_M, BLOCK_N)
            s = tl.where(nmask[None, :], s, float("-inf"))
            row0 = tl.sum(tl.where(offs_m[:, None] == 0, s, 0.0), axis=0)         # logits of row 0
            tl.store(arow + offs_n, row0, mask=nmask & has_cls)
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            vt = tl.load(vbase + offs_n[:, None] * v_sn + offs_d[None, :],
                         mask=nmask[:, None] & dmask[None, :], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt, input_precision=PRECISION)
            m_i = m_new
        out = acc / l_i[:, None]
        o_base = o_ptr + bh * M * D
        tl.store(o_base + offs_m[:, None] * D + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=mmask[:, None] & dmask[None, :])
        tl.debug_barrier()                             # the row's raw logits are all stored
        if has_cls:                                    # epilogue: normalise the [class] row
            m0 = tl.sum(tl.where(offs_m == 0, m_i, 0.0), axis=0)
            inv_l0 = 1.0 / tl.sum(tl.where(offs_m == 0, l_i, 0.0), axis=0)
            for start in range(0, N, BLOCK_N):
                offs_n = start + tl.arange(0, BLOCK_N).to(tl.int64)
                nmask = offs_n < N
                s0 = tl.load(arow + offs_n, mask=nmask, other=float("-inf"))
                tl.store(arow + offs_n, tl.exp(s0 - m0) * inv_l0, mask=nmask)


def config(dtype: torch.dtype, D: int, M: int) -> Dict[str, object]:
    """Tile sizes, warps and dot precision for q's dtype, head dim D and query rows M.

    float32 uses "ieee" dots (exact as SDPA's float32 math; FMA, no tensor cores), whose
    operands live in registers: small tiles there; float16 / bfloat16 use tensor cores.
    Chosen from ptxas sweeps (benchmarks/NOTES.md) so that every specialisation reports no
    spill and no stack frame on sm_80 / sm_90 (the former 64 x 64 float32 tiles spilled 14 KB;
    float32 at head dim 256 with 32-key tiles spilled 40 B on sm_80: 16-key tiles there).
    """
    BLOCK_D = max(16, triton.next_power_of_2(D))
    if dtype == torch.float32:
        BLOCK_M, BLOCK_N, prec = (16 if M <= 16 or BLOCK_D > 64 else 32), (32 if BLOCK_D <= 128 else 16), "ieee"
    else:
        BLOCK_N, prec = 32, "tf32"
        if M <= 16:
            BLOCK_M, BLOCK_N = 16, 64
        else:
            BLOCK_M = 64 if BLOCK_D <= 64 else 32
    warps = 4
    return dict(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, PRECISION=prec, num_warps=warps)


def launches(q: Tensor, k: Tensor, v: Tensor, out: Tensor, a_cls: Tensor, scale: float) -> List[tuple]:
    """The (kernel, grid, args, kwargs) this backend launches."""
    B, H, M, D = q.shape
    N = k.shape[2]
    cfg = config(q.dtype, D, M)
    grid = (B * H, grid_dim(triton.cdiv(M, cfg["BLOCK_M"]), "cls_attention query tiles"))
    args = (q, k, v, out, a_cls, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), H, M, N, D, float(scale))
    return [(_cls_attn_fwd, grid, args, cfg)]


def cls_attention_triton(q: Tensor, k: Tensor, v: Tensor, scale: float, wrap=None) -> Tuple[Tensor, Tensor]:
    """out (B, H, M, d) in q's dtype, a_cls (B, H, N) float32; q, k, v read through their strides;
    runs on q's device. ``wrap``: ``wrap_triton`` inside a triton_op."""
    ok, why = available(q.device)
    if not ok:
        raise RuntimeError(why)
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
    k, v = k.to(q.dtype), v.to(q.dtype)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    B, H, M, D = q.shape
    N = k.shape[2]
    out = _alloc.empty((B, H, M, D), q.dtype, q.device)
    a_cls = _alloc.empty((B, H, N), torch.float32, q.device)
    with device_guard(q):
        for kernel, grid, args, kwargs in launches(q, k, v, out, a_cls, scale):
            (wrap(kernel) if wrap is not None else kernel)[grid](*args, **kwargs)
    return out, a_cls
