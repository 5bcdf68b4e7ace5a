"""timm ``Beit`` (BEiT / BEiT v2) with BEiT's ``Attention``: the relative position bias, per
block and shared, is added to the captured [class] row and passed to SDPA as its mask.

Refused with the reason: subclasses of BEiT's attention (what :class:`TimmAdapter` refuses).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from torch import Tensor, nn

from .base import register
from .timm_base import TimmAdapter, biased_qkv

__all__ = ["TimmBeitAdapter"]

try:
    from timm.models.beit import Attention as BeitAttention
    from timm.models.beit import Block as BeitBlock
except ImportError:  # pragma: no cover - older timm: the family is absent
    BeitAttention = BeitBlock = None


class TimmBeitAdapter(TimmAdapter):
    """timm ``Beit`` models whose blocks use BEiT's ``Attention`` (see the module docstring)."""

    family = "timm-beit"
    attention, block = BeitAttention, BeitBlock
    attention_label, block_label = "BEiT's Attention", "BEiT's Block"

    @classmethod
    def accepts(cls, attn: Optional[nn.Module]) -> bool:
        return type(attn) is BeitAttention

    # ------------------------------------------------------------------ attention
    def qkv(self, b: int, x: Tensor, rows: Optional[int] = None, ctx: Any = None) -> Tuple[Tensor, Tensor, Tensor]:
        q, k, v = biased_qkv(self.attns[b], x, self.num_heads, self.head_dim)
        return (q[:, :, :rows] if rows is not None else q), k, v

    def attn_bias(self, b: int, ctx: Any = None) -> Optional[Tensor]:
        """The block's relative position bias plus the model's shared one (``ctx``), (1, H, N, N) or None."""
        attn = self.attns[b]
        bias = attn._get_rel_pos_bias() if attn.relative_position_bias_table is not None else None
        if ctx is not None:
            bias = ctx if bias is None else bias + ctx
        if bias is not None and bias.dim() == 3:             # (H, N, N) -> (1, H, N, N)
            bias = bias.unsqueeze(0)
        return bias

    def attn_forward(self, b: int, core, active: Callable[[], bool]) -> Callable:
        attn = self.attns[b]

        def forward(x: Tensor, shared_rel_pos_bias: Optional[Tensor] = None, rows: Optional[int] = None) -> Tensor:
            if not active():  # not inside a DAAM call: exactly timm's computation
                return type(attn).forward(attn, x, shared_rel_pos_bias=shared_rel_pos_bias)
            return core(x, rows, shared_rel_pos_bias)

        return forward


if BeitAttention is not None:
    register(TimmBeitAdapter)
