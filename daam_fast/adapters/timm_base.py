"""What timm's ViT-like families share: the model-level layout and operations.

timm's ``VisionTransformer``, ``Eva`` and ``Beit`` expose the same model attributes
(``blocks``, ``patch_embed``, ``num_prefix_tokens``, ``global_pool``, ``forward_features`` /
``forward_head``, a final ``norm``) and differ only in their attention class (and its block).
:class:`TimmAdapter` reads the common layout and does the model-level work; one subclass per
attention kind (``timm_vit.py``, ``timm_eva.py``, ``timm_beit.py``) says which attention
class it explains and how to compute q, k, v and the forward of that class.

Refused with the reason, for every kind: attention pooling, ``global_pool='max'``,
``pool_include_prefix=True``, blocks mixing attention classes.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ADAPTERS, Adapter

try:  # timm is a hard dependency, but keep the error clear
    from timm.layers import Attention as TimmAttention
    from timm.layers import LayerScale as TimmLayerScale
    from timm.models.vision_transformer import Block as TimmBlock
except ImportError as e:  # pragma: no cover
    raise ImportError("daam_fast needs timm (pip install timm)") from e

__all__ = ["TimmAdapter", "timm_like", "TimmAttention", "TimmBlock", "TimmLayerScale"]


def timm_like(model: nn.Module) -> bool:
    """True if ``model`` has the attributes of timm's ViT-like models (no attention checks)."""
    return all(hasattr(model, a) for a in ("blocks", "patch_embed", "num_prefix_tokens", "forward_features",
                                           "forward_head"))


def first_attention(model: nn.Module) -> Optional[nn.Module]:
    """``model.blocks[0].attn``, or None."""
    blocks = list(model.blocks)
    return getattr(blocks[0], "attn", None) if blocks else None


def overrides_forward(module: nn.Module, base: type) -> bool:
    """True if ``module``'s class replaces ``base.forward`` (then it is not ``base``'s computation)."""
    return type(module).forward is not base.forward


def biased_qkv(attn: nn.Module, x: Tensor, num_heads: int, head_dim: int) -> Tuple[Tensor, Tensor, Tensor]:
    """q, k, v (B, H, N, d) of EVA's / BEiT's attention: fused ``qkv`` with the optional separate
    q / v biases (``q_bias``, ``k_bias``, ``v_bias``), or ``q_proj`` / ``k_proj`` / ``v_proj``;
    the same ops as timm's forwards."""
    B, N, _ = x.shape
    H, d = num_heads, head_dim
    if attn.qkv is not None:
        if attn.q_bias is None:
            qkv = attn.qkv(x)
        else:
            qkv_bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
            if attn.qkv_bias_separate:
                qkv = attn.qkv(x) + qkv_bias
            else:
                qkv = F.linear(x, weight=attn.qkv.weight, bias=qkv_bias)
        return qkv.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)
    q = attn.q_proj(x).reshape(B, N, H, d).transpose(1, 2)
    k = attn.k_proj(x).reshape(B, N, H, d).transpose(1, 2)
    v = attn.v_proj(x).reshape(B, N, H, d).transpose(1, 2)
    return q, k, v


class TimmAdapter(Adapter):
    """Base of the timm kinds (not registered itself; see the module docstring).

    A subclass sets ``family``, ``attention`` (the attention class it explains), ``block`` (the
    block class whose attention residual is ``x + gamma * proj(T)``, for ``method="direct"``)
    and their names in messages, and implements ``qkv`` and ``attn_forward``.
    """

    attention: type = nn.Module
    block: Optional[type] = None
    attention_label = ""          # how messages name ``attention`` and ``block``
    block_label = ""

    @classmethod
    def accepts(cls, attn: Optional[nn.Module]) -> bool:
        """True if ``attn`` is this kind's attention with the class's own forward."""
        return isinstance(attn, cls.attention) and not overrides_forward(attn, cls.attention)

    @classmethod
    def claims(cls, model: nn.Module) -> bool:
        return timm_like(model) and cls.accepts(first_attention(model))

    def __init__(self, model: nn.Module):
        super().__init__(model)
        name = type(model).__name__
        blocks = list(model.blocks)
        if not blocks:
            raise ValueError(f"{name} has no transformer blocks")
        attns = []
        for i, blk in enumerate(blocks):
            attn = getattr(blk, "attn", None)
            if not self.accepts(attn):
                raise ValueError(self._refusal(name, i, attn))
            attns.append(attn)
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
        proj = getattr(model.patch_embed, "proj", None)
        self.blocks, self.attns = blocks, attns
        self.num_prefix, self.num_heads, self.head_dim = num_prefix, heads.pop(), dims.pop()
        self.pool, self.head_rows = pool, head_rows
        self.num_classes = int(getattr(model, "num_classes", 0) or 0)
        self.in_chans = int(getattr(proj, "in_channels", 3)) if proj is not None else 3

    def _refusal(self, name: str, i: int, attn: Optional[nn.Module]) -> str:
        """Why block i's attention cannot be explained by this kind (the constructor's message)."""
        others = [a for a in ADAPTERS if issubclass(a, TimmAdapter) and a is not type(self) and a.accepts(attn)]
        if others:
            return (f"{name}: blocks mix attention classes ({self.attention_label} in blocks[0], "
                    f"{type(attn).__name__} in blocks[{i}])")
        if attn is not None and hasattr(attn, "relative_position_bias_table"):
            return (f"{name}.blocks[{i}].attn is {type(attn).__name__} with a relative position bias "
                    "(BEiT-like): not supported, the captured [class] row would not include the bias")
        return (f"{name}.blocks[{i}].attn is {type(attn).__name__}, not {self.attention_label} "
                "(RoPE, relative-position or fused-MLP attention variants are not supported)")

    # ------------------------------------------------------------------ attention
    def scale(self, b: int) -> float:
        return self.attns[b].scale

    def attn_out(self, b: int, T: Tensor, x: Tensor, rows: Optional[int] = None) -> Tensor:
        attn = self.attns[b]
        y = attn.norm(T) if hasattr(attn, "norm") else T
        if getattr(attn, "gate", None) is not None:
            gx = x[:, :rows] if rows is not None else x
            y = y * attn.gate(gx).sigmoid()
        return attn.proj_drop(attn.proj(y))

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

    # ------------------------------------------------------------------ direct (docs/method.md §7)
    def direct_support(self) -> Optional[str]:
        # Blocks whose attention residual is x + gamma * proj(T); post-norm and other blocks are refused.
        for i, blk in enumerate(self.blocks):
            if self.block is None or type(blk) is not self.block:
                return (f"blocks[{i}] is {type(blk).__name__}, not {self.block_label} "
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
        """EVA's and BEiT's blocks: ``x + gamma_1 * attn(...)`` (timm's Block overrides this)."""
        blk = self.blocks[b]
        return blk.attn.proj.weight, getattr(blk, "gamma_1", None)

