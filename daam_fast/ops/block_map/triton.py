"""Triton kernels of ``block_map`` (GPU; on the CPU under ``TRITON_INTERPRET=1`` for tests).

Parallel across tokens, like the CUDA kernels. Kernel 1, one program per (image x head, tile
of BLOCK_N tokens): the tile's logits scale <q, k_n> and <g, v_n> (k and v read once, through
their strides) go to a float32 workspace, with the tile's max and sum of exp(logit - max).
Kernel 2, one program per (image, tile of BLOCK_T patch tokens): per head, the tile partials
merge into the row's max and sum, and each token's term softmax weight * <g, v_n> is summed over
the heads (and written per head when asked: same pass), then the ReLU. No N x N matrix.
Offsets are int64; grid dimensions are checked; the launch runs on the tensors' device.
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
    def _token_kernel(q_ptr, k_ptr, v_ptr, g_ptr, s_ptr, w_ptr, pm_ptr, pl_ptr,
                      q_sb, q_sh, k_sb, k_sh, k_sn, v_sb, v_sh, v_sn, g_sb, g_sh,
                      H, N, D, T, scale,
                      BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        bh = tl.program_id(0).to(tl.int64)
        t = tl.program_id(1).to(tl.int64)
        b = bh // H
        h = bh % H
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        q = tl.load(q_ptr + b * q_sb + h * q_sh + offs_d, mask=dmask, other=0.0).to(tl.float32) * scale
        g = tl.load(g_ptr + b * g_sb + h * g_sh + offs_d, mask=dmask, other=0.0).to(tl.float32)
        offs_n = t * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
        nmask = offs_n < N
        m2 = nmask[:, None] & dmask[None, :]
        kt = tl.load(k_ptr + b * k_sb + h * k_sh + offs_n[:, None] * k_sn + offs_d[None, :], mask=m2,
                     other=0.0).to(tl.float32)
        s = tl.sum(kt * q[None, :], axis=1)
        vt = tl.load(v_ptr + b * v_sb + h * v_sh + offs_n[:, None] * v_sn + offs_d[None, :], mask=m2,
                     other=0.0).to(tl.float32)
        w = tl.sum(vt * g[None, :], axis=1)
        tl.store(s_ptr + bh * N + offs_n, s, mask=nmask)
        tl.store(w_ptr + bh * N + offs_n, w, mask=nmask)
        s = tl.where(nmask, s, float("-inf"))
        m = tl.max(s, axis=0)
        tl.store(pm_ptr + bh * T + t, m)
        tl.store(pl_ptr + bh * T + t, tl.sum(tl.exp(s - m), axis=0))

    @triton.jit
    def _combine_kernel(s_ptr, w_ptr, pm_ptr, pl_ptr, out_ptr, heads_ptr, H, N, P, T,
                        BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, HEADS: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        t = tl.program_id(1).to(tl.int64)
        offs = P + t * BLOCK_T + tl.arange(0, BLOCK_T).to(tl.int64)
        mask = offs < N
        acc = tl.zeros((BLOCK_T,), tl.float32)
        for h in range(0, H):
            bh = b * H + h
            mx = tl.full((), float("-inf"), tl.float32)
            for p0 in range(0, T, BLOCK_P):                   # the row's max over the tile partials
                op = p0 + tl.arange(0, BLOCK_P)
                mx = tl.maximum(mx, tl.max(tl.load(pm_ptr + bh * T + op, mask=op < T, other=float("-inf")), axis=0))
            tot = tl.zeros((), tl.float32)
            for p0 in range(0, T, BLOCK_P):                   # and its sum of exp(logit - max)
                op = p0 + tl.arange(0, BLOCK_P)
                pm = tl.load(pm_ptr + bh * T + op, mask=op < T, other=float("-inf"))
                pl = tl.load(pl_ptr + bh * T + op, mask=op < T, other=0.0)
                tot += tl.sum(pl * tl.exp(pm - mx), axis=0)
            s = tl.load(s_ptr + bh * N + offs, mask=mask, other=0.0)
            w = tl.load(w_ptr + bh * N + offs, mask=mask, other=0.0)
            term = tl.exp(s - mx) / tot * w
            if HEADS:
                tl.store(heads_ptr + bh * (N - P) + (offs - P), term, mask=mask)
            acc += term
        tl.store(out_ptr + b * (N - P) + (offs - P), tl.maximum(acc, 0.0), mask=mask)


def block_sizes(N: int, D: int) -> Tuple[int, int]:
    """(BLOCK_N, BLOCK_D) of the token kernel (also what tests/test_gpu_compile.py compiles)."""
    BLOCK_D = max(16, triton.next_power_of_2(D))
    return max(16, min(64 if BLOCK_D <= 64 else 32, triton.next_power_of_2(N))), BLOCK_D


def workspace(B: int, H: int, N: int, D: int, device) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """float32 scratch: logits and <g, v_n> (B, H, N), tile max and sum (B, H, tiles)."""
    T = triton.cdiv(N, block_sizes(N, D)[0])
    return (torch.empty(B, H, N, dtype=torch.float32, device=device), torch.empty(B, H, N, dtype=torch.float32, device=device),
            torch.empty(B, H, T, dtype=torch.float32, device=device), torch.empty(B, H, T, dtype=torch.float32, device=device))


def launches(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int, ws: Tuple[Tensor, ...],
             out: Tensor, ht: Optional[Tensor]) -> List[tuple]:
    """The (kernel, grid, args, kwargs) this backend launches, in order (ws: :func:`workspace`)."""
    B, H, N, D = k.shape
    BLOCK_N, BLOCK_D = block_sizes(N, D)
    T = triton.cdiv(N, BLOCK_N)
    s, w, pm, pl = ws
    token = (_token_kernel, (B * H, grid_dim(T, "block_map token tiles")),
             (q_cls, k, v, g, s, w, pm, pl, q_cls.stride(0), q_cls.stride(1), k.stride(0), k.stride(1), k.stride(2),
              v.stride(0), v.stride(1), v.stride(2), g.stride(0), g.stride(1), H, N, D, T, float(scale)),
             dict(BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, num_warps=4))
    BLOCK_T = 128
    combine = (_combine_kernel, (B, grid_dim(triton.cdiv(N - prefix, BLOCK_T), "block_map patch-token tiles")),
               (s, w, pm, pl, out, ht if ht is not None else out, H, N, prefix, T),
               dict(BLOCK_T=BLOCK_T, BLOCK_P=max(16, min(128, triton.next_power_of_2(T))), HEADS=ht is not None))
    return [token, combine]


def block_map_triton(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int = 0,
                     heads: bool = False, wrap=None) -> Tuple[Tensor, Optional[Tensor]]:
    """(maps (B, N - P), head terms (B, H, N - P) or None), float32; k, v read in place through
    their strides (unit last stride); runs on k's device. ``wrap``: ``wrap_triton`` inside a triton_op."""
    ok, why = available(k.device)
    if not ok:
        raise RuntimeError(why)
    if k.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        q_cls, k, v, g = (t.float() for t in (q_cls, k, v, g))
    q_cls, k, v, g = (t if t.stride(-1) == 1 else t.contiguous() for t in (q_cls, k, v, g))
    B, H, N, D = k.shape
    ws = workspace(B, H, N, D, k.device)
    out = _alloc.empty((B, N - prefix), torch.float32, k.device)
    ht = _alloc.empty((B, H, N - prefix), torch.float32, k.device) if heads else None
    with device_guard(k):
        for kernel, grid, args, kwargs in launches(q_cls, k, v, g, scale, prefix, ws, out, ht):
            (wrap(kernel) if wrap is not None else kernel)[grid](*args, **kwargs)
    return out, ht
