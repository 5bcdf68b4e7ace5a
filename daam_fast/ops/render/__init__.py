"""``render``: maps -> uint8 frames in one kernel (cumulative sum over blocks, docs/method.md §5
normalisation, uint8 truncation, bilinear resize, JET colour map, overlay), dispatched to
C++ (CPU) / CUDA -> Triton (GPU) / PyTorch, as the PyTorch op ``daam_fast::render``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _dispatch, _library
from .reference import MODES, _tame_extremes, colormap_jet, normalize_frames, render_reference


def _run(maps: Tensor, images: Optional[Tensor], mode: str, H: int, W: int, alpha: float, beta: float,
         accumulate: bool, backend: str) -> Tensor:
    fn = _dispatch.get_impl("render", backend, "render_" + backend, render_reference)
    return fn(maps, images, mode, (H, W), alpha, beta, accumulate).contiguous()


if _library.HAS_CUSTOM_OP:
    @torch.library.custom_op("daam_fast::render", mutates_args=())
    def _op(maps: Tensor, images: Optional[Tensor], mode: str, H: int, W: int, alpha: float, beta: float,
            accumulate: bool, backend: str) -> Tensor:
        return _run(maps, images, mode, H, W, alpha, beta, accumulate, backend)

    @_op.register_fake
    def _(maps, images, mode, H, W, alpha, beta, accumulate, backend):
        B, L = maps.shape[:2]
        shape = (B, L, H, W) if images is None else (B, L, H, W, 3)
        return maps.new_empty(shape, dtype=torch.uint8)
else:  # pragma: no cover - torch < 2.4
    _op = _run

if _library.HAS_TRITON_OP:
    @torch.library.triton_op("daam_fast::render_triton", mutates_args=())
    def _triton_op(maps: Tensor, images: Optional[Tensor], mode: str, H: int, W: int, alpha: float, beta: float,
                   accumulate: bool) -> Tensor:
        from .triton import render_triton
        return render_triton(maps, images, mode, (H, W), alpha, beta, accumulate, wrap=_library.wrap)

__all__ = ["render_frames", "render_reference", "normalize_frames", "colormap_jet", "MODES"]


def render_frames(maps: Tensor, images: Optional[Tensor] = None, mode: str = "nonlinear",
                  size: Optional[Tuple[int, int]] = None, alpha: float = 0.4, beta: float = 0.8,
                  accumulate: bool = False, backend: Optional[str] = None) -> Tensor:
    """uint8 frames of the attention flow from DAAM maps, one fused kernel where built.

    Args:
        maps: (B, L, h, w) accumulated maps D_b (``res.maps``), or, with ``accumulate=True``,
            the per-block maps L_b (``res.block_maps``): the cumulative sum is done in the kernel.
        images: None or (B, 3, H, W) RGB pictures, uint8 or float in [0, 1].
        mode: "nonlinear" (default), "linear" or "raw" (``daam_fast.render.normalize_frames``).
        size: output (H, W); default the images' size, or (h, w) without images.
        alpha, beta: weights of the colour map and of the picture.
        accumulate: see ``maps``.
        backend: None (``DAAM_FAST_BACKEND`` or auto), "torch", "cpp", "triton", "cuda".

    Returns:
        uint8 (B, L, H, W) heat frames, or (B, L, H, W, 3) overlays with ``images``; on the
        maps' device. Equal to the torch path to one level of the heat (tests/test_op_render.py).

    Example:
        >>> frames = render_frames(res.block_maps, rgb, accumulate=True)   # (B, L, H, W, 3)
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
    if maps.dim() != 4 or min(maps.shape) == 0:
        raise ValueError(f"maps must be a non-empty (B, L, h, w) tensor, got {tuple(maps.shape)}")
    if maps.is_complex() or not maps.is_floating_point():
        raise ValueError(f"maps must be a floating-point tensor, got {maps.dtype}")
    B, L, h, w = maps.shape
    if images is not None:
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] != B:
            raise ValueError(f"images must be (B={B}, 3, H, W) RGB, got {tuple(images.shape)}")
        if size is None:
            size = tuple(images.shape[-2:])
    if size is None:
        size = (h, w)
    size = (int(size[0]), int(size[1]))
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if maps.dtype != torch.float32:
        maps = maps.float()
    maps = _tame_extremes(torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0))
    name = _library.resolve("render", str(maps.device), backend, (B, L, h, w, size[0], size[1]))
    if name != "torch" and images is not None and tuple(images.shape[-2:]) != size:
        # the kernels take pictures at the output size: resize them as the torch path does
        img = images.to(maps.device)
        img = img.float() if img.dtype == torch.uint8 else img.float() * 255.0
        images = F.interpolate(img, size=size, mode="bilinear", align_corners=False) / 255.0
    if _library.use_triton_op(name, maps):
        return torch.ops.daam_fast.render_triton(maps, images, mode, size[0], size[1], float(alpha), float(beta),
                                                 bool(accumulate))
    return _op(maps, images, mode, size[0], size[1], float(alpha), float(beta), bool(accumulate), name)
