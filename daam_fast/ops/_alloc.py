"""Output allocation of every fused op, in one place, so tests can poison it.

Kernels write their outputs into tensors from :func:`empty`. Under :func:`poisoned` (the
tests' autouse fixture in tests/conftest.py) those tensors are filled first with NaN
(floating point) or 0xA5 (uint8), so an element a kernel forgets to write fails the
comparison with the reference instead of passing as whatever the allocator left there.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import Tensor

_POISON = False
UINT8_POISON = 0xA5


def empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``torch.empty(shape)``; NaN / 0xA5-filled while poisoning is on."""
    t = torch.empty(tuple(int(s) for s in shape), dtype=dtype, device=device)
    if _POISON:
        t.fill_(float("nan") if t.is_floating_point() else UINT8_POISON)
    return t


def poisoning() -> bool:
    return _POISON


@contextlib.contextmanager
def poisoned(on: bool = True) -> Iterator[None]:
    """Fill every op output with NaN (uint8: 0xA5) before the kernel writes it."""
    global _POISON
    prev, _POISON = _POISON, on
    try:
        yield
    finally:
        _POISON = prev
