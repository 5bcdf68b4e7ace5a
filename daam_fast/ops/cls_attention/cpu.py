"""CPU implementation of ``cls_attention``: PyTorch's SDPA (already a fused C++ kernel that
never builds the N x N matrix) plus the O(N d) [class] row. A hand-written C++ flash kernel
would replace SDPA's own, which is not the point of the op on the CPU (issue 3: "on the CPU,
SDPA plus the O(N d) row is fine"), so the ``cpp`` backend is this function; it is available
whenever the extension is built, like every ``cpp`` backend, so ``DAAM_FAST_BACKEND=cpp``
works for all ops."""
from __future__ import annotations

from typing import Tuple

from torch import Tensor

from ..._ext import ext, ext_error
from .reference import cls_attention_reference


def available() -> tuple[bool, str]:
    return (True, "") if ext() is not None else (False, ext_error())


def cls_attention_cpp(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
    """out (B, H, M, d), a_cls (B, H, N) float32 on CPU tensors (SDPA + row)."""
    if any(t.device.type != "cpu" for t in (q, k, v)):
        raise ValueError("cls_attention_cpp takes CPU tensors")
    return cls_attention_reference(q, k, v, scale)
