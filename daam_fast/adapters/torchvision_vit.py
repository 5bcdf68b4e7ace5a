"""torchvision ``VisionTransformer`` (``vit_b_16`` & co.: ``nn.MultiheadAttention`` inside ``EncoderBlock``).

During a DAAM call each block's ``nn.MultiheadAttention`` forward is replaced by the same
computation on its fast path's terms: one ``in_proj`` matmul giving q, k, v, one fused
``scaled_dot_product_attention``, ``out_proj``; the [class] row is computed beside it.
Outside a call (and after the context) the module's own forward runs, including PyTorch's
native fast path in inference.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Adapter, check_self_attention_call, register

__all__ = ["TorchvisionViTAdapter"]


@register
class TorchvisionViTAdapter(Adapter):
    """torchvision ``VisionTransformer`` (see the module docstring)."""

    family = "torchvision"
    claimed = ("torchvision.models.vision_transformer:VisionTransformer",)

    def __init__(self, model: nn.Module):
        super().__init__(model)
        from torchvision.models import vision_transformer as tv
        name = type(model).__name__
        blocks = list(model.encoder.layers)
        if not blocks:
            raise ValueError(f"{name} has no encoder layers")
        attns = []
        for i, blk in enumerate(blocks):
            a = getattr(blk, "self_attention", None)
            if type(blk) is not tv.EncoderBlock or type(a) is not nn.MultiheadAttention:
                raise ValueError(f"{name}.encoder.layers[{i}] is {type(blk).__name__} with {type(a).__name__}, "
                                 "not EncoderBlock with nn.MultiheadAttention")
            if not a.batch_first or not a._qkv_same_embed_dim or a.in_proj_weight is None:
                raise ValueError(f"{name}.encoder.layers[{i}].self_attention: needs batch_first=True and one "
                                 "packed in_proj (kdim == vdim == embed_dim)")
            if a.bias_k is not None or a.add_zero_attn:
                raise ValueError(f"{name}.encoder.layers[{i}].self_attention: add_bias_kv / add_zero_attn "
                                 "are not supported")
            attns.append(a)
        self.blocks, self.attns = blocks, attns
        self.num_heads, self.head_dim = attns[0].num_heads, attns[0].head_dim
        self.num_prefix, self.pool, self.head_rows = 1, "token", 1
        heads = model.heads
        last = list(heads.children())[-1] if len(list(heads.children())) else None
        self.num_classes = int(last.out_features) if isinstance(last, nn.Linear) else 0
        self.in_chans = int(model.conv_proj.in_channels)

    # ------------------------------------------------------------------ attention
    def qkv(self, b: int, x: Tensor, rows: Optional[int] = None, ctx=None) -> Tuple[Tensor, Tensor, Tensor]:
        a = self.attns[b]
        B, N, _ = x.shape
        H, d = self.num_heads, self.head_dim
        q, k, v = F.linear(x, a.in_proj_weight, a.in_proj_bias).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)
        if rows is not None:
            q = q[:, :, :rows]
        return q, k, v

    def attn_out(self, b: int, T: Tensor, x: Tensor, rows: Optional[int] = None) -> Tensor:
        a = self.attns[b]
        return F.linear(T, a.out_proj.weight, a.out_proj.bias)

    def attn_forward(self, b: int, core, active: Callable[[], bool]) -> Callable:
        attn = self.attns[b]

        def forward(query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor] = None,
                    need_weights: bool = True, attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                    is_causal: bool = False, rows: Optional[int] = None):
            if not active():  # not inside a DAAM call: the module's own forward (and fast path)
                return type(attn).forward(attn, query, key, value, key_padding_mask=key_padding_mask,
                                          need_weights=need_weights, attn_mask=attn_mask,
                                          average_attn_weights=average_attn_weights, is_causal=is_causal)
            name = f"encoder.layers[{b}].self_attention"
            check_self_attention_call(name, attn_mask, is_causal, {"key_padding_mask": key_padding_mask})
            if key is not query or value is not query:
                raise ValueError(f"DAAM: {name}: only self-attention (query is key is value) is supported")
            return core(query, rows, None), None

        return forward

    # ------------------------------------------------------------------ model level
    def run(self, images: Tensor) -> Tensor:
        return self.model(images)

    def grid(self, images: Tensor) -> Tuple[int, int]:
        H, W = images.shape[-2:]
        s, p = self.model.image_size, self.model.patch_size
        if (H, W) != (s, s):
            raise ValueError(f"input size {(H, W)} does not match the model's image_size {(s, s)}")
        return H // p, W // p

    # ------------------------------------------------------------------ row reduction
    def can_reduce_last_block(self) -> bool:
        return True

    def last_block_forward(self, rows: Callable[[], Optional[int]]) -> Callable:
        blk = self.blocks[-1]

        def forward(input: Tensor) -> Tensor:
            R = rows()
            if R is None:
                return type(blk).forward(blk, input)
            u = blk.ln_1(input)
            a, _ = blk.self_attention(u, u, u, need_weights=False, rows=R)
            xr = input[:, :R] + blk.dropout(a)
            return xr + blk.mlp(blk.ln_2(xr))

        return forward

    # ------------------------------------------------------------------ direct
    def direct_support(self) -> Optional[str]:
        return None  # x + dropout(out_proj(T)): no layer-scale

    def final_norm(self) -> nn.Module:
        return self.model.encoder.ln

    def head(self, xL: Tensor) -> Tensor:
        return self.model.heads(self.model.encoder.ln(xL)[:, 0])

    def residual_weights(self, b: int) -> Tuple[Tensor, Optional[Tensor]]:
        return self.attns[b].out_proj.weight, None
