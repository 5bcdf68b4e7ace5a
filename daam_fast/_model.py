"""What the explainer needs to know about a timm ViT, read from the model, and input checks.

Shared by the fast path and the reference (validation only: the math of each is its own).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

try:  # timm is a hard dependency, but keep the error clear
    from timm.layers import Attention as TimmAttention
    from timm.models.vision_transformer import Block as TimmBlock
except ImportError as e:  # pragma: no cover
    raise ImportError("daam_fast needs timm (pip install timm)") from e

TargetLike = Union[None, int, Tensor, List[int]]


@dataclass
class ViTLayout:
    """Where things are in a timm VisionTransformer.

    Attributes:
        blocks: the L transformer blocks, in order.
        attns: their attention modules (timm ``Attention``).
        num_prefix: P, the prefix tokens ([class], distillation, registers).
        num_heads: H.  head_dim: d.
        pool: "token" (the [class] token is the output) or "avg" (mean of patch tokens).
        head_rows: rows of the last block's output that the head reads (1 for [class],
            2 for a distilled model), or None when it reads every row (avg pooling).
        num_classes: K, or 0 for a model without a classifier head (self-supervised path).
        in_chans: input channels.
    """

    blocks: List[nn.Module]
    attns: List[nn.Module]
    num_prefix: int
    num_heads: int
    head_dim: int
    pool: str
    head_rows: Optional[int]
    num_classes: int
    in_chans: int

    @property
    def depth(self) -> int:
        return len(self.blocks)


def _overrides_forward(mod: nn.Module, base: type) -> bool:
    return type(mod).forward is not base.forward


def inspect_vit(model: nn.Module) -> ViTLayout:
    """Read the token layout of ``model``; raise ``ValueError`` naming why it cannot be explained."""
    name = type(model).__name__
    for attr in ("blocks", "patch_embed", "num_prefix_tokens", "forward_features", "forward_head"):
        if not hasattr(model, attr):
            raise ValueError(f"{name} is not a timm VisionTransformer-like model: it has no `{attr}` "
                             "(daam_fast explains timm ViT/DeiT models whose blocks use timm's Attention)")
    blocks = list(model.blocks)
    if not blocks:
        raise ValueError(f"{name} has no transformer blocks")
    attns = []
    for i, blk in enumerate(blocks):
        attn = getattr(blk, "attn", None)
        if not isinstance(attn, TimmAttention) or _overrides_forward(attn, TimmAttention):
            raise ValueError(f"{name}.blocks[{i}].attn is {type(attn).__name__}, not timm's Attention "
                             "(RoPE, relative-position or fused-MLP attention variants are not supported)")
        attns.append(attn)
    heads = {a.num_heads for a in attns}
    dims = {a.head_dim for a in attns}
    if len(heads) != 1 or len(dims) != 1:
        raise ValueError(f"{name}: blocks have different head counts / widths {heads} / {dims}")
    if getattr(model, "attn_pool", None) is not None:
        raise ValueError(f"{name} uses attention pooling (global_pool='map'): the decomposition of the "
                         "pooled token through the pooling attention is not implemented")
    num_prefix = int(model.num_prefix_tokens)
    pool = getattr(model, "global_pool", "token")
    has_cls = getattr(model, "cls_token", None) is not None
    head_rows: Optional[int]
    if pool == "token":
        if not has_cls or num_prefix < 1:
            raise ValueError(f"{name}: global_pool='token' without a [class] token")
        dist = getattr(model, "dist_token", None) is not None
        head_rows = 2 if dist else 1
    elif pool == "avg":
        if getattr(model, "pool_include_prefix", False):
            raise ValueError(f"{name}: global_pool='avg' with pool_include_prefix=True is not supported")
        head_rows = None
    else:
        raise ValueError(f"{name}: global_pool={pool!r} is not supported (use 'token' or 'avg')")
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    pe = model.patch_embed
    proj = getattr(pe, "proj", None)
    in_chans = int(getattr(proj, "in_channels", 3)) if proj is not None else 3
    return ViTLayout(blocks, attns, num_prefix, heads.pop(), dims.pop(), pool, head_rows, num_classes, in_chans)


def can_reduce_last_block(layout: ViTLayout) -> bool:
    """The last block only needs the rows the head reads, if it is a plain timm Block."""
    last = layout.blocks[-1]
    return layout.head_rows is not None and type(last) is TimmBlock


def token_grid(model: nn.Module, images: Tensor) -> Tuple[int, int]:
    """(h, w) patch grid for ``images`` (B, C, H, W): dynamic size if the model has it."""
    pe = model.patch_embed
    H, W = images.shape[-2:]
    if getattr(model, "dynamic_img_size", False) or getattr(pe, "dynamic_img_size", False):
        if hasattr(pe, "dynamic_feat_size"):
            return tuple(int(s) for s in pe.dynamic_feat_size((H, W)))
    gs = getattr(pe, "grid_size", None)
    if gs is None:
        raise ValueError("cannot read the patch grid: model.patch_embed has no grid_size")
    img = getattr(pe, "img_size", None)
    if img is not None and getattr(pe, "strict_img_size", True) and tuple(img) != (H, W):
        raise ValueError(f"input size {(H, W)} does not match the model's img_size {tuple(img)} "
                         "(create the model with dynamic_img_size=True for other sizes)")
    return int(gs[0]), int(gs[1])


def check_images(images: Tensor, layout: ViTLayout) -> None:
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
