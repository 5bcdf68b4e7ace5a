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

import torch
from torch import Tensor

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


# Shared with dinov2.py: the two loaders differ only in renaming and in the model they build.
def backbone_tensors(state_dict: Mapping[str, Tensor], checkpoint_key: Optional[str] = None):
    """(key, tensor) pairs of the backbone in a state dict or a training checkpoint: the entry
    ``checkpoint_key`` ("teacher" / "student" / "model" / "state_dict" by default, when present),
    with ``module.`` / ``backbone.`` key prefixes stripped and non-tensors skipped."""
    sd = state_dict
    keys = [checkpoint_key] if checkpoint_key else ["teacher", "student", "model", "state_dict"]
    for k in keys:
        if k in sd and isinstance(sd[k], Mapping):
            sd = sd[k]
            break
    else:
        if checkpoint_key:
            raise ValueError(f"checkpoint has no entry {checkpoint_key!r} (entries: {sorted(sd)[:10]})")
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            continue
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        yield k, v


def require_vit_keys(sd: Mapping[str, Tensor], what: str) -> None:
    need = ["cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "blocks.0.attn.qkv.weight",
            "blocks.0.attn.proj.weight", "blocks.0.mlp.fc1.weight"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"not {what}: missing {missing}")


def read_checkpoint(source) -> Mapping[str, Tensor]:
    """A path (loaded on the CPU, tensors only) or an already loaded dict."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        return torch.load(source, map_location="cpu", weights_only=True)
    return source


def vit_shape(sd: Mapping[str, Tensor]):
    """(width C, depth, patch size, input channels) of a ViT state dict in timm's key names."""
    pw = sd["patch_embed.proj.weight"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    return sd["cls_token"].shape[-1], depth, int(pw.shape[-1]), int(pw.shape[1])


def load_into(model, sd: Mapping[str, Tensor], what: str, device):
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{what} state dict does not fit the timm model: missing {missing}, unexpected {unexpected}")
    return model.eval().to(device)


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
        DINO feature; explain it with ``DAAM(model)(x, bank=...)`` (self-supervised path).

    Example:
        >>> model = load_dino("dino_deitsmall16_pretrain.pth")
        >>> res = DAAM(model)(images, bank=bank)
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
