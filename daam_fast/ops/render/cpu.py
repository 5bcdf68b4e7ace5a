"""Launch function of the C++ CPU kernel of ``render`` (csrc/cpu/render.cpp)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..._ext import ext, ext_error
from ._prep import MODE_CODE, prepare


def available(device: Optional[torch.device] = None) -> tuple[bool, str]:
    if device is not None and device.type != "cpu":
        return False, f"the C++ kernels take CPU tensors, got {device.type} tensors"
    m = ext()
    if m is None:
        return False, ext_error()
    if not hasattr(m, "render_cpu"):
        return False, "daam_fast._C predates the render kernel: rebuild the extension"
    return True, ""


def render_cpp(maps: Tensor, images: Optional[Tensor], mode: str, size: Tuple[int, int],
               alpha: float = 0.4, beta: float = 0.8, accumulate: bool = False) -> Tensor:
    """uint8 (B, L, H, W) or (B, L, H, W, 3) frames from CPU tensors (see ``render_frames``)."""
    m = ext()
    if m is None:
        raise RuntimeError(f"C++ extension unavailable: {ext_error()}")
    if maps.device.type != "cpu":
        raise ValueError("render_cpp takes CPU tensors")
    maps, img, code, out = prepare(maps, images, size)
    B, L, h, w = maps.shape
    m.render_cpu(maps.data_ptr(), img.data_ptr() if img is not None else 0, code, out.data_ptr(),
                 B, L, h, w, size[0], size[1], MODE_CODE[mode], bool(accumulate), float(alpha), float(beta))
    return out
