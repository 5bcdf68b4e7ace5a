"""Input checks shared by the fast path and the reference; the model layout lives in the adapters.

(:mod:`daam_fast.adapters`; ``inspect_vit`` / ``token_grid`` are kept as thin aliases.)
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .adapters import Adapter, get_adapter

TargetLike = Union[None, int, Tensor, List[int]]

# Compatibility names: the layout is now the model's adapter (daam_fast.adapters).
ViTLayout = Adapter


def inspect_vit(model: nn.Module) -> Adapter:
    """The model's adapter (its layout); raise ``ValueError`` naming why it cannot be explained."""
    return get_adapter(model)


def can_reduce_last_block(layout: Adapter) -> bool:
    """The last block only needs the rows the head reads, if its family supports the reduction."""
    return layout.head_rows is not None and layout.can_reduce_last_block()


def token_grid(model: nn.Module, images: Tensor) -> Tuple[int, int]:
    """(h, w) patch grid for ``images`` (B, C, H, W): dynamic size if the model has it."""
    return get_adapter(model).grid(images)


def check_images(images: Tensor, layout: Adapter) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] != layout.in_chans:
        raise ValueError(f"images have {images.shape[1]} channels, the model expects {layout.in_chans}")
    if images.shape[0] == 0:
        raise ValueError("empty batch")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (normalised model input), got {images.dtype}; "
                         "use daam_fast.preprocess.prepare() for uint8 pictures")
    if not torch.isfinite(images).all():
        bad = (~torch.isfinite(images)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"images contain NaN or inf (images {bad})")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("DAAM needs autograd: call it outside torch.inference_mode()")


def resolve_targets(target: TargetLike, batch: int, num_classes: int, device) -> Optional[Tensor]:
    """Validate a user target before the forward pass: None, int, list or (B,) tensor -> (B,) long."""
    if target is None:
        return None
    if num_classes == 0:
        raise ValueError("target given, but the model has no classifier head (self-supervised path: "
                         "pass a MemoryBank with bank=... instead)")
    if isinstance(target, bool):
        raise TypeError("target must be an int, a sequence of ints or a (B,) tensor, not bool")
    if isinstance(target, int):
        t = torch.full((batch,), target, dtype=torch.long)
    else:
        t = torch.as_tensor(target)
        if t.is_floating_point():
            raise TypeError(f"target must be integer class indices, got {t.dtype}")
        t = t.long().flatten() if t.dim() <= 1 else t
        if t.dim() != 1 or (t.numel() != batch and t.numel() != 1):
            raise ValueError(f"target must be an int or have one entry per image ({batch}), got shape {tuple(t.shape)}")
        t = t.expand(batch) if t.numel() == 1 else t
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"target {lo if lo < 0 else hi} out of range for a model with {num_classes} classes")
    return t.to(device)
