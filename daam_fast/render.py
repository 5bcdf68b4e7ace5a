"""Turning accumulated maps into pictures (docs/method.md §5), on the maps' device.

The computation lives in :mod:`daam_fast.ops.render`: one fused kernel (C++ on CPU tensors
when the extension is built; CUDA extension -> Triton on CUDA tensors) or the batched torch
ops of ``daam_fast/ops/render/reference.py``, which define the result.
"""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor

from .ops.render import MODES, colormap_jet, normalize_frames, render_frames

__all__ = ["render", "normalize_frames", "colormap_jet"]


def render(maps: Tensor, images: Optional[Tensor] = None, mode: str = "nonlinear",
           size: Optional[Tuple[int, int]] = None, alpha: float = 0.4, beta: float = 0.8) -> Tensor:
    """Frames of the attention flow: one picture per block, for every image.

    Steps (the authors' order): per-frame normalisation (:func:`normalize_frames`), truncation
    to uint8 (floor of 255 z), bilinear resize to the image size, then, with ``images``, the
    JET colour map blended as ``clamp(round(alpha * jet + beta * image), 0, 255)``.

    The kernel is chosen as for DAAM's ops (``DAAM_FAST_BACKEND``, else auto: C++ on CPU
    tensors when built, CUDA -> Triton -> torch on CUDA tensors); the kernels agree with the
    torch path to one level of the heat.

    Args:
        maps: (B, L, h, w) accumulated maps (``res.maps``); pass ``res.maps[:, -1:]`` for
            the final map only. Stays on its device.
        images: None, or (B, 3, H, W) RGB pictures, uint8 or float in [0, 1] (NOT the
            normalised model input).
        mode: "nonlinear" (default), "linear" or "raw" (see :func:`normalize_frames`).
        size: output (H, W); default: the images' size, or (h, w) without images.
        alpha: weight of the colour map (authors: 0.4).
        beta: weight of the picture (authors: 0.8).

    Returns:
        uint8 (B, L, H, W) heat frames without images, or (B, L, H, W, 3) RGB overlays.

    Example:
        >>> frames = render(res.maps, images=rgb)    # (B, L, H, W, 3) uint8
    """
    return render_frames(maps, images, mode=mode, size=size, alpha=alpha, beta=beta)
