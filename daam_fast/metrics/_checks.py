"""Argument checks and helpers shared by the metrics (maps, images, targets, scores)."""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

ScoreLike = Union[str, Callable[[Tensor, Tensor], Tensor]]


def _check_saliency(saliency: Tensor, batch: Optional[int] = None) -> Tensor:
    if not isinstance(saliency, Tensor):
        raise TypeError(f"saliency must be a torch.Tensor (B, h, w), got {type(saliency).__name__}")
    if saliency.dim() != 3:
        raise ValueError(f"saliency must be (B, h, w), got shape {tuple(saliency.shape)} "
                         "(pass res.final, or res.maps[:, b] for block b)")
    if batch is not None and saliency.shape[0] != batch:
        raise ValueError(f"saliency has {saliency.shape[0]} maps for {batch} images")
    if not saliency.is_floating_point():
        saliency = saliency.float()
    if not torch.isfinite(saliency).all():
        raise ValueError("saliency contains NaN or inf")
    return saliency


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("images must be a float tensor (B, C, H, W) (the normalised model input), got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")


def upsample(saliency: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize of maps to a pixel size.

    Args:
        saliency: (B, h, w) or (B, L, h, w) maps.
        size: (H, W).

    Returns:
        (B, H, W) or (B, L, H, W) float32 on the maps' device (``align_corners=False``; a map
        already at ``size`` is returned as float32 unchanged).
    """
    s = saliency.float()
    if tuple(s.shape[-2:]) == tuple(size):
        return s
    lead = s.shape[:-2]
    out = F.interpolate(s.reshape(-1, 1, *s.shape[-2:]), size=tuple(size), mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


def _scores(out, targets: Tensor, score: ScoreLike) -> Tensor:
    if isinstance(out, tuple):
        out = out[0]
    if callable(score):
        return score(out, targets).float()
    if score == "prob":
        return out.float().softmax(dim=-1).gather(1, targets[:, None])[:, 0]
    if score == "logit":
        return out.float().gather(1, targets[:, None])[:, 0]
    raise ValueError(f"score={score!r}: expected 'prob', 'logit' or a callable (outputs, targets) -> (B,)")


def _check_targets(targets, B: int, device) -> Tensor:
    t = torch.as_tensor(targets, device=device)
    if t.dim() == 0:
        t = t.expand(B)
    if t.shape != (B,) or t.is_floating_point():
        raise ValueError(f"targets must be (B,) = ({B},) class indices, got {tuple(t.shape)} {t.dtype}")
    return t.long()


def _minmax(s: Tensor) -> Tensor:
    lo = s.amin(dim=(-2, -1), keepdim=True)
    hi = s.amax(dim=(-2, -1), keepdim=True)
    rng = hi - lo
    return torch.where(rng > 0, (s - lo) / torch.where(rng > 0, rng, torch.ones_like(rng)), torch.zeros_like(s))
