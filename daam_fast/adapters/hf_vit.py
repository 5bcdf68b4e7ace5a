"""Hugging Face ``transformers``: ``ViTModel``, ``ViTForImageClassification``, ``DeiTModel``,
``DeiTForImageClassification`` and ``DeiTForImageClassificationWithTeacher``.

The models are taken as they are, with their configured attention implementation (SDPA by
default): during a DAAM call each ``ViTAttention`` / ``DeiTAttention`` forward runs
q_proj / k_proj / v_proj, one fused ``scaled_dot_product_attention`` and o_proj, and the
[class] row is computed beside it. Headless models (``ViTModel`` / ``DeiTModel``, or
``num_labels=0``) explain the [class] token after the final ``layernorm`` (the model's own
``pooler``, a dense + tanh layer, is not used). Needs the optional ``transformers``
dependency (``pip install daam-fast[hf]``); without it this family is simply absent.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

from torch import Tensor, nn

from .base import Adapter, check_self_attention_call, register

__all__ = ["HFViTAdapter"]


@register
class HFViTAdapter(Adapter):
    """Hugging Face ViT / DeiT (see the module docstring)."""

    family = "hf"
    claimed = ("transformers.models.vit.modeling_vit:ViTPreTrainedModel",
               "transformers.models.deit.modeling_deit:DeiTPreTrainedModel")

    def __init__(self, model: nn.Module):
        super().__init__(model)
        from transformers.models.deit import modeling_deit as md
        from transformers.models.vit import modeling_vit as mv
        name = type(model).__name__
        supported = (mv.ViTModel, mv.ViTForImageClassification, md.DeiTModel, md.DeiTForImageClassification,
                     md.DeiTForImageClassificationWithTeacher)
        if not isinstance(model, supported):
            raise ValueError(f"{name} is not supported (Hugging Face classes supported: "
                             f"{', '.join(c.__name__ for c in supported)})")
        self.base = getattr(model, "vit", None) or getattr(model, "deit", None) or model
        self.deit = isinstance(self.base, md.DeiTModel)
        emb = self.base.embeddings
        if getattr(emb, "mask_token", None) is not None and not self.deit:
            pass  # a mask token is only used with bool_masked_pos, which DAAM never passes
        blocks = list(self.base.layers)
        if not blocks:
            raise ValueError(f"{name} has no transformer layers")
        attn_cls = (md.DeiTAttention, md.DeiTLayer) if self.deit else (mv.ViTAttention, mv.ViTLayer)
        attns = []
        for i, blk in enumerate(blocks):
            a = getattr(blk, "attention", None)
            if type(a) is not attn_cls[0] or type(blk) is not attn_cls[1]:
                raise ValueError(f"{name}.layers[{i}] is {type(blk).__name__} with attention {type(a).__name__}, "
                                 f"not {attn_cls[1].__name__} / {attn_cls[0].__name__}")
            if a.q_proj.out_features != a.num_attention_heads * a.head_dim:
                raise ValueError(f"{name}.layers[{i}].attention: q_proj width does not match heads x head_dim")
            attns.append(a)
        self.blocks, self.attns = blocks, attns
        self.num_heads, self.head_dim = attns[0].num_attention_heads, attns[0].head_dim
        self.num_prefix = 2 if self.deit else 1
        self.pool = "token"
        self.teacher = isinstance(model, md.DeiTForImageClassificationWithTeacher)
        self.head_rows = 2 if self.teacher else 1
        if isinstance(model, (mv.ViTModel, md.DeiTModel)):
            self.num_classes = 0
        else:
            clf = model.cls_classifier if self.teacher else model.classifier
            self.num_classes = clf.out_features if isinstance(clf, nn.Linear) else 0
        self.in_chans = int(self.base.config.num_channels)

    # ------------------------------------------------------------------ attention
    def scale(self, b: int) -> float:
        return float(self.attns[b].scaling)

    def qkv(self, b: int, x: Tensor, rows: Optional[int] = None, ctx=None) -> Tuple[Tensor, Tensor, Tensor]:
        a = self.attns[b]
        B, N, _ = x.shape
        H, d = self.num_heads, self.head_dim
        xq = x[:, :rows] if rows is not None else x
        q = a.q_proj(xq).view(B, xq.shape[1], H, d).transpose(1, 2)
        k = a.k_proj(x).view(B, N, H, d).transpose(1, 2)
        v = a.v_proj(x).view(B, N, H, d).transpose(1, 2)
        return q, k, v

    def attn_out(self, b: int, T: Tensor, x: Tensor, rows: Optional[int] = None) -> Tensor:
        return self.attns[b].o_proj(T)

    def attn_forward(self, b: int, core, active: Callable[[], bool]) -> Callable:
        attn = self.attns[b]

        def forward(hidden_states: Tensor, attention_mask: Optional[Tensor] = None, rows: Optional[int] = None,
                    **kwargs):
            if not active():  # not inside a DAAM call: exactly the library's computation
                return type(attn).forward(attn, hidden_states, attention_mask, **kwargs)
            check_self_attention_call(f"layers[{b}].attention", attention_mask)
            return core(hidden_states, rows, None), None

        return forward

    # ------------------------------------------------------------------ model level
    def run(self, images: Tensor) -> Tensor:
        if tuple(images.shape[-2:]) != self._image_size():      # other sizes: the library's interpolation
            out = self.model(images, interpolate_pos_encoding=True)
        else:
            out = self.model(images)
        if self.num_classes == 0 and hasattr(out, "last_hidden_state"):
            return out.last_hidden_state[:, 0]
        return out.logits

    def _image_size(self) -> Tuple[int, int]:
        im = self.base.embeddings.patch_embeddings.image_size
        return tuple(im) if isinstance(im, (tuple, list)) else (im, im)

    def grid(self, images: Tensor) -> Tuple[int, int]:
        """The patch grid; a size other than the configured one is run with the library's
        ``interpolate_pos_encoding=True`` (bicubic position embeddings), as HF documents."""
        pe = self.base.embeddings.patch_embeddings
        ps = pe.patch_size if isinstance(pe.patch_size, (tuple, list)) else (pe.patch_size, pe.patch_size)
        H, W = images.shape[-2:]
        if H % ps[0] or W % ps[1]:
            raise ValueError(f"input size {(H, W)} is not a multiple of the patch size {tuple(ps)} "
                             f"(the model's image_size is {self._image_size()})")
        return H // ps[0], W // ps[1]

    # ------------------------------------------------------------------ row reduction
    def can_reduce_last_block(self) -> bool:
        return True

    def last_block_forward(self, rows: Callable[[], Optional[int]]) -> Callable:
        blk = self.blocks[-1]

        def forward(hidden_states: Tensor, attention_mask: Optional[Tensor] = None, **kwargs) -> Tensor:
            R = rows()
            if R is None:
                return type(blk).forward(blk, hidden_states, attention_mask, **kwargs)
            a, _ = blk.attention(blk.layernorm_before(hidden_states), attention_mask, rows=R, **kwargs)
            xr = hidden_states[:, :R] + blk.dropout(a)
            return xr + blk.dropout(blk.mlp(blk.layernorm_after(xr)))

        return forward

    # ------------------------------------------------------------------ direct
    def direct_support(self) -> Optional[str]:
        return None  # x + dropout(o_proj(T)): no layer-scale, nothing between T and o_proj

    def final_norm(self) -> nn.Module:
        return self.base.layernorm

    def head(self, xL: Tensor) -> Tensor:
        z = self.base.layernorm(xL)
        m = self.model
        if self.teacher:
            return (m.cls_classifier(z[:, 0]) + m.distillation_classifier(z[:, 1])) / 2
        if self.base is m:
            return z[:, 0]
        return m.classifier(z[:, 0])

    def residual_weights(self, b: int) -> Tuple[Tensor, Optional[Tensor]]:
        return self.attns[b].o_proj.weight, None
