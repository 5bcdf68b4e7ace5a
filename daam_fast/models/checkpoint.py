"""Reading foreign checkpoints: what the DINO / DINOv2 loaders and ``--checkpoint`` share.

A checkpoint file is read on the CPU, tensors only (``weights_only=True``); a training
checkpoint's model is unwrapped from its container entry ("teacher", "state_dict", ...) and
wrapper prefixes (``module.``, ``backbone.``) are stripped from its keys. The DINO / DINOv2
loaders then check the ViT keys, read the architecture from the shapes and load strictly.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ["read_checkpoint", "unwrap", "strip_prefixes", "backbone_tensors", "require_vit_keys", "vit_shape",
           "load_into"]


def read_checkpoint(source) -> Mapping[str, Tensor]:
    """A path (loaded on the CPU, tensors only) or an already loaded dict."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        return torch.load(source, map_location="cpu", weights_only=True)
    return source


def unwrap(checkpoint: Mapping, entries: Sequence[str]) -> Tuple[Mapping, Optional[str]]:
    """(the first of ``entries`` that holds a mapping, its name), or (``checkpoint``, None)."""
    for k in entries:
        if k in checkpoint and isinstance(checkpoint[k], Mapping):
            return checkpoint[k], k
    return checkpoint, None


def strip_prefixes(key: str, prefixes: Sequence[str]) -> str:
    """``key`` without each of ``prefixes`` in turn where it starts with it ("module.backbone.x" -> "x")."""
    for prefix in prefixes:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def backbone_tensors(state_dict: Mapping[str, Tensor],
                     checkpoint_key: Optional[str] = None) -> Iterator[Tuple[str, Tensor]]:
    """(key, tensor) pairs of the backbone in a state dict or a training checkpoint: the entry
    ``checkpoint_key`` ("teacher" / "student" / "model" / "state_dict" by default, when present),
    with ``module.`` / ``backbone.`` key prefixes stripped and non-tensors skipped.

    Raises:
        ValueError: ``checkpoint_key`` was given and the checkpoint has no such entry.
    """
    entries = [checkpoint_key] if checkpoint_key else ["teacher", "student", "model", "state_dict"]
    sd, found = unwrap(state_dict, entries)
    if checkpoint_key and found is None:
        raise ValueError(f"checkpoint has no entry {checkpoint_key!r} (entries: {sorted(state_dict)[:10]})")
    for k, v in sd.items():
        if isinstance(v, Tensor):
            yield strip_prefixes(k, ("module.", "backbone.")), v


def require_vit_keys(sd: Mapping[str, Tensor], what: str) -> None:
    """ValueError naming the missing keys unless ``sd`` holds a timm-named ViT backbone."""
    need = ["cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "blocks.0.attn.qkv.weight",
            "blocks.0.attn.proj.weight", "blocks.0.mlp.fc1.weight"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"not {what}: missing {missing}")


def vit_shape(sd: Mapping[str, Tensor]) -> Tuple[int, int, int, int]:
    """(width C, depth, patch size, input channels) of a ViT state dict in timm's key names."""
    pw = sd["patch_embed.proj.weight"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    return sd["cls_token"].shape[-1], depth, int(pw.shape[-1]), int(pw.shape[1])


def load_into(model: nn.Module, sd: Mapping[str, Tensor], what: str, device) -> nn.Module:
    """Load ``sd`` into ``model`` strictly (ValueError naming missing / unexpected keys); eval mode on ``device``."""
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{what} state dict does not fit the timm model: missing {missing}, unexpected {unexpected}")
    return model.eval().to(device)
