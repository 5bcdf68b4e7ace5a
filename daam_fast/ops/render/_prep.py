"""Argument preparation shared by the kernel backends of ``render`` (C++, CUDA, Triton)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _alloc

MODE_CODE = {"nonlinear": 0, "linear": 1, "raw": 2}


def prepare(maps: Tensor, images: Optional[Tensor], size: Tuple[int, int]):
    """float32 contiguous maps; images as (tensor, dtype code 1 uint8 / 2 float32) or (None, 0);
    an empty uint8 output of the right shape."""
    maps = maps.detach().to(torch.float32).contiguous()
    B, L = maps.shape[:2]
    H, W = size
    if images is None:
        img, code = None, 0
        out = _alloc.empty((B, L, H, W), torch.uint8, maps.device)
    else:
        img = images.detach().to(maps.device)
        if img.dtype == torch.uint8:
            code = 1
        else:
            img, code = img.to(torch.float32), 2
        img = img.contiguous()
        out = _alloc.empty((B, L, H, W, 3), torch.uint8, maps.device)
    return maps, img, code, out
