"""Triton kernel of ``render`` (GPU; on the CPU under ``TRITON_INTERPRET=1`` for tests).

One program per (tile of BLOCK output pixels, frame). Each program reads its frame and the
image's final frame at map resolution in chunks of BLOCK_HW values, any map size (the cumulative
sum over blocks formed on the fly), reduces the statistics of docs/method.md §5 itself (redundant across
the tiles of a frame, but only h * w values: no second launch, no workspace), then per pixel
gathers the four source values, turns them into uint8 levels, resizes bilinearly (torch's
align_corners=False indices), rounds half to even, colours with JET and blends with the
picture. Faithful to torch's float32 results: launched with ``enable_fp_fusion=False`` (no FMA
contraction), divisions are IEEE ``div_rn`` (Triton's ``/`` compiles to the approximate
``div.full.f32``) and exp is libdevice's ``expf`` (as torch's CUDA sigmoid), not ``ex2.approx``.
Sizes are not specialised (``do_not_specialize``: a size of 1 would become a constant), offsets
are int64, and the grid's frame axis is checked against 65535.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from torch import Tensor

from .._backends import device_guard, grid_dim
from ._prep import MODE_CODE, prepare

from .._backends import tl, triton  # noqa: F401  (triton is None when not installed)
from .._backends import triton_available as available  # noqa: F401

STAT_CHUNK = 256   # map values per step of the per-frame statistics (any map size)


if triton is not None:
    from triton.language.extra import libdevice

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        @triton.jit
        def _exp(x):                                # the interpreter's exp is NumPy's (libdevice: None)
            return tl.exp(x)
    else:
        @triton.jit
        def _exp(x):                                # libdevice expf, as torch's CUDA sigmoid
            return libdevice.exp(x)

    @triton.jit
    def _frame(maps_ptr, base, l, hw, offs, mask, ACC: tl.constexpr):
        if ACC:
            s = tl.zeros_like(offs).to(tl.float32)
            for i in range(0, l + 1):
                s += tl.load(maps_ptr + base + i * hw + offs, mask=mask, other=0.0)
        else:
            s = tl.load(maps_ptr + base + l * hw + offs, mask=mask, other=0.0)
        ok = (s == s) & (s != float("inf")) & (s != float("-inf"))      # nan_to_num
        return tl.where(ok, s, 0.0)

    @triton.jit
    def _safe_div(num, den):
        ok = den > 0
        return tl.where(ok, tl.math.div_rn(num, tl.where(ok, den, 1.0)), 0.0)

    @triton.jit
    def _sig_y(d, G):
        x = 5.0 * _safe_div(d, G)
        return tl.where(G > 0, tl.math.div_rn(1.0, 1.0 + _exp(-x)) - 0.5, 0.0)

    @triton.jit
    def _level(d, gmin, gmax, fmin, fmax, ymin, ymax, MODE: tl.constexpr):
        if MODE == 2:
            z = _safe_div(d - fmin, fmax - fmin)
        elif MODE == 0:
            z = _safe_div(_sig_y(d, gmax) - ymin, ymax - ymin)
        else:
            z0 = tl.maximum(tl.math.div_rn(d - gmin, (fmax - gmin) + 1e-10), 0.0)
            z = z0 * _safe_div(fmax - fmin, gmax - gmin)
        z = tl.minimum(tl.maximum(z, 0.0), 1.0)
        return tl.floor(z * 255.0)

    @triton.jit
    def _rint(x):                                   # round half to even (torch.round)
        f = tl.floor(x)
        d = x - f
        odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
        return tl.where(d > 0.5, f + 1.0, tl.where(d < 0.5, f, tl.where(odd, f + 1.0, f)))

    @triton.jit
    def _src(dst, n_in, n_out):                     # torch's source index, align_corners=False
        ratio = tl.math.div_rn(n_in.to(tl.float32), n_out.to(tl.float32))
        r = tl.maximum(ratio * (dst.to(tl.float32) + 0.5) - 0.5, 0.0)
        i0 = tl.minimum(tl.floor(r).to(tl.int32), n_in - 1)
        l1 = tl.minimum(tl.maximum(r - i0.to(tl.float32), 0.0), 1.0)
        i1 = i0 + tl.where(i0 < n_in - 1, 1, 0)
        return i0, i1, 1.0 - l1, l1

    @triton.jit
    def _jet255(heat, centre):
        t = tl.minimum(tl.maximum(tl.math.div_rn(heat, 255.0), 0.0), 1.0)
        c = 1.5 - tl.abs(4.0 * t - centre)
        return tl.minimum(tl.maximum(c, 0.0), 1.0) * 255.0

    @triton.jit(do_not_specialize=["L", "h", "w", "H", "W"])
    def _render_kernel(maps_ptr, img_ptr, out_ptr, L, h, w, H, W, alpha, beta,
                       MODE: tl.constexpr, ACC: tl.constexpr, IMG: tl.constexpr, RESIZE: tl.constexpr,
                       BLOCK: tl.constexpr, BLOCK_HW: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        f = tl.program_id(1).to(tl.int64)
        b = f // L
        l = f % L
        hw = h.to(tl.int64) * w
        base = b * L * hw
        # statistics of the final frame, then of frame l, in chunks of BLOCK_HW map values
        gmin = tl.full((), float("inf"), tl.float32)
        gmax = tl.full((), float("-inf"), tl.float32)
        for start in range(0, hw, BLOCK_HW):
            offs_hw = start + tl.arange(0, BLOCK_HW).to(tl.int64)
            mhw = offs_hw < hw
            dl = _frame(maps_ptr, base, L - 1, hw, offs_hw, mhw, ACC)
            gmin = tl.minimum(gmin, tl.min(tl.where(mhw, dl, float("inf")), axis=0))
            gmax = tl.maximum(gmax, tl.max(tl.where(mhw, dl, float("-inf")), axis=0))
        fmin = tl.full((), float("inf"), tl.float32)
        fmax = tl.full((), float("-inf"), tl.float32)
        ymin = tl.full((), float("inf"), tl.float32)
        ymax = tl.full((), float("-inf"), tl.float32)
        for start in range(0, hw, BLOCK_HW):
            offs_hw = start + tl.arange(0, BLOCK_HW).to(tl.int64)
            mhw = offs_hw < hw
            d = _frame(maps_ptr, base, l, hw, offs_hw, mhw, ACC)
            fmin = tl.minimum(fmin, tl.min(tl.where(mhw, d, float("inf")), axis=0))
            fmax = tl.maximum(fmax, tl.max(tl.where(mhw, d, float("-inf")), axis=0))
            if MODE == 0:
                y = _sig_y(d, gmax)
                ymin = tl.minimum(ymin, tl.min(tl.where(mhw, y, float("inf")), axis=0))
                ymax = tl.maximum(ymax, tl.max(tl.where(mhw, y, float("-inf")), axis=0))

        HW = H.to(tl.int64) * W
        offs = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        mask = offs < HW
        if RESIZE:
            yy = offs // W
            xx = offs % W
            y0, y1, h0, h1 = _src(yy, h, H)
            x0, x1, w0, w1 = _src(xx, w, W)
            v00 = _level(_frame(maps_ptr, base, l, hw, y0 * w + x0, mask, ACC), gmin, gmax, fmin, fmax, ymin, ymax, MODE)
            v01 = _level(_frame(maps_ptr, base, l, hw, y0 * w + x1, mask, ACC), gmin, gmax, fmin, fmax, ymin, ymax, MODE)
            v10 = _level(_frame(maps_ptr, base, l, hw, y1 * w + x0, mask, ACC), gmin, gmax, fmin, fmax, ymin, ymax, MODE)
            v11 = _level(_frame(maps_ptr, base, l, hw, y1 * w + x1, mask, ACC), gmin, gmax, fmin, fmax, ymin, ymax, MODE)
            t0 = v00 * w0 + v01 * w1
            t1 = v10 * w0 + v11 * w1
            heat = tl.minimum(tl.maximum(_rint(t0 * h0 + t1 * h1), 0.0), 255.0)
        else:
            heat = _level(_frame(maps_ptr, base, l, hw, offs, mask, ACC), gmin, gmax, fmin, fmax, ymin, ymax, MODE)
        o = f * HW + offs
        if IMG == 0:
            tl.store(out_ptr + o, heat.to(tl.uint8), mask=mask)
        else:
            for c in tl.static_range(3):
                ip = (b * 3 + c) * HW + offs
                if IMG == 1:
                    im = tl.load(img_ptr + ip, mask=mask, other=0).to(tl.float32)
                else:
                    im = tl.load(img_ptr + ip, mask=mask, other=0.0) * 255.0
                v = alpha * _jet255(heat, 3.0 - c) + beta * im
                v = tl.minimum(tl.maximum(_rint(v), 0.0), 255.0)
                tl.store(out_ptr + o * 3 + c, v.to(tl.uint8), mask=mask)


def launches(maps: Tensor, img: Optional[Tensor], mode: str, size: Tuple[int, int], alpha: float, beta: float,
             accumulate: bool, out: Optional[Tensor] = None, code: Optional[int] = None) -> List[tuple]:
    """The (kernel, grid, args, kwargs) this backend launches for prepared float32 maps."""
    B, L, h, w = maps.shape
    H, W = size
    if code is None:
        code = 0 if img is None else (1 if img.dtype.is_floating_point is False else 2)
    if out is None:
        out = maps.new_empty((0,), dtype=maps.dtype)
    BLOCK = 256
    grid = (triton.cdiv(H * W, BLOCK), grid_dim(B * L, "render frames (batch x blocks)"))
    args = (maps, img if img is not None else maps, out, L, h, w, H, W, float(alpha), float(beta))
    kwargs = dict(MODE=MODE_CODE[mode], ACC=bool(accumulate), IMG=code, RESIZE=(H, W) != (h, w),
                  BLOCK=BLOCK, BLOCK_HW=STAT_CHUNK, enable_fp_fusion=False, num_warps=4)
    return [(_render_kernel, grid, args, kwargs)]


def render_triton(maps: Tensor, images: Optional[Tensor], mode: str, size: Tuple[int, int],
                  alpha: float = 0.4, beta: float = 0.8, accumulate: bool = False, wrap=None) -> Tensor:
    """uint8 frames (see ``render_frames``); runs on the maps' device. ``wrap``: ``wrap_triton``
    inside a triton_op."""
    ok, why = available(maps.device)
    if not ok:
        raise RuntimeError(why)
    maps, img, code, out = prepare(maps, images, size)
    B, L, h, w = maps.shape
    with device_guard(maps):
        for kernel, grid, args, kwargs in launches(maps, img, mode, size, alpha, beta, accumulate, out, code):
            (wrap(kernel) if wrap is not None else kernel)[grid](*args, **kwargs)
    return out
