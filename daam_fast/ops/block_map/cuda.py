"""Launch function of the CUDA kernels of ``block_map`` (csrc/cuda/block_map.cu)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..._ext import ext
from .. import _alloc
from .._backends import CUDA_DTYPES as _DTYPES
from .._backends import cuda_available, cuda_device_and_stream


def available(device: Optional[torch.device] = None) -> tuple[bool, str]:
    return cuda_available("block_map_cuda_workspace", device)


def block_map_cuda(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int = 0,
                   heads: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """(maps (B, N - P), head terms (B, H, N - P) or None), float32, on CUDA tensors
    (float32 / float16 / bfloat16 inputs; others computed in float32); runs on k's device."""
    ok, why = available(k.device)
    if not ok:
        raise RuntimeError(f"CUDA backend unavailable: {why}")
    m = ext()
    dt = k.dtype if k.dtype in _DTYPES else torch.float32
    q_cls, k, v, g = (t.to(dt) if t.stride(-1) == 1 else t.to(dt).contiguous() for t in (q_cls, k, v, g))
    B, H, N, D = k.shape
    out = _alloc.empty((B, N - prefix), torch.float32, k.device)
    ht = _alloc.empty((B, H, N - prefix), torch.float32, k.device) if heads else None
    ws_numel = m.block_map_cuda_workspace(B, H, N)
    ws = torch.empty(ws_numel, dtype=torch.float32, device=k.device)
    device, stream = cuda_device_and_stream(k)
    m.block_map_cuda(q_cls.data_ptr(), q_cls.stride(0), q_cls.stride(1),
                     k.data_ptr(), k.stride(0), k.stride(1), k.stride(2),
                     v.data_ptr(), v.stride(0), v.stride(1), v.stride(2),
                     g.data_ptr(), g.stride(0), g.stride(1),
                     out.data_ptr(), ht.data_ptr() if ht is not None else 0,
                     B, H, N, D, prefix, float(scale), _DTYPES[dt], ws.data_ptr(), ws_numel, device, stream)
    return out, ht
