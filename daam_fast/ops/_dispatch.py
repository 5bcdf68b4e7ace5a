"""Backend choice shared by every fused op.

Each op folder ``daam_fast/ops/<op>/`` has ``reference.py`` (pure PyTorch, the oracle)
and one module per fast backend (``cpu.py`` for the C++ extension, ``cuda.py`` for the
CUDA extension, ``triton.py``). Each backend module exposes ``available() -> (bool, str)``
(the string says why not) and the op's function. This module picks one:

* explicit ``backend=`` argument, else ``DAAM_FAST_BACKEND``, else ``auto``;
* auto on a CUDA tensor: cuda -> triton -> torch; on a CPU tensor: cpp -> torch;
* an explicitly requested backend that is unavailable raises ``RuntimeError`` with the reason.

An op without a kernel for a backend says so (``_MISSING``): cls_attention has no C++ kernel,
since on the CPU PyTorch's SDPA already is a fused C++ kernel; its CPU path is "torch".
"""
from __future__ import annotations

import importlib
from typing import Callable, Optional

import torch

from .. import _config

_AUTO_ORDER = {"cuda": ("cuda", "triton", "torch"), "cpu": ("cpp", "torch")}
_MODULE_OF = {"cpp": "cpu", "cuda": "cuda", "triton": "triton"}
_MISSING = {
    ("cls_attention", "cpp"): "cls_attention has no C++ kernel: on the CPU it runs PyTorch's SDPA (a fused "
                              "C++ kernel) plus the O(N d) [class] row, which is backend 'torch'",
}


def backend_status(op: str, backend: str) -> tuple[bool, str]:
    """Whether ``backend`` can run ``op`` here, and if not, why."""
    if backend == "torch":
        return True, ""
    if (op, backend) in _MISSING:
        return False, _MISSING[(op, backend)]
    modname = _MODULE_OF.get(backend)
    if modname is None:
        return False, f"unknown backend {backend!r}"
    try:
        mod = importlib.import_module(f"daam_fast.ops.{op}.{modname}")
    except ImportError as e:  # the backend module itself or its dependency is missing
        return False, f"{backend} backend of {op} cannot be imported: {e}"
    return mod.available()


def resolve(op: str, device: torch.device, backend: Optional[str] = None) -> str:
    """The backend name that will run ``op`` for tensors on ``device``."""
    requested = (backend or _config.backend()).lower()
    if requested not in _config.BACKENDS:
        raise ValueError(f"backend {requested!r}: expected one of {', '.join(_config.BACKENDS)}")
    if requested != "auto":
        ok, why = backend_status(op, requested)
        if not ok:
            raise RuntimeError(f"backend {requested!r} requested for {op} but unavailable: {why}")
        if requested == "cpp" and device.type != "cpu":
            raise RuntimeError(f"backend 'cpp' runs on CPU tensors only, got {device}")
        if requested == "cuda" and device.type != "cuda":
            raise RuntimeError(f"backend 'cuda' runs on CUDA tensors only, got {device}")
        return requested
    for name in _AUTO_ORDER.get(device.type, ("torch",)):
        if backend_status(op, name)[0]:
            return name
    return "torch"


def get_impl(op: str, name: str, fn_name: str, reference: Callable) -> Callable:
    if name == "torch":
        return reference
    mod = importlib.import_module(f"daam_fast.ops.{op}.{_MODULE_OF[name]}")
    return getattr(mod, fn_name)
