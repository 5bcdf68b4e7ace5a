"""timm ``VisionTransformer`` family: ViT, DeiT (also distilled), register tokens, q/k-norm,
layer-scale, scale-norm, gated attention; and timm ``Eva`` (EVA / EVA-02, with or without
rotary position embeddings: the rope is applied to q and k as in timm, so the captured
[class] row honours it); and timm ``Beit`` (BEiT / BEiT v2: the relative position bias,
per block and shared, is added to the captured row and passed to SDPA as its mask).

Refused with the reason: attention pooling, ``global_pool='max'``, any other attention class.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Adapter, check_self_attention_call, register

try:  # timm is a hard dependency, but keep the error clear
    from timm.layers import Attention as TimmAttention
    from timm.layers import LayerScale as TimmLayerScale
    from timm.models.vision_transformer import Block as TimmBlock
except ImportError as e:  # pragma: no cover
    raise ImportError("daam_fast needs timm (pip install timm)") from e

try:
    from timm.models.eva import EvaAttention, EvaBlock
    from timm.layers import apply_rot_embed_cat
except ImportError:  # pragma: no cover - older timm
    EvaAttention = EvaBlock = apply_rot_embed_cat = None

try:
    from timm.models.beit import Attention as BeitAttention
    from timm.models.beit import Block as BeitBlock
except ImportError:  # pragma: no cover
    BeitAttention = BeitBlock = None

__all__ = ["TimmViTAdapter"]


def _overrides_forward(mod: nn.Module, base: type) -> bool:
    return type(mod).forward is not base.forward


@register
class TimmViTAdapter(Adapter):
    """timm ``VisionTransformer``-like models whose blocks use timm's ``Attention`` or ``EvaAttention``."""

    family = "timm"

    @classmethod
    def claims(cls, model: nn.Module) -> bool:
        return all(hasattr(model, a) for a in ("blocks", "patch_embed", "num_prefix_tokens", "forward_features",
                                                "forward_head"))

    def __init__(self, model: nn.Module):
        super().__init__(model)
        name = type(model).__name__
        blocks = list(model.blocks)
        if not blocks:
            raise ValueError(f"{name} has no transformer blocks")
        attns, kinds = [], set()
        for i, blk in enumerate(blocks):
            attn = getattr(blk, "attn", None)
            if isinstance(attn, TimmAttention) and not _overrides_forward(attn, TimmAttention):
                kinds.add("timm")
            elif EvaAttention is not None and isinstance(attn, EvaAttention) and not _overrides_forward(attn, EvaAttention):
                kinds.add("eva")
            elif BeitAttention is not None and type(attn) is BeitAttention:
                kinds.add("beit")
            elif attn is not None and hasattr(attn, "relative_position_bias_table"):
                raise ValueError(f"{name}.blocks[{i}].attn is {type(attn).__name__} with a relative position bias "
                                 "(BEiT-like): not supported, the captured [class] row would not include the bias")
            else:
                raise ValueError(f"{name}.blocks[{i}].attn is {type(attn).__name__}, not timm's Attention "
                                 "(RoPE, relative-position or fused-MLP attention variants are not supported)")
            attns.append(attn)
        if len(kinds) != 1:
            raise ValueError(f"{name}: blocks mix attention classes {sorted(kinds)}")
        self.kind = kinds.pop()
        if self.kind == "beit":
            self.family = "timm-beit"
        if self.kind == "eva":
            self.family = "timm-eva"
            for i, a in enumerate(attns):
                if getattr(a, "num_prefix_tokens", 0) != int(model.num_prefix_tokens):
                    raise ValueError(f"{name}.blocks[{i}].attn.num_prefix_tokens differs from the model's")
            if getattr(model, "rope_mixed", False):
                raise ValueError(f"{name}: depth-dependent ('mixed') rotary embeddings are not supported")
        heads = {a.num_heads for a in attns}
        dims = {getattr(a, "head_dim", None) or a.qkv.weight.shape[0] // (3 * a.num_heads) for a in attns}
        if len(heads) != 1 or len(dims) != 1:
            raise ValueError(f"{name}: blocks have different head counts / widths {heads} / {dims}")
        if getattr(model, "attn_pool", None) is not None:
            raise ValueError(f"{name} uses attention pooling (global_pool='map'): the decomposition of the "
                             "pooled token through the pooling attention is not implemented")
        num_prefix = int(model.num_prefix_tokens)
        pool = getattr(model, "global_pool", "token")
        has_cls = getattr(model, "cls_token", None) is not None
        if pool == "token":
            if not has_cls or num_prefix < 1:
                raise ValueError(f"{name}: global_pool='token' without a [class] token")
            head_rows: Optional[int] = 2 if getattr(model, "dist_token", None) is not None else 1
        elif pool == "avg":
            if getattr(model, "pool_include_prefix", False):
                raise ValueError(f"{name}: global_pool='avg' with pool_include_prefix=True is not supported")
            head_rows = None
        else:
            raise ValueError(f"{name}: global_pool={pool!r} is not supported (use 'token' or 'avg')")
        pe = model.patch_embed
        proj = getattr(pe, "proj", None)
        self.blocks, self.attns = blocks, attns
        self.num_prefix, self.num_heads, self.head_dim = num_prefix, heads.pop(), dims.pop()
        self.pool, self.head_rows = pool, head_rows
        self.num_classes = int(getattr(model, "num_classes", 0) or 0)
        self.in_chans = int(getattr(proj, "in_channels", 3)) if proj is not None else 3

    @classmethod
    def single_attention(cls, attn: nn.Module) -> "TimmViTAdapter":
        """An adapter over one timm ``Attention`` module alone (attention methods only, block 0)."""
        if not isinstance(attn, TimmAttention):
            raise ValueError(f"{type(attn).__name__} is not timm's Attention")
        ad = cls.__new__(cls)
        ad.model, ad.blocks, ad.attns, ad.kind = None, [], [attn], "timm"
        ad.num_heads, ad.head_dim = attn.num_heads, attn.head_dim
        return ad

    # ------------------------------------------------------------------ attention
    def scale(self, b: int) -> float:
        return self.attns[b].scale

    def qkv(self, b: int, x: Tensor, rows: Optional[int] = None, ctx: Any = None) -> Tuple[Tensor, Tensor, Tensor]:
        attn = self.attns[b]
        B, N, _ = x.shape
        H, d = self.num_heads, self.head_dim
        if self.kind == "timm":
            q, k, v = attn.qkv(x).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)
            if rows is not None:
                q = q[:, :, :rows]
            return attn.q_norm(q), attn.k_norm(k), v
        # EvaAttention / BEiT Attention: the same ops as timm's forwards
        if attn.qkv is not None:
            if attn.q_bias is None:
                qkv = attn.qkv(x)
            else:
                qkv_bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
                if attn.qkv_bias_separate:
                    qkv = attn.qkv(x) + qkv_bias
                else:
                    qkv = F.linear(x, weight=attn.qkv.weight, bias=qkv_bias)
            q, k, v = qkv.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q = attn.q_proj(x).reshape(B, N, H, d).transpose(1, 2)
            k = attn.k_proj(x).reshape(B, N, H, d).transpose(1, 2)
            v = attn.v_proj(x).reshape(B, N, H, d).transpose(1, 2)
        if self.kind == "beit":
            return (q[:, :, :rows] if rows is not None else q), k, v
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

    def attn_bias(self, b: int, ctx: Any = None) -> Optional[Tensor]:
        if self.kind != "beit":
            return None
        attn = self.attns[b]
        bias = attn._get_rel_pos_bias() if attn.relative_position_bias_table is not None else None
        if ctx is not None:                                  # the model's shared relative position bias
            bias = ctx if bias is None else bias + ctx
        if bias is not None and bias.dim() == 3:             # (H, N, N) -> (1, H, N, N)
            bias = bias.unsqueeze(0)
        return bias

    def attn_out(self, b: int, T: Tensor, x: Tensor, rows: Optional[int] = None) -> Tensor:
        attn = self.attns[b]
        y = attn.norm(T) if hasattr(attn, "norm") else T
        if getattr(attn, "gate", None) is not None:
            gx = x[:, :rows] if rows is not None else x
            y = y * attn.gate(gx).sigmoid()
        return attn.proj_drop(attn.proj(y))

    def attn_forward(self, b: int, core, active: Callable[[], bool]) -> Callable:
        attn = self.attns[b]
        if self.kind == "timm":
            def forward(x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                        rows: Optional[int] = None) -> Tensor:
                if not active():  # not inside a DAAM call: exactly timm's computation
                    return type(attn).forward(attn, x, attn_mask=attn_mask, is_causal=is_causal)
                check_self_attention_call(f"blocks[{b}].attn", attn_mask, is_causal)
                return core(x, rows, None)
        elif self.kind == "beit":
            def forward(x: Tensor, shared_rel_pos_bias: Optional[Tensor] = None, rows: Optional[int] = None) -> Tensor:
                if not active():
                    return type(attn).forward(attn, x, shared_rel_pos_bias=shared_rel_pos_bias)
                return core(x, rows, shared_rel_pos_bias)
        else:
            def forward(x: Tensor, rope: Optional[Tensor] = None, attn_mask: Optional[Tensor] = None,
                        is_causal: bool = False, rows: Optional[int] = None) -> Tensor:
                if not active():
                    return type(attn).forward(attn, x, rope=rope, attn_mask=attn_mask, is_causal=is_causal)
                check_self_attention_call(f"blocks[{b}].attn", attn_mask, is_causal)
                return core(x, rows, rope)
        return forward

    # ------------------------------------------------------------------ model level
    def run(self, images: Tensor) -> Tensor:
        out = self.model(images)
        return out[0] if isinstance(out, tuple) else out

    def grid(self, images: Tensor) -> Tuple[int, int]:
        model = self.model
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

    # ------------------------------------------------------------------ direct
    def direct_support(self) -> Optional[str]:
        # Blocks whose attention residual is x + gamma * proj(T) (timm's Block with ls1, EVA's and
        # BEiT's blocks with gamma_1, or no scale at all); post-norm and other blocks are refused.
        residual = tuple(c for c in (TimmBlock, EvaBlock, BeitBlock) if c is not None)
        for i, blk in enumerate(self.blocks):
            if type(blk) not in residual:
                return (f"blocks[{i}] is {type(blk).__name__}, not timm's Block, EvaBlock or BEiT's Block "
                        "(the residual path is not x + gamma * proj(T))")
            norm = getattr(blk.attn, "norm", None)
            if (norm is not None and not isinstance(norm, nn.Identity)) or getattr(blk.attn, "gate", None) is not None:
                return f"blocks[{i}].attn has a scale-norm or gate between T and proj: G_b is not proj^T(ls * dY/dx_L)"
        return None

    def final_norm(self) -> nn.Module:
        return self.model.norm

    def head(self, xL: Tensor) -> Tensor:
        out = self.model.forward_head(self.model.norm(xL))
        return out[0] if isinstance(out, tuple) else out

    def residual_weights(self, b: int) -> Tuple[Tensor, Optional[Tensor]]:
        blk = self.blocks[b]
        if type(blk) is not TimmBlock:                       # EVA / BEiT: x + gamma_1 * attn(...)
            return blk.attn.proj.weight, getattr(blk, "gamma_1", None)
        ls = blk.ls1
        if isinstance(ls, nn.Identity):
            gamma = None
        elif isinstance(ls, TimmLayerScale):
            gamma = ls.gamma
        else:
            raise ValueError(f"unknown layer-scale module {type(ls).__name__}")
        return blk.attn.proj.weight, gamma
