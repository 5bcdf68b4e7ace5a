"""Launch function of the C++ CPU kernel of ``block_map`` (csrc/cpu/block_map.cpp)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..._ext import ext, ext_error
from .. import _alloc

_DTYPES = {torch.float32: 0, torch.float64: 1}


def available(device: Optional[torch.device] = None) -> tuple[bool, str]:
    if device is not None and device.type != "cpu":
        return False, f"the C++ kernels take CPU tensors, got {device.type} tensors"
    return (True, "") if ext() is not None else (False, ext_error())


def _unit_last(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def block_map_cpp(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int = 0,
                  heads: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """(maps (B, N - P), head terms (B, H, N - P) or None) on CPU tensors; float32 / float64
    (others are computed in float32). k and v are read in place through their strides."""
    m = ext()
    if m is None:
        raise RuntimeError(f"C++ extension unavailable: {ext_error()}")
    if any(t.device.type != "cpu" for t in (q_cls, k, v, g)):
        raise ValueError("block_map_cpp takes CPU tensors")
    dt = q_cls.dtype if q_cls.dtype in _DTYPES else torch.float32
    q_cls, k, v, g = (_unit_last(t.to(dt)) for t in (q_cls, k, v, g))
    B, H, N, D = k.shape
    out = _alloc.empty((B, N - prefix), dt, k.device)
    ht = _alloc.empty((B, H, N - prefix), dt, k.device) if heads else None
    m.block_map_cpu(q_cls.data_ptr(), q_cls.stride(0), q_cls.stride(1),
                    k.data_ptr(), k.stride(0), k.stride(1), k.stride(2),
                    v.data_ptr(), v.stride(0), v.stride(1), v.stride(2),
                    g.data_ptr(), g.stride(0), g.stride(1),
                    out.data_ptr(), ht.data_ptr() if ht is not None else 0,
                    B, H, N, D, prefix, float(scale), _DTYPES[dt])
    return out, ht
