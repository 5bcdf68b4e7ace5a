"""What every op's Triton and CUDA backend modules share: the optional Triton import, the
availability checks (``available() -> (ok, why)``, see ``_dispatch``) and the dtype codes of
the CUDA launchers."""
from __future__ import annotations

import contextlib
import os
from typing import ContextManager, Dict, Optional, Tuple

import torch

from .._ext import ext, ext_error

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None
    tl = None

CUDA_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}   # the kernels' dtype codes


TRITON_MIN_CAPABILITY = (7, 0)   # Triton's NVIDIA backend (as torch.compile's check for Inductor)
_IMAGE_STATUS: Dict[int, Tuple[bool, str]] = {}   # device index -> whether daam_fast._C's kernels run there


def _cuda_index(device: Optional[torch.device]) -> int:
    if device is not None and device.index is not None:
        return device.index
    return torch.cuda.current_device()


def triton_available(device: Optional[torch.device] = None) -> tuple[bool, str]:
    """Triton is installed and can run on ``device`` (a CUDA device of compute capability 7.0 or
    newer; a CPU device under ``TRITON_INTERPRET=1``); without ``device``, on any of them."""
    if triton is None:
        return False, 'triton is not installed (pip install "daam-fast[triton]")'
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if device is not None and device.type == "cpu":
        return (True, "") if interpret else (False, "Triton runs CPU tensors only under TRITON_INTERPRET=1")
    if device is not None and device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA device"
        cap = torch.cuda.get_device_capability(_cuda_index(device))
        if tuple(cap) < TRITON_MIN_CAPABILITY:
            return False, (f"Triton needs compute capability >= {'.'.join(map(str, TRITON_MIN_CAPABILITY))}, "
                           f"this device has {cap[0]}.{cap[1]}")
        return True, ""
    if torch.cuda.is_available() or interpret:
        return True, ""
    return False, "Triton needs a CUDA device (or TRITON_INTERPRET=1 for the CPU interpreter)"


def cuda_image_status(index: int) -> Tuple[bool, str]:
    """Whether the CUDA kernels of daam_fast._C run on CUDA device ``index``, and if not, why.

    First the archs the extension was compiled for against the device's compute capability (a
    device older than every arch has neither a binary nor PTX to JIT), then the extension's own
    probe (``cuda_probe``: the image the runtime picks, and one empty launch), which also catches
    a driver older than the static CUDA runtime. Cached per device: once per process."""
    if index in _IMAGE_STATUS:
        return _IMAGE_STATUS[index]
    m = ext()
    major, minor = torch.cuda.get_device_capability(index)
    sm = 10 * major + minor
    archs = sorted({a // 10 for a in m.cuda_archs()})
    built = ", ".join(f"sm_{a}" for a in archs) or "no arch"
    where = f"{torch.cuda.get_device_name(index)} (cuda:{index}, sm_{sm}); daam_fast._C was built for {built}"
    if not any(a <= sm for a in archs):
        res = (False, f"no kernel image for {where}: rebuild with DAAM_FAST_CUDA_ARCHS={sm}")
    else:
        try:
            m.cuda_probe(index)
            res = (True, "")
        except RuntimeError as e:
            res = (False, f"the CUDA kernels cannot run on {where}: {e}. Rebuild with DAAM_FAST_CUDA_ARCHS={sm} "
                          "(no kernel image), or update the driver (error 35: driver older than the runtime)")
    _IMAGE_STATUS[index] = res
    return res


def cuda_available(symbol: Optional[str] = None, device: Optional[torch.device] = None) -> tuple[bool, str]:
    """The compiled extension has CUDA kernels (and ``symbol``, if given), a CUDA device exists, and
    the kernels run on ``device`` (default: the current CUDA device): :func:`cuda_image_status`."""
    m = ext()
    if m is None:
        return False, ext_error()
    if not m.has_cuda():
        return False, "daam_fast._C was built without CUDA (nvcc not found, or DAAM_FAST_SKIP_CUDA_BUILD=1)"
    for name in (symbol, "cuda_probe"):
        if name is not None and not hasattr(m, name):
            return False, f"daam_fast._C has no {name}: rebuild the extension"
    if device is not None and device.type != "cuda":
        return False, f"the CUDA kernels take CUDA tensors, got {device.type} tensors"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return cuda_image_status(_cuda_index(device))


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
