"""Launch function of the CUDA kernels of ``block_map`` (csrc/cuda/block_map.cu)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..._ext import ext

from .._backends import CUDA_DTYPES as _DTYPES
from .._backends import cuda_available as available  # noqa: F401




def _launch(m, q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, out: Tensor, ws: Tensor, scale: float,
            prefix: int, stream: int) -> None:
    B, H, N, D = k.shape
    m.block_map_cuda(q_cls.data_ptr(), q_cls.stride(0), q_cls.stride(1),
                     k.data_ptr(), k.stride(0), k.stride(1), k.stride(2),
                     v.data_ptr(), v.stride(0), v.stride(1), v.stride(2),
                     g.data_ptr(), g.stride(0), g.stride(1),
                     out.data_ptr(), B, H, N, D, prefix, float(scale), _DTYPES[k.dtype], ws.data_ptr(), stream)


def block_map_cuda(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int = 0) -> Tensor:
    """(B, N - P) float32 map on CUDA tensors (float32 / float16 / bfloat16 inputs)."""
    ok, why = available()
    if not ok:
        raise RuntimeError(f"CUDA backend unavailable: {why}")
    dt = k.dtype if k.dtype in _DTYPES else torch.float32
    q_cls, k, v, g = (t.to(dt) if t.stride(-1) == 1 else t.to(dt).contiguous() for t in (q_cls, k, v, g))
    B, H, N, D = k.shape
    out = torch.empty(B, N - prefix, dtype=torch.float32, device=k.device)
    ws = torch.empty(B, H, N, dtype=torch.float32, device=k.device)
    _launch(ext(), q_cls, k, v, g, out, ws, scale, prefix, torch.cuda.current_stream(k.device).cuda_stream)
    return out
