"""``block_map``: the fused per-block DAAM map (softmax row capture + [class]-token
decomposition + weighted channel combination), dispatched to C++ / CUDA / Triton / PyTorch,
as the PyTorch op ``daam_fast::block_map`` (see ``daam_fast/ops/_library.py``).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .. import _dispatch, _library
from .reference import block_map_reference

__all__ = ["block_map", "block_map_reference"]


def _check(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, prefix: int) -> None:
    if k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"block_map: k and v must both be (B, H, N, d), got {tuple(k.shape)} and {tuple(v.shape)}")
    B, H, N, d = k.shape
    if tuple(q_cls.shape) != (B, H, d) or tuple(g.shape) != (B, H, d):
        raise ValueError(f"block_map: q_cls and g must be (B, H, d) = {(B, H, d)}, got "
                         f"{tuple(q_cls.shape)} and {tuple(g.shape)}")
    if not 0 <= prefix < N:
        raise ValueError(f"block_map: prefix={prefix} must be in [0, N={N})")
    if B == 0 or H == 0 or d == 0:
        raise ValueError(f"block_map: empty input {tuple(k.shape)}")
    devs = {t.device for t in (q_cls, k, v, g)}
    if len(devs) != 1:
        raise ValueError(f"block_map: all inputs must be on one device, got {devs}")


def _torch_impl(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int,
                heads: bool) -> Tuple[Tensor, Optional[Tensor]]:
    if heads:
        maps, terms = block_map_reference(q_cls, k, v, g, scale, prefix, heads=True)
        return maps, terms.contiguous()
    return block_map_reference(q_cls, k, v, g, scale, prefix), None


def run_backend(name: str, q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int,
                heads: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """(maps, head terms or None) from the named backend (no argument checks)."""
    fn = _dispatch.get_impl("block_map", name, "block_map_" + name, _torch_impl)
    return fn(q_cls, k, v, g, scale, prefix, heads)


def _out_dtype(q_cls: Tensor, backend: str) -> torch.dtype:
    return torch.float64 if q_cls.dtype == torch.float64 and backend in ("torch", "cpp") else torch.float32


if _library.HAS_CUSTOM_OP:
    @torch.library.custom_op("daam_fast::block_map", mutates_args=())
    def _op(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int, backend: str,
            heads: bool) -> Tuple[Tensor, Tensor]:
        maps, ht = run_backend(backend, q_cls, k, v, g, scale, prefix, heads)
        return maps, (ht if ht is not None else maps.new_empty((0,)))

    @_op.register_fake
    def _(q_cls, k, v, g, scale, prefix, backend, heads):
        B, H, N, _d = k.shape
        dt = _out_dtype(q_cls, backend)
        maps = k.new_empty((B, N - prefix), dtype=dt)
        return maps, (k.new_empty((B, H, N - prefix), dtype=dt) if heads else k.new_empty((0,), dtype=dt))
else:  # pragma: no cover - torch < 2.4
    def _op(q_cls, k, v, g, scale, prefix, backend, heads):
        maps, ht = run_backend(backend, q_cls, k, v, g, scale, prefix, heads)
        return maps, (ht if ht is not None else maps.new_empty((0,)))


if _library.HAS_TRITON_OP:
    @torch.library.triton_op("daam_fast::block_map_triton", mutates_args=())
    def _triton_op(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int,
                   heads: bool) -> Tuple[Tensor, Tensor]:
        from .triton import block_map_triton
        maps, ht = block_map_triton(q_cls, k, v, g, scale, prefix, heads, wrap=_library.wrap)
        return maps, (ht if ht is not None else maps.new_empty((0,)))


def block_map(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int = 0,
              backend: Optional[str] = None, heads: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Per-block map ``ReLU(sum_h softmax(scale q_cls.k)[n] <g_h, v_n>)`` for patch tokens
    (docs/method.md §1, §3). The PyTorch op ``torch.ops.daam_fast.block_map``.

    Args:
        q_cls: (B, H, d) [class] query.  k, v: (B, H, N, d), any strides (views of the
            qkv output are read in place).  g: (B, H, d) coefficients.
        scale: softmax scale.  prefix: P, prefix tokens dropped from the output.
        backend: None (``DAAM_FAST_BACKEND``, else auto: chosen by device and sizes, see
            ``daam_fast/ops/_dispatch.py``), "torch", "cpp", "triton", "cuda"; an explicit backend
            that is unavailable raises RuntimeError, one whose kernel cannot take the sizes
            ValueError naming the limit (the CUDA kernel: head dim <= 128).
        heads: also return each head's term ``a^h[n] <g^h, v^h[n]>`` before the ReLU, formed
            in the same pass by every backend.

    Returns:
        (B, N - P) float32 map on the inputs' device (float64 for float64 inputs on the torch
        and cpp backends); with ``heads``, ``(maps, head_terms (B, H, N - P))`` of the same
        dtype, where ``relu(head_terms.sum(1)) == maps`` (to the float32 rounding of the sum).

    Example:
        >>> m = block_map(q[:, :, 0], k, v, g.view(B, H, d), d ** -0.5, prefix=1)
        >>> m, per_head = block_map(q[:, :, 0], k, v, g.view(B, H, d), d ** -0.5, prefix=1, heads=True)
    """
    _check(q_cls, k, v, g, prefix)
    B, H, N, d = (int(x) for x in k.shape)
    name = _library.resolve("block_map", str(k.device), backend, (B, H, N, d, int(prefix)))
    if _library.use_triton_op(name, k):
        maps, ht = torch.ops.daam_fast.block_map_triton(q_cls, k, v, g, float(scale), int(prefix), bool(heads))
    else:
        maps, ht = _op(q_cls, k, v, g, float(scale), int(prefix), name, bool(heads))
    return (maps, ht) if heads else maps
