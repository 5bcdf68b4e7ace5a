"""timm ``VisionTransformer`` family with timm's ``Attention``: ViT, DeiT (also distilled),
register tokens, q/k-norm, layer-scale, scale-norm, gated attention.

Also the fallback for every timm-like model that no other timm kind claims: its constructor
says why the model cannot be explained (another attention class, a relative position bias).
The model-level parts shared with EVA and BEiT are in :mod:`daam_fast.adapters.timm_base`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from .base import ADAPTERS, check_self_attention_call, register
from .timm_base import TimmAdapter, TimmAttention, TimmBlock, TimmLayerScale, timm_like

__all__ = ["TimmViTAdapter"]


@register
class TimmViTAdapter(TimmAdapter):
    """timm ``VisionTransformer``-like models whose blocks use timm's ``Attention``."""

    family = "timm"
    attention, block = TimmAttention, TimmBlock
    attention_label, block_label = "timm's Attention", "timm's Block"

    @classmethod
    def claims(cls, model: nn.Module) -> bool:
        """Every timm-like model that no other timm kind claims (the constructor refuses what it cannot explain)."""
        if not timm_like(model):
            return False
        return not any(issubclass(a, TimmAdapter) and a is not cls and a.claims(model) for a in ADAPTERS)

    # ------------------------------------------------------------------ attention
    def qkv(self, b: int, x: Tensor, rows: Optional[int] = None, ctx: Any = None) -> Tuple[Tensor, Tensor, Tensor]:
        attn = self.attns[b]
        B, N, _ = x.shape
        q, k, v = attn.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if rows is not None:
            q = q[:, :, :rows]
        return attn.q_norm(q), attn.k_norm(k), v

    def attn_forward(self, b: int, core, active: Callable[[], bool]) -> Callable:
        attn = self.attns[b]

        def forward(x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                    rows: Optional[int] = None) -> Tensor:
            if not active():  # not inside a DAAM call: exactly timm's computation
                return type(attn).forward(attn, x, attn_mask=attn_mask, is_causal=is_causal)
            check_self_attention_call(f"blocks[{b}].attn", attn_mask, is_causal)
            return core(x, rows, None)

        return forward

    # ------------------------------------------------------------------ row reduction
    def can_reduce_last_block(self) -> bool:
        return self.head_rows is not None and type(self.blocks[-1]) is TimmBlock

    def last_block_forward(self, rows: Callable[[], Optional[int]]) -> Callable:
        blk = self.blocks[-1]

        def forward(x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False) -> Tensor:
            R = rows()
            if R is None:
                return type(blk).forward(blk, x, attn_mask=attn_mask, is_causal=is_causal)
            a = blk.attn(blk.norm1(x), attn_mask=attn_mask, is_causal=is_causal, rows=R)
            xr = x[:, :R] + blk.drop_path1(blk.ls1(a))
            return xr + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(xr))))

        return forward

    def can_reduce_first_block(self) -> bool:
        return self.pool == "token" and len(self.blocks) > 1 and type(self.blocks[0]) is TimmBlock

    def first_block_forward(self, split: Callable[[], bool]) -> Callable:
        blk = self.blocks[0]

        def forward(x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False) -> Tensor:
            if not split():
                return type(blk).forward(blk, x, attn_mask=attn_mask, is_causal=is_causal)
            xm = x + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(x), attn_mask=attn_mask, is_causal=is_causal)))
            head = xm[:, :1]                                   # the only row with a graph
            y0 = head + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(head))))
            with torch.no_grad():
                rest = xm[:, 1:]
                y1 = rest + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(rest))))
            return torch.cat([y0, y1], dim=1)

        return forward

    # ------------------------------------------------------------------ direct (docs/method.md §7)
    def residual_weights(self, b: int) -> Tuple[Tensor, Optional[Tensor]]:
        ls = self.blocks[b].ls1
        if isinstance(ls, nn.Identity):
            gamma = None
        elif isinstance(ls, TimmLayerScale):
            gamma = ls.gamma
        else:
            raise ValueError(f"unknown layer-scale module {type(ls).__name__}")
        return self.blocks[b].attn.proj.weight, gamma
