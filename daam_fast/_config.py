"""Every environment variable daam_fast reads, in one place (table in README.md).

| variable | values | effect |
|---|---|---|
| DAAM_FAST_BACKEND | auto (default), torch, cpp, triton, cuda | force the backend of the fused ops; an explicit backend that is unavailable raises |
| DAAM_FAST_NO_EXT | 0 (default), 1 | do not import the compiled extension `daam_fast._C` (pure PyTorch) |
| DAAM_FAST_SKIP_CUDA_BUILD | 0 (default), 1 | build time: do not compile the CUDA sources even if nvcc is found |
| DAAM_FAST_SKIP_EXT_BUILD | 0 (default), 1 | build time: build no extension at all (pure-PyTorch install) |
| DAAM_FAST_CUDA_ARCHS | 80;90 (default) | build time: CMAKE_CUDA_ARCHITECTURES of the CUDA kernels |
| TRITON_INTERPRET | 0 (default), 1 | Triton's own switch: run Triton kernels on the CPU interpreter (tests) |
"""
from __future__ import annotations

import os

BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def backend() -> str:
    """The backend requested by ``DAAM_FAST_BACKEND`` (read at call time)."""
    value = os.environ.get("DAAM_FAST_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"DAAM_FAST_BACKEND={value!r}: expected one of {', '.join(BACKENDS)}")
    return value


def no_ext() -> bool:
    return _flag("DAAM_FAST_NO_EXT")


def triton_interpret() -> bool:
    return _flag("TRITON_INTERPRET")
