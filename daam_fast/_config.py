"""Every environment variable daam_fast reads, in one place (table in README.md).

The backend of the fused ops is chosen in one place, ``daam_fast/ops/_dispatch.py``: per call by
``DAAM(model, backend=...)``, else for the whole process by ``DAAM_FAST_BACKEND``, else auto
(by the tensors' device and sizes: the CUDA kernels where built for this GPU and within their
limits, else Triton, else PyTorch; on CPU tensors C++, else PyTorch). ``render`` and the ops
called outside a DAAM call follow ``DAAM_FAST_BACKEND`` / auto.

| variable | values | effect |
|---|---|---|
| DAAM_FAST_BACKEND | auto (default), torch, cpp, triton, cuda | process default backend of the fused ops (``DAAM(backend=...)`` overrides it per call); an explicit backend that is unavailable raises RuntimeError, one whose kernel cannot take the sizes raises ValueError naming the limit |
| DAAM_FAST_NO_EXT | 0 (default), 1 | do not import the compiled extension `daam_fast._C` (pure PyTorch) |
| DAAM_FAST_SKIP_CUDA_BUILD | 0 (default), 1 | build time: do not compile the CUDA sources even if nvcc is found |
| DAAM_FAST_SKIP_EXT_BUILD | 0 (default), 1 | build time: build no extension at all (pure-PyTorch install) |
| DAAM_FAST_CUDA_ARCHS | 80;90 (default) | build time: CMAKE_CUDA_ARCHITECTURES of the CUDA kernels; on a GPU of another compute capability auto takes Triton (rebuild with its arch, e.g. 75 or 120) |
| TRITON_INTERPRET | 0 (default), 1 | Triton's own switch: run Triton kernels on the CPU interpreter (tests) |
"""
from __future__ import annotations

import os

BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def backend() -> str:
    """The process default backend, ``DAAM_FAST_BACKEND`` (read at call time; "auto" if unset)."""
    value = os.environ.get("DAAM_FAST_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"DAAM_FAST_BACKEND={value!r}: expected one of {', '.join(BACKENDS)}")
    return value


def no_ext() -> bool:
    return _flag("DAAM_FAST_NO_EXT")


def triton_interpret() -> bool:
    return _flag("TRITON_INTERPRET")
