"""DINOv2 checkpoints (``dinov2/models/vision_transformer.py`` of facebookresearch/dinov2,
e.g. ``dinov2_vits14_pretrain.pth``, ``dinov2_vitb14_reg4_pretrain.pth``) loaded into timm.

DINOv2's ``DinoVisionTransformer`` and timm's ``VisionTransformer`` share the block layout
(pre-norm blocks with layer-scale ``ls1`` / ``ls2``, fused ``attn.qkv``), so the mapping is
(DINOv2 name -> timm name):

| DINOv2 checkpoint key                            | timm key                                       |
|--------------------------------------------------|------------------------------------------------|
| ``cls_token`` (1, 1, C)                          | ``cls_token``                                  |
| ``register_tokens`` (1, R, C) (``_reg4`` models) | ``reg_token``                                  |
| ``pos_embed`` (1, 1 + M*M, C), M = 37 at 518 px  | ``pos_embed`` (1, 1 + R + h*w, C), see below    |
| ``patch_embed.proj.*``                           | same                                           |
| ``blocks.{i}.*`` (norm1, attn.qkv / proj, ls1,   | same                                           |
|   norm2, mlp.fc1 / fc2, ls2)                     |                                                |
| ``blocks.{i}.mlp.w12`` / ``w3`` (SwiGLU, ViT-g)  | ``mlp.fc1`` / ``fc2`` (``GluMlp``, SiLU gate)  |
| ``blocks.{chunk}.{i}.*`` (chunked checkpoints)   | ``blocks.{i}.*``                               |
| ``norm.*``                                       | ``norm`` (final LayerNorm, eps 1e-6)           |
| ``mask_token``, ``head.*``                       | dropped (training only; ``num_classes=0``)     |

timm's ``pos_embed`` holds the [class] position, R zero rows (DINOv2 adds no position to the
registers) and the patch positions resampled to the h x w grid of ``img_size`` exactly as
DINOv2's ``interpolate_pos_encoding`` does.

The explained feature is DINOv2's ``x_norm_clstoken``: the [class] token after the final
norm. The position embedding is resampled once, at load time, for the image size you will
use (``img_size``), with DINOv2's own rule (bicubic; ``interpolate_offset`` 0.1 without
antialiasing for the original models, 0 with antialiasing for the register models, as in
DINOv2's hub entries), so the timm model computes DINOv2's features at that size exactly.
"""
from __future__ import annotations

import math
import re
from functools import partial
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import backbone_tensors, load_into, read_checkpoint, require_vit_keys, vit_shape

__all__ = ["dinov2_to_timm", "load_dinov2"]

DINOV2_HEADS = {384: 6, 768: 12, 1024: 16, 1536: 24}


def dinov2_to_timm(state_dict: Mapping[str, Tensor], checkpoint_key: Optional[str] = None) -> Dict[str, Tensor]:
    """DINOv2 backbone keys in timm's names (pos_embed not yet resampled: see :func:`load_dinov2`).

    Accepts a backbone state dict or a training checkpoint holding one under ``checkpoint_key``
    ("teacher" / "student" / "model"), with ``module.`` / ``backbone.`` prefixes, and chunked
    blocks (``blocks.{chunk}.{i}``). Raises ``ValueError`` naming what is missing.
    """
    out: Dict[str, Tensor] = {}
    for k, v in backbone_tensors(state_dict, checkpoint_key):
        if k.startswith("head.") or k in ("head", "mask_token") or k.startswith("dino_head.") \
                or k.startswith("ibot_head."):
            continue
        m = re.match(r"blocks\.(\d+)\.(\d+)\.(.*)", k)           # chunked: blocks.{chunk}.{i}.*
        if m:
            k = f"blocks.{m.group(2)}.{m.group(3)}"
        k = k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")
        if k == "register_tokens":
            k = "reg_token"
        out[k] = v
    require_vit_keys(out, "a DINOv2 ViT state dict (dinov2 vision_transformer.py layout)")
    return out


def resample_pos_embed(pos_embed: Tensor, grid: Tuple[int, int], offset: float, antialias: bool) -> Tensor:
    """DINOv2's ``interpolate_pos_encoding``: (1, 1 + M*M, C) -> (1, 1 + h*w, C) for grid (h, w)."""
    N = pos_embed.shape[1] - 1
    M = int(round(math.sqrt(N)))
    if M * M != N:
        raise ValueError(f"pos_embed has {N} patch positions, not a square grid")
    h, w = grid
    if (h, w) == (M, M):
        return pos_embed
    dtype = pos_embed.dtype
    pe = pos_embed.float()
    cls_pe, patch_pe = pe[:, :1], pe[:, 1:]
    dim = pe.shape[-1]
    kwargs = {"scale_factor": ((h + offset) / M, (w + offset) / M)} if offset else {"size": (h, w)}
    patch_pe = F.interpolate(patch_pe.reshape(1, M, M, dim).permute(0, 3, 1, 2), mode="bicubic",
                             antialias=antialias, **kwargs)
    if tuple(patch_pe.shape[-2:]) != (h, w):
        raise ValueError(f"resampling the {M}x{M} position grid gave {tuple(patch_pe.shape[-2:])}, not {(h, w)}")
    return torch.cat([cls_pe, patch_pe.permute(0, 2, 3, 1).reshape(1, h * w, dim)], dim=1).to(dtype)


def load_dinov2(source: Union[str, Mapping[str, Tensor]], *, img_size: Union[int, Sequence[int], None] = None,
                num_heads: Optional[int] = None, interpolate_offset: Optional[float] = None,
                interpolate_antialias: Optional[bool] = None, checkpoint_key: Optional[str] = None, device="cpu"):
    """A timm ``VisionTransformer`` (no head, eval mode) computing a DINOv2 checkpoint's features.

    Args:
        source: path of a DINOv2 ``.pth`` file, or its loaded dict.
        img_size: the input size the model will see, int or (H, W), multiples of the patch size
            (default: the checkpoint's native size, 518 for the released models; 224 is common).
            The position embedding is resampled once for it, as DINOv2 does per call.
        num_heads: attention heads (default: DINOv2's for the width: 384: 6, 768: 12, 1024: 16,
            1536: 24).
        interpolate_offset, interpolate_antialias: DINOv2's resampling settings (default: 0.1 and
            False without register tokens, 0.0 and True with them, as in DINOv2's hubconf).
        checkpoint_key: entry of a training checkpoint to read.
        device: where to put the model.

    Returns:
        timm VisionTransformer with ``num_classes=0``: ``model(x)`` (B, 3, H, W) -> (B, C),
        DINOv2's ``x_norm_clstoken``; explain it with ``DAAM(model)(x, target=BankTarget(bank))``.

    Example:
        >>> model = load_dinov2("dinov2_vits14_reg4_pretrain.pth", img_size=224)
        >>> res = DAAM(model)(images, target=BankTarget(bank))
    """
    from timm.layers import GluMlp
    from timm.models.vision_transformer import VisionTransformer

    sd = dinov2_to_timm(read_checkpoint(source), checkpoint_key)
    C, depth, patch, in_chans = vit_shape(sd)
    M = int(round(math.sqrt(sd["pos_embed"].shape[1] - 1)))
    if img_size is None:
        size = (M * patch, M * patch)
    else:
        size = (int(img_size), int(img_size)) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
    if size[0] % patch or size[1] % patch:
        raise ValueError(f"img_size {size} is not a multiple of the patch size {patch}")
    R = int(sd["reg_token"].shape[1]) if "reg_token" in sd else 0
    offset = (0.0 if R else 0.1) if interpolate_offset is None else float(interpolate_offset)
    antialias = bool(R) if interpolate_antialias is None else bool(interpolate_antialias)
    if num_heads is None:
        if C not in DINOV2_HEADS:
            raise ValueError(f"width {C} is not a DINOv2 width {sorted(DINOV2_HEADS)}: pass num_heads=")
        num_heads = DINOV2_HEADS[C]
    swiglu = "blocks.0.mlp.fc1.weight" in sd and sd["blocks.0.mlp.fc1.weight"].shape[0] != \
        sd["blocks.0.mlp.fc2.weight"].shape[1]                     # w12 is 2 x hidden wide
    kw = dict(mlp_layer=partial(GluMlp, gate_last=False), act_layer=nn.SiLU) if swiglu else {}
    mlp_ratio = sd["blocks.0.mlp.fc1.weight"].shape[0] / C
    layer_scale = "blocks.0.ls1.gamma" in sd
    model = VisionTransformer(img_size=size, patch_size=patch, in_chans=in_chans, embed_dim=C, depth=depth,
                              num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias="blocks.0.attn.qkv.bias" in sd,
                              init_values=1.0 if layer_scale else None, reg_tokens=R, no_embed_class=False,
                              num_classes=0, global_pool="token", **kw)
    grid = (size[0] // patch, size[1] // patch)
    pe = resample_pos_embed(sd["pos_embed"], grid, offset, antialias)
    if R:                                   # DINOv2 adds no position to the registers: zero rows
        pe = torch.cat([pe[:, :1], pe.new_zeros(1, R, C), pe[:, 1:]], dim=1)
    sd["pos_embed"] = pe
    model.dinov2_resampling = dict(offset=offset, antialias=antialias)
    return load_into(model, sd, "DINOv2", device)
