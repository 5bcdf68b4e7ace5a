"""DINO checkpoints (``vision_transformer.py`` of facebookresearch/dino) loaded into timm.

DINO's ViT and timm's ``VisionTransformer`` share the parameter layout, so the mapping is a
renaming of the container keys, documented here (DINO name -> timm name):

| DINO checkpoint key                         | timm key                          |
|---------------------------------------------|-----------------------------------|
| ``cls_token`` (1, 1, C)                     | ``cls_token``                     |
| ``pos_embed`` (1, 1 + h*w, C)               | ``pos_embed``                     |
| ``patch_embed.proj.{weight,bias}``          | same                              |
| ``blocks.{i}.norm1 / norm2.{weight,bias}``  | same                              |
| ``blocks.{i}.attn.qkv.{weight,bias}``       | same (one fused q, k, v linear)   |
| ``blocks.{i}.attn.proj.{weight,bias}``      | same                              |
| ``blocks.{i}.mlp.fc1 / fc2.{weight,bias}``  | same                              |
| ``norm.{weight,bias}``                      | ``norm`` (final LayerNorm, eps 1e-6) |
| ``head.*`` (DINOHead projection / linear)   | dropped: the model is built with ``num_classes=0`` |

Container prefixes are stripped: a training checkpoint ``{"teacher": {...}}`` or
``{"student": ...}`` (``checkpoint_key``), and key prefixes ``module.`` and ``backbone.``
(as DINO's ``utils.load_pretrained_weights`` does). The architecture is read from the
state dict: width C and depth from the shapes, patch size from ``patch_embed.proj``, image
size from ``pos_embed`` (a square grid), MLP ratio from ``fc1``, ``qkv_bias`` from the
presence of ``attn.qkv.bias``; heads from the DINO widths (192: 3, 384: 6, 768: 12,
1024: 16) unless given. The resulting timm model computes DINO's features exactly: the
[class] token after the final norm (``forward`` returns it with ``num_classes=0``).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Union

from torch import Tensor

from .checkpoint import backbone_tensors, load_into, read_checkpoint, require_vit_keys, vit_shape

__all__ = ["dino_to_timm", "load_dino"]

DINO_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16}


def dino_to_timm(state_dict: Mapping[str, Tensor], checkpoint_key: Optional[str] = None) -> Dict[str, Tensor]:
    """Rename a DINO ``vision_transformer.py`` state dict to timm ``VisionTransformer`` keys.

    Args:
        state_dict: a DINO backbone state dict, or a training checkpoint holding one under
            ``checkpoint_key`` ("teacher" by default when present, else "student" / "model").
        checkpoint_key: the entry of a training checkpoint to read.

    Returns:
        dict: timm keys -> tensors (the DINO projection head ``head.*`` dropped).

    Raises:
        ValueError: if the dict is not in DINO's ViT layout (the missing keys are named).
    """
    out = {k: v for k, v in backbone_tensors(state_dict, checkpoint_key) if not (k.startswith("head.") or k == "head")}
    require_vit_keys(out, "a DINO ViT state dict (vision_transformer.py layout)")
    return out


def load_dino(source: Union[str, Mapping[str, Tensor]], *, num_heads: Optional[int] = None,
              checkpoint_key: Optional[str] = None, dynamic_img_size: bool = False, device="cpu"):
    """A timm ``VisionTransformer`` (no head, eval mode) holding a DINO checkpoint.

    Args:
        source: path of a DINO ``.pth`` file, or its loaded dict (backbone state dict or
            training checkpoint with "teacher" / "student").
        num_heads: attention heads (default: DINO's for the width; required for other widths).
        checkpoint_key: entry of a training checkpoint ("teacher" by default when present).
        dynamic_img_size: build the model with timm's dynamic image size (pos-embed
            interpolated for other input sizes; timm's interpolation, not DINO's).
        device: where to put the model.

    Returns:
        timm VisionTransformer with ``num_classes=0``: ``model(x)`` (B, 3, H, W) -> (B, C), the
        DINO feature; explain it with ``DAAM(model)(x, target=BankTarget(bank))`` (self-supervised path).

    Example:
        >>> model = load_dino("dino_deitsmall16_pretrain.pth")
        >>> res = DAAM(model)(images, target=BankTarget(bank))
    """
    from timm.models.vision_transformer import VisionTransformer

    sd = dino_to_timm(read_checkpoint(source), checkpoint_key)
    C, depth, patch, in_chans = vit_shape(sd)
    n = sd["pos_embed"].shape[1] - 1
    side = int(round(math.sqrt(n)))
    if side * side != n:
        raise ValueError(f"pos_embed has {n} patch positions, not a square grid")
    if num_heads is None:
        if C not in DINO_HEADS:
            raise ValueError(f"width {C} is not a DINO width {sorted(DINO_HEADS)}: pass num_heads=")
        num_heads = DINO_HEADS[C]
    mlp_ratio = sd["blocks.0.mlp.fc1.weight"].shape[0] / C
    model = VisionTransformer(img_size=side * patch, patch_size=patch, in_chans=in_chans, embed_dim=C, depth=depth,
                              num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias="blocks.0.attn.qkv.bias" in sd,
                              num_classes=0, global_pool="token", dynamic_img_size=dynamic_img_size)
    return load_into(model, sd, "DINO", device)
