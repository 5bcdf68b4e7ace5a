"""Pure-PyTorch reference of ``render`` (docs/method.md §5): batched torch ops on the maps' device.

This is the torch path of :func:`daam_fast.render.render` and the oracle of the fused
kernels (C++, CUDA, Triton), which must agree with it to one uint8 level of the heat.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

MODES = ("nonlinear", "linear", "raw")


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _tame_extremes(maps: Tensor) -> Tensor:
    """Every mode is invariant to scaling one image's maps by a positive constant. Where an
    image's magnitudes would overflow float32 differences (max |D| > 1e30) or hold subnormal
    ranges (a non-zero |D| < 1e-30), that image is rescaled to max |D| = 1 and magnitudes below
    1e-30 of it (invisible at 8 bits) are flushed to 0, so no frame can become NaN. Other images
    are passed through untouched (bit-exact with the kernels' tests). No host synchronisation."""
    a = maps.detach().abs().flatten(1)
    amax = a.amax(1)
    nz = torch.where(a > 0, a, torch.full_like(a, float("inf"))).amin(1)
    bad = (amax > 1e30) | (nz < 1e-30)      # no host sync: every image goes through the where
    s = torch.where(bad & (amax > 0) & torch.isfinite(amax), amax, torch.ones_like(amax)).view(-1, 1, 1, 1)
    m = maps / s
    m = torch.where(m.abs() < 1e-30, torch.zeros_like(m), m)
    return torch.where(bad.view(-1, 1, 1, 1), m, maps)


def normalize_frames(maps: Tensor, mode: str = "nonlinear") -> Tensor:
    """Per-frame values in [0, 1] from accumulated maps (docs/method.md §5).

    Args:
        maps: (B, L, h, w) accumulated maps D_b (``res.maps``); the last block is D_L.
        mode: "nonlinear" (authors' default since 2025-03): G = max D_L, y = sigmoid(5 D_b / G) - 0.5,
            then per-frame min-max; "linear" (legacy; keeps relative brightness across
            blocks): max(0, (D_b - gmin) / (max D_b - gmin + 1e-10)) * (max D_b - min D_b) / (gmax - gmin);
            "raw": per-frame min-max of D_b.
            Where the authors' code divides by zero (a constant frame, an all-zero D_L),
            the frame is 0, never NaN.

    Returns:
        (B, L, h, w) float32 in [0, 1].
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
    if maps.dim() != 4:
        raise ValueError(f"maps must be (B, L, h, w), got {tuple(maps.shape)}")
    D = maps.float()
    D = _tame_extremes(torch.nan_to_num(D, nan=0.0, posinf=0.0, neginf=0.0))
    fmin = D.amin(dim=(-2, -1), keepdim=True)
    fmax = D.amax(dim=(-2, -1), keepdim=True)
    if mode == "raw":
        return _safe_div(D - fmin, fmax - fmin).clamp(0, 1)
    final = D[:, -1:]
    if mode == "nonlinear":
        G = final.amax(dim=(-2, -1), keepdim=True)                       # (B, 1, 1, 1)
        y = torch.where(G > 0, torch.sigmoid(5 * _safe_div(D, G.expand_as(D))) - 0.5, torch.zeros_like(D))
        ymin, ymax = y.amin(dim=(-2, -1), keepdim=True), y.amax(dim=(-2, -1), keepdim=True)
        return _safe_div(y - ymin, ymax - ymin).clamp(0, 1)
    gmin = final.amin(dim=(-2, -1), keepdim=True)
    gmax = final.amax(dim=(-2, -1), keepdim=True)
    z = ((D - gmin) / (fmax - gmin + 1e-10)).clamp_min(0)
    return (z * _safe_div(fmax - fmin, (gmax - gmin).expand_as(fmax))).clamp(0, 1)


def colormap_jet(t: Tensor) -> Tensor:
    """JET-like colour map: t (...) in [0, 1] -> (..., 3) float RGB in [0, 1].

    r = clamp(1.5 - |4t - 3|), g = clamp(1.5 - |4t - 2|), b = clamp(1.5 - |4t - 1|).
    """
    t = t.float().clamp(0, 1)[..., None]
    return (1.5 - (4 * t - _jet_centres(t.device)).abs()).clamp(0, 1)


_CENTRES: Dict[torch.device, Tensor] = {}


def _jet_centres(device: torch.device) -> Tensor:
    """The colour map's centres (3, 2, 1) for r, g, b on ``device``: made on the device (no host
    copy, no synchronisation) once per device and kept; fresh inside a torch.compile trace."""
    if torch.compiler.is_compiling():
        return torch.arange(3.0, 0.0, -1.0, device=device)
    c = _CENTRES.get(device)
    if c is None:
        c = _CENTRES.setdefault(device, torch.arange(3.0, 0.0, -1.0, device=device))
    return c


def render_reference(maps: Tensor, images: Optional[Tensor], mode: str, size: Tuple[int, int],
                     alpha: float = 0.4, beta: float = 0.8, accumulate: bool = False) -> Tensor:
    """uint8 frames by torch ops (arguments checked by the caller, see ``render_frames``).

    Args:
        maps: (B, L, h, w) accumulated maps D_b, or per-block maps L_b with ``accumulate``.
        images: None or (B, 3, H', W') RGB, uint8 or float in [0, 1].
        mode: "nonlinear", "linear" or "raw".  size: output (H, W).
        alpha, beta: weights of the colour map and of the picture.
        accumulate: take the cumulative sum over blocks first (``torch.cumsum``).

    Returns:
        uint8 (B, L, H, W) heat frames, or (B, L, H, W, 3) overlays with ``images``.
    """
    if accumulate:
        maps = torch.cumsum(maps.float(), dim=1)
    z = normalize_frames(maps, mode)
    B, L, h, w = z.shape
    z8 = torch.floor(z * 255.0)                                       # uint8 truncation
    if tuple(size) != (h, w):
        z8 = F.interpolate(z8.reshape(B * L, 1, h, w), size=tuple(size), mode="bilinear",
                           align_corners=False).reshape(B, L, *size)
    heat = z8.round().clamp(0, 255)
    if images is None:
        return heat.to(torch.uint8)
    img = images.to(z.device)
    img = img.float() if img.dtype == torch.uint8 else img.float() * 255.0
    if tuple(img.shape[-2:]) != tuple(size):
        img = F.interpolate(img, size=tuple(size), mode="bilinear", align_corners=False)
    color = colormap_jet(heat / 255.0) * 255.0                        # (B, L, H, W, 3)
    over = alpha * color + beta * img.permute(0, 2, 3, 1)[:, None]
    return over.round().clamp(0, 255).to(torch.uint8)
