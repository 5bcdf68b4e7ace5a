"""Launch function of the CUDA kernel of ``cls_attention`` (csrc/cuda/cls_attention.cu)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..._ext import ext
from .. import _alloc
from .._backends import CUDA_DTYPES as _DTYPES
from .._backends import cuda_available
from .._backends import cuda_device_and_stream


def available(device: Optional[torch.device] = None) -> tuple[bool, str]:
    return cuda_available("cls_attention_cuda", device)


def launch(m, q: Tensor, k: Tensor, v: Tensor, out: Tensor, a_cls: Tensor, scale: float, device: int,
           stream: int) -> None:
    """Raw launch on ``device`` (set and restored by the extension): q, k, v with unit last stride,
    out (B, H, M, d) and a_cls (B, H, N) float32 contiguous. Raises RuntimeError with the CUDA error."""
    B, H, M, D = q.shape
    N = k.shape[2]
    m.cls_attention_cuda(q.data_ptr(), q.stride(0), q.stride(1), q.stride(2),
                         k.data_ptr(), k.stride(0), k.stride(1), k.stride(2),
                         v.data_ptr(), v.stride(0), v.stride(1), v.stride(2),
                         out.data_ptr(), a_cls.data_ptr(), B, H, M, N, D, float(scale), _DTYPES[q.dtype], device, stream)


def cls_attention_cuda(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
    """out (B, H, M, d) in q's dtype (float32 / float16 / bfloat16), a_cls (B, H, N) float32; on q's device."""
    ok, why = available(q.device)
    if not ok:
        raise RuntimeError(f"CUDA backend unavailable: {why}")
    dt = q.dtype if q.dtype in _DTYPES else torch.float32
    q, k, v = (t.to(dt) if t.stride(-1) == 1 else t.to(dt).contiguous() for t in (q, k, v))
    B, H, M, D = q.shape
    out = _alloc.empty((B, H, M, D), dt, q.device)
    a_cls = _alloc.empty((B, H, k.shape[2]), torch.float32, q.device)
    launch(ext(), q, k, v, out, a_cls, scale, *cuda_device_and_stream(q))
    return out, a_cls
