"""``block_map``: the fused per-block DAAM map (softmax row capture + [class]-token
decomposition + weighted channel combination), dispatched to C++ / CUDA / Triton / PyTorch.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

from torch import Tensor

from .. import _dispatch
from .reference import block_map_reference

__all__ = ["block_map", "block_map_reference"]


def _check(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, prefix: int) -> None:
    if k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"block_map: k and v must both be (B, H, N, d), got {tuple(k.shape)} and {tuple(v.shape)}")
    B, H, N, d = k.shape
    if tuple(q_cls.shape) != (B, H, d) or tuple(g.shape) != (B, H, d):
        raise ValueError(f"block_map: q_cls and g must be (B, H, d) = {(B, H, d)}, got "
                         f"{tuple(q_cls.shape)} and {tuple(g.shape)}")
    if not 0 <= prefix < N:
        raise ValueError(f"block_map: prefix={prefix} must be in [0, N={N})")
    if B == 0 or H == 0 or d == 0:
        raise ValueError(f"block_map: empty input {tuple(k.shape)}")
    devs = {t.device for t in (q_cls, k, v, g)}
    if len(devs) != 1:
        raise ValueError(f"block_map: all inputs must be on one device, got {devs}")


def _torch_impl(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int,
                heads: bool) -> Tuple[Tensor, Optional[Tensor]]:
    if heads:
        return block_map_reference(q_cls, k, v, g, scale, prefix, heads=True)
    return block_map_reference(q_cls, k, v, g, scale, prefix), None


def run_backend(name: str, q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int,
                heads: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """(maps, head terms or None) from the named backend (no argument checks)."""
    fn = _dispatch.get_impl("block_map", name, "block_map_" + name, _torch_impl)
    return fn(q_cls, k, v, g, scale, prefix, heads)


def block_map(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, prefix: int = 0,
              backend: Optional[str] = None, heads: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Per-block map ``ReLU(sum_h softmax(scale q_cls.k)[n] <g_h, v_n>)`` for patch tokens
    (docs/method.md §1, §3).

    Args:
        q_cls: (B, H, d) [class] query.  k, v: (B, H, N, d), any strides (views of the
            qkv output are read in place).  g: (B, H, d) coefficients.
        scale: softmax scale.  prefix: P, prefix tokens dropped from the output.
        backend: None (``DAAM_FAST_BACKEND`` or auto), "torch", "cpp", "triton", "cuda".
        heads: also return each head's term ``a^h[n] <g^h, v^h[n]>`` before the ReLU, formed
            in the same pass by every backend.

    Returns:
        (B, N - P) float32 map on the inputs' device (float64 for float64 inputs on the torch
        and cpp backends); with ``heads``, ``(maps, head_terms (B, H, N - P))`` of the same
        dtype, where ``relu(head_terms.sum(1)) == maps`` (to the float32 rounding of the sum).

    Example:
        >>> m = block_map(q[:, :, 0], k, v, g.view(B, H, d), d ** -0.5, prefix=1)
        >>> m, per_head = block_map(q[:, :, 0], k, v, g.view(B, H, d), d ** -0.5, prefix=1, heads=True)
    """
    _check(q_cls, k, v, g, prefix)
    name = _dispatch.resolve("block_map", k.device, backend)
    maps, ht = run_backend(name, q_cls, k, v, g, float(scale), int(prefix), bool(heads))
    return (maps, ht) if heads else maps
