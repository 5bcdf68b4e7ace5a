"""Backend choice shared by every fused op: the one place that decides which kernel runs.

Each op folder ``daam_fast/ops/<op>/`` has ``reference.py`` (pure PyTorch, the oracle)
and one module per fast backend (``cpu.py`` for the C++ extension, ``cuda.py`` for the
CUDA extension, ``triton.py``). Each backend module exposes ``available(device) -> (bool, str)``
(the string says why not: not built, no device, no kernel image for this GPU's compute
capability, ...) and the op's function. This module picks one, by device and by shape:

* the requested backend: ``DAAM(..., backend=...)`` (passed down to the ops), else the process
  default ``DAAM_FAST_BACKEND`` (``daam_fast/_config.py``), else ``auto``;
* ``auto`` on CUDA tensors: the first of cuda -> triton -> torch that is available on the tensors'
  device and whose kernel takes these sizes (:data:`LIMITS`); on CPU tensors: cpp -> torch;
* an explicitly requested backend that is unavailable raises ``RuntimeError`` with the reason, and
  one that cannot take the sizes raises ``ValueError`` naming the limit.

:func:`explain` says, backend by backend, why ``auto`` picks what it picks.

An op without a kernel for a backend says so (``_MISSING``): cls_attention has no C++ kernel,
since on the CPU PyTorch's SDPA already is a fused C++ kernel; its CPU path is "torch".
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from .. import _config

_AUTO_ORDER = {"cuda": ("cuda", "triton", "torch"), "cpu": ("cpp", "torch")}
_MODULE_OF = {"cpp": "cpu", "cuda": "cuda", "triton": "triton"}
_MISSING = {
    ("cls_attention", "cpp"): "cls_attention has no C++ kernel: on the CPU it runs PyTorch's SDPA (a fused "
                              "C++ kernel) plus the O(N d) [class] row, which is backend 'torch'",
}

# The sizes each op passes to :func:`resolve`, in order.
SIZES = {
    "block_map": ("B", "H", "N", "d", "P"),          # k, v (B, H, N, d); P prefix tokens
    "cls_attention": ("B", "H", "M", "N", "d"),      # q (B, H, M, d); k, v (B, H, N, d)
    "render": ("B", "L", "h", "w", "H", "W"),        # maps (B, L, h, w) -> frames (H, W)
}

_GRID = 65535           # CUDA's limit on a grid's second and third dimensions
_GRID_X = 2**31 - 1     # and on its first


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# What each kernel takes: (what, its value for these sizes, the largest value the kernel takes).
# The CUDA numbers are the checks of csrc/cuda/*.cu; the Triton ones are the grids of
# ops/<op>/triton.py (tiles of at least 32 tokens / 16 query rows / 256 pixels) and the head dims
# whose tiles were compiled and checked (tests/test_gpu_compile.py). The torch path has no limit.
LIMITS: Dict[Tuple[str, str], Tuple[Tuple[str, Callable[[dict], int], int], ...]] = {
    ("block_map", "cuda"): (
        ("head dim d", lambda s: s["d"], 128),                              # 4 channels per lane
        ("heads H", lambda s: s["H"], 4096),                                # combine kernel's shared memory
        ("batch B", lambda s: s["B"], _GRID)),
    ("block_map", "triton"): (
        ("head dim d", lambda s: s["d"], 256),
        ("B * H", lambda s: s["B"] * s["H"], _GRID_X),
        ("token tiles ceil(N / 32)", lambda s: _cdiv(s["N"], 32), _GRID),
        ("patch-token tiles ceil((N - P) / 128)", lambda s: _cdiv(s["N"] - s["P"], 128), _GRID)),
    ("cls_attention", "cuda"): (
        ("head dim d", lambda s: s["d"], 128),
        ("B * H", lambda s: s["B"] * s["H"], _GRID)),
    ("cls_attention", "triton"): (
        ("head dim d", lambda s: s["d"], 256),
        ("B * H", lambda s: s["B"] * s["H"], _GRID_X),
        ("query tiles ceil(M / 16)", lambda s: _cdiv(s["M"], 16), _GRID)),
    ("render", "cuda"): (
        ("frames B * L", lambda s: s["B"] * s["L"], _GRID),
        ("output pixels H * W", lambda s: s["H"] * s["W"], 2**31 - 1)),
    ("render", "triton"): (
        ("frames B * L", lambda s: s["B"] * s["L"], _GRID),
        ("pixel tiles ceil(H * W / 256)", lambda s: _cdiv(s["H"] * s["W"], 256), _GRID_X)),
}


def backend_status(op: str, backend: str, device: Optional[torch.device] = None) -> tuple[bool, str]:
    """Whether ``backend`` can run ``op`` here (on ``device``, if given), and if not, why."""
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
    return mod.available(device) if device is not None else mod.available()


def exceeds(op: str, backend: str, sizes: Optional[Sequence[int]]) -> str:
    """The first limit of ``backend``'s kernel for ``op`` that ``sizes`` (in the order of
    :data:`SIZES`) exceed, as a sentence; "" when the kernel takes them (or no sizes are given)."""
    if sizes is None:
        return ""
    s = dict(zip(SIZES[op], (int(x) for x in sizes)))
    for what, value, limit in LIMITS.get((op, backend), ()):
        v = value(s)
        if v > limit:
            return f"{what} = {v} exceeds {limit}, the limit of the {backend} kernel of {op}"
    return ""


def explain(op: str, device: torch.device, sizes: Optional[Sequence[int]] = None,
            backend: Optional[str] = None) -> Tuple[str, str]:
    """(the backend that runs ``op`` for tensors on ``device`` with ``sizes``, why), the why one
    line per backend considered, e.g. ``"cuda: no (head dim d = 160 exceeds 128, ...); triton: yes"``.
    Raises as :func:`resolve` does for an explicit backend that cannot run."""
    device = torch.device(device)
    requested = (backend or _config.backend()).lower()
    if requested not in _config.BACKENDS:
        raise ValueError(f"backend {requested!r}: expected one of {', '.join(_config.BACKENDS)}")
    if requested != "auto":
        where = "DAAM_FAST_BACKEND" if backend is None else "backend="
        if requested == "cpp" and device.type != "cpu":
            raise RuntimeError(f"backend 'cpp' runs on CPU tensors only, got {device}")
        if requested == "cuda" and device.type != "cuda":
            raise RuntimeError(f"backend 'cuda' runs on CUDA tensors only, got {device}")
        ok, why = backend_status(op, requested, device)
        if not ok:
            raise RuntimeError(f"backend {requested!r} requested for {op} but unavailable: {why}")
        too_big = exceeds(op, requested, sizes)
        if too_big:
            raise ValueError(f"backend {requested!r} ({where}) cannot run {op} on these sizes: {too_big}; "
                             f"backend None (auto) chooses one that can")
        return requested, f"{requested}: requested ({where})"
    lines = []
    for name in _AUTO_ORDER.get(device.type, ("torch",)):
        ok, why = backend_status(op, name, device)
        if ok:
            why = exceeds(op, name, sizes)
            ok = not why
        lines.append(f"{name}: " + ("yes" if ok else f"no ({why})"))
        if ok:
            return name, "; ".join(lines)
    return "torch", "; ".join(lines)


def resolve(op: str, device: torch.device, backend: Optional[str] = None,
            sizes: Optional[Sequence[int]] = None) -> str:
    """The backend name that will run ``op`` for tensors on ``device`` of these ``sizes`` (see
    :data:`SIZES`; None: availability only). :func:`explain` says why."""
    return explain(op, device, sizes, backend)[0]


def get_impl(op: str, name: str, fn_name: str, reference: Callable) -> Callable:
    if name == "torch":
        return reference
    mod = importlib.import_module(f"daam_fast.ops.{op}.{_MODULE_OF[name]}")
    return getattr(mod, fn_name)
