"""Model adapters: one small module per model family and attention kind (see :mod:`daam_fast.adapters.base`).

Families (tried in this order by :func:`get_adapter`):

- ``timm``: timm ``VisionTransformer`` / DeiT / distilled / registers with timm's ``Attention``
  (``timm_vit.py``); ``timm-eva``: timm EVA / EVA-02 (``timm_eva.py``); ``timm-beit``: timm
  BEiT (``timm_beit.py``); the parts they share in ``timm_base.py``
- ``hf``: Hugging Face ``transformers`` ViT / DeiT, optional dependency (``hf_vit.py``)
- ``torchvision``: torchvision ``VisionTransformer`` (``torchvision_vit.py``)

DINO / DINOv2 checkpoints are converted to timm beside model loading, in
:mod:`daam_fast.models` (``models/dino.py``, ``models/dinov2.py``).

Example:
    >>> from daam_fast.adapters import get_adapter
    >>> adapter = get_adapter(model)        # ValueError naming what is missing if unsupported
    >>> adapter.family, adapter.depth, adapter.num_prefix
"""
from __future__ import annotations

from typing import List

from torch import nn

from .base import ADAPTERS, Adapter, register
from . import timm_vit as _timm_vit  # noqa: F401  (registers; the order is the order tried)
from . import timm_eva as _timm_eva  # noqa: F401
from . import timm_beit as _timm_beit  # noqa: F401
from . import hf_vit as _hf_vit  # noqa: F401
from . import torchvision_vit as _tv_vit  # noqa: F401

__all__ = ["Adapter", "ADAPTERS", "get_adapter", "register", "families"]


def families() -> List[str]:
    """Names of the registered families, in the order they are tried."""
    return [a.family for a in ADAPTERS]


def _missing(model: nn.Module) -> List[str]:
    """What a model lacks for DAAM, by generic checks (for the error message)."""
    miss = []
    has_cls = any(getattr(m, a, None) is not None for m in model.modules()
                  for a in ("cls_token", "class_token"))
    if not has_cls:
        miss.append("a [class] token (no cls_token / class_token parameter)")
    names = {type(m).__name__ for m in model.modules()}
    windowed = sorted(n for n in names if "window" in n.lower() or "shift" in n.lower())
    if windowed:
        miss.append(f"global attention over all tokens (uses windowed attention: {', '.join(windowed)})")
    has_attn = any(hasattr(m, "qkv") or hasattr(m, "q_proj") or isinstance(m, nn.MultiheadAttention)
                   for m in model.modules())
    if not has_attn:
        miss.append("self-attention modules with qkv or q/k/v projections")
    seq = [n for n in ("blocks", "layers", "encoder") if hasattr(model, n)]
    staged = hasattr(model, "layers") and any(hasattr(s, "downsample") for s in getattr(model, "layers", []))
    if not seq:
        miss.append("a flat sequence of transformer blocks (no blocks / encoder.layers)")
    elif staged:
        miss.append("a flat sequence of transformer blocks at one resolution (has stages with patch merging)")
    if not any(hasattr(model, n) for n in ("patch_embed", "conv_proj", "embeddings")):
        miss.append("a patch embedding with a token grid")
    return miss or ["a layout one of the adapters recognises"]


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter of ``model``'s family.

    Args:
        model: a timm (ViT, DeiT, EVA, BEiT), Hugging Face (ViT, DeiT) or torchvision Vision
            Transformer, or a DINO / DINOv2 checkpoint loaded with :func:`load_dino` /
            :func:`load_dinov2`.

    Returns:
        Adapter: where the model's parts are (blocks, attention modules, P, H, d, pool, head
        rows, classes) and the family's operations.

    Raises:
        ValueError: the model belongs to no supported family (the message lists what it
            lacks), or belongs to one but uses a variant that cannot be explained (the
            message names it).
    """
    for cls in ADAPTERS:
        if cls.claims(model):
            return cls(model)
    name = type(model).__name__
    raise ValueError(f"{name} is not a timm VisionTransformer / EVA / BEiT, a Hugging Face ViT/DeiT nor a "
                     f"torchvision VisionTransformer (supported families: {', '.join(families())}); missing: "
                     + "; ".join(_missing(model)))
