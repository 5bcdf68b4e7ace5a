"""timm ``Eva`` (EVA / EVA-02) with ``EvaAttention``, with or without rotary position
embeddings: the rope is applied to q and k as in timm, so the captured [class] row honours it.

Refused with the reason: depth-dependent ('mixed') rotary embeddings, attention modules whose
``num_prefix_tokens`` differs from the model's (and what :class:`TimmAdapter` refuses).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from .base import check_self_attention_call, register
from .timm_base import TimmAdapter, biased_qkv

__all__ = ["TimmEvaAdapter"]

try:
    from timm.layers import apply_rot_embed_cat
    from timm.models.eva import EvaAttention, EvaBlock
except ImportError:  # pragma: no cover - older timm: the family is absent
    EvaAttention = EvaBlock = apply_rot_embed_cat = None


class TimmEvaAdapter(TimmAdapter):
    """timm ``Eva`` models whose blocks use ``EvaAttention`` (see the module docstring)."""

    family = "timm-eva"
    attention, block = EvaAttention, EvaBlock
    attention_label, block_label = "EvaAttention", "EvaBlock"

    def __init__(self, model: nn.Module):
        super().__init__(model)
        name = type(model).__name__
        for i, attn in enumerate(self.attns):
            if getattr(attn, "num_prefix_tokens", 0) != int(model.num_prefix_tokens):
                raise ValueError(f"{name}.blocks[{i}].attn.num_prefix_tokens differs from the model's")
        if getattr(model, "rope_mixed", False):
            raise ValueError(f"{name}: depth-dependent ('mixed') rotary embeddings are not supported")

    # ------------------------------------------------------------------ attention
    def qkv(self, b: int, x: Tensor, rows: Optional[int] = None, ctx: Any = None) -> Tuple[Tensor, Tensor, Tensor]:
        """``ctx`` is the rope tensor timm passes to the attention (or None)."""
        attn = self.attns[b]
        q, k, v = biased_qkv(attn, x, self.num_heads, self.head_dim)
        q, k = attn.q_norm(q), attn.k_norm(k)
        rope = ctx
        if rope is not None:
            npt = attn.num_prefix_tokens
            half = getattr(attn, "rotate_half", False)
            q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], dim=2).type_as(v)
            k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2).type_as(v)
        if rows is not None:
            q = q[:, :, :rows]
        return q, k, v

    def attn_forward(self, b: int, core, active: Callable[[], bool]) -> Callable:
        attn = self.attns[b]

        def forward(x: Tensor, rope: Optional[Tensor] = None, attn_mask: Optional[Tensor] = None,
                    is_causal: bool = False, rows: Optional[int] = None) -> Tensor:
            if not active():  # not inside a DAAM call: exactly timm's computation
                return type(attn).forward(attn, x, rope=rope, attn_mask=attn_mask, is_causal=is_causal)
            check_self_attention_call(f"blocks[{b}].attn", attn_mask, is_causal)
            return core(x, rows, rope)

        return forward


if EvaAttention is not None:
    register(TimmEvaAdapter)
