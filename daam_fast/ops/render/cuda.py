"""Launch function of the CUDA kernels of ``render`` (csrc/cuda/render.cu)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..._ext import ext
from .._backends import cuda_available, cuda_device_and_stream
from ._prep import MODE_CODE, prepare


def available(device: Optional[torch.device] = None) -> tuple[bool, str]:
    return cuda_available("render_cuda", device)


def render_cuda(maps: Tensor, images: Optional[Tensor], mode: str, size: Tuple[int, int],
                alpha: float = 0.4, beta: float = 0.8, accumulate: bool = False) -> Tensor:
    """uint8 frames from CUDA tensors (see ``render_frames``); runs on the maps' device."""
    ok, why = available(maps.device)
    if not ok:
        raise RuntimeError(f"CUDA backend unavailable: {why}")
    maps, img, code, out = prepare(maps, images, size)
    B, L, h, w = maps.shape
    ws = torch.empty(B * L * 8, dtype=torch.float32, device=maps.device)
    device, stream = cuda_device_and_stream(maps)
    ext().render_cuda(maps.data_ptr(), img.data_ptr() if img is not None else 0, code, out.data_ptr(),
                      B, L, h, w, size[0], size[1], MODE_CODE[mode], bool(accumulate), float(alpha), float(beta),
                      ws.data_ptr(), device, stream)
    return out
