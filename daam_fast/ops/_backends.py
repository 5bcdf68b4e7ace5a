"""What every op's Triton and CUDA backend modules share: the optional Triton import, the
availability checks (``available() -> (ok, why)``, see ``_dispatch``) and the dtype codes of
the CUDA launchers."""
from __future__ import annotations

import contextlib
import os
from typing import ContextManager, Optional, Tuple

import torch

from .._ext import ext, ext_error

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None
    tl = None

CUDA_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}   # the kernels' dtype codes


def triton_available() -> tuple[bool, str]:
    if triton is None:
        return False, "triton is not installed (pip install triton)"
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return True, ""
    return False, "Triton needs a CUDA device (or TRITON_INTERPRET=1 for the CPU interpreter)"


def cuda_available(symbol: Optional[str] = None) -> tuple[bool, str]:
    """The compiled extension has CUDA kernels (and ``symbol``, if given) and a device exists."""
    m = ext()
    if m is None:
        return False, ext_error()
    if not m.has_cuda():
        return False, "daam_fast._C was built without CUDA (nvcc not found, or DAAM_FAST_SKIP_CUDA_BUILD=1)"
    if symbol is not None and not hasattr(m, symbol):
        return False, f"daam_fast._C has no {symbol}: rebuild the extension"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, ""


def cuda_device_and_stream(t: torch.Tensor) -> Tuple[int, int]:
    """(device index, cudaStream_t as an integer) of a CUDA tensor: what every CUDA entry point of
    daam_fast._C takes, so the launch runs on the tensor's device (set and restored in C++), on
    that device's current stream, whatever device is current."""
    dev = t.device
    if dev.type != "cuda":
        raise ValueError(f"expected a CUDA tensor, got one on {dev}")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return index, torch.cuda.current_stream(index).cuda_stream


def device_guard(t: torch.Tensor) -> ContextManager:
    """Context for a Triton launch: ``torch.cuda.device(t.device)`` for a CUDA tensor (Triton
    launches on the current device), nothing for a CPU tensor (the interpreter)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def grid_dim(n: int, what: str, limit: int = 65535) -> int:
    """A grid's second / third dimension, checked against CUDA's limit (65535)."""
    if n > limit:
        raise ValueError(f"{what} = {n} exceeds the CUDA grid limit ({limit}): split the batch")
    return n
