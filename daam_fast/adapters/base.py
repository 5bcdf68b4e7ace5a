"""The adapter interface: what the explainer and the reference need to know about a ViT family.

An adapter says where the blocks, the attention's q / k / v projections, the output
projection, the prefix tokens, the grid and the head are, and how to put a forward of the
same signature in place of an attention module's (so the fast path can keep a fused SDPA
and capture the [class] row, and the reference can use an explicit softmax). The
explainer (:mod:`daam_fast.explainer`) and the reference (:mod:`daam_fast.reference`)
talk only to adapters; nothing there knows timm, Hugging Face or torchvision.

A new family is one subclass registered with :func:`register`: ``claims(model)`` says
whether the model belongs to it (by type: by default, one of the classes it names in
``claimed``), the constructor reads the layout (raising
``ValueError`` with the reason when a claimed model cannot be explained), and the
methods below do the family-specific work.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from torch import Tensor, nn

__all__ = ["Adapter", "register", "ADAPTERS"]

# core(x, rows, ctx) -> output of the attention module (B, R, C): the explainer's or the
# reference's computation, given the attention input x (B, N, C), the number of query rows
# R (None = all N) and the family's per-call context (e.g. timm EVA's rope tensor).
Core = Callable[[Tensor, Optional[int], Any], Tensor]


class Adapter:
    """Layout and per-family operations of one model (base class; see the module docstring).

    Attributes:
        family: short name of the family ("timm", "timm-eva", "timm-beit", "hf", "torchvision").
        model: the wrapped model.
        blocks: the L transformer blocks, in order.  attns: their attention modules.
        num_prefix: P, prefix tokens ([class] first, then distillation / register tokens).
        num_heads: H.  head_dim: d.
        pool: "token" (the [class] token is the output) or "avg" (mean of patch tokens).
        head_rows: rows of the last block's output that the head reads (1, or 2 for a
            distilled model), or None when it reads every row.
        num_classes: K, or 0 for a model without a classifier head (self-supervised path).
        in_chans: input channels.
    """

    family: str = ""
    blocks: List[nn.Module]
    attns: List[nn.Module]
    num_prefix: int
    num_heads: int
    head_dim: int
    pool: str
    head_rows: Optional[int]
    num_classes: int
    in_chans: int

    def __init__(self, model: nn.Module):
        self.model = model

    # ------------------------------------------------------------------ identification
    # The model classes the family claims, as "module:Class" names, imported when first asked
    # (a family whose library is absent, or cannot be imported, claims nothing).
    claimed: Tuple[str, ...] = ()

    @classmethod
    def claims(cls, model: nn.Module) -> bool:
        """True if ``model`` belongs to this family (by type; no layout checks): by default, an
        instance of one of the classes named in ``claimed``."""
        types = _classes(cls.claimed)
        return bool(types) and isinstance(model, types)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    # ------------------------------------------------------------------ attention
    def scale(self, b: int) -> float:
        """Softmax scale of block b's attention (usually d ** -0.5)."""
        return self.head_dim ** -0.5

    def qkv(self, b: int, x: Tensor, rows: Optional[int] = None, ctx: Any = None) -> Tuple[Tensor, Tensor, Tensor]:
        """q (B, H, R, d), k, v (B, H, N, d) of block b for its attention input x (B, N, C).

        q and k are after any q/k norm (and rotary embedding). R = rows (the first rows
        queries only) or N. k and v may be views of one projection output.
        """
        raise NotImplementedError

    def attn_bias(self, b: int, ctx: Any = None) -> Optional[Tensor]:
        """Additive attention bias (1 or B, H, N, N) added to q k^T scale before the softmax, or None."""
        return None

    def attn_out(self, b: int, T: Tensor, x: Tensor, rows: Optional[int] = None) -> Tensor:
        """Output of block b's attention module from T (B, R, H*d), the input of the output projection."""
        raise NotImplementedError

    def attn_forward(self, b: int, core: Core, active: Callable[[], bool]) -> Callable:
        """A replacement for ``attns[b].forward`` with the module's own signature and return type.

        When ``active()`` is false it runs the module's own forward (exactly the library's
        computation); otherwise it checks the call (no masks), and returns what
        ``core(x, rows, ctx)`` computes, packed as the module returns it. It accepts an extra
        keyword ``rows`` (the row reduction of the last block).

        The replacement is not set on the module itself: :class:`daam_fast._session.Patches`
        routes to it only from a context (thread, asyncio task) where its explanation is
        active; every other forward of the module runs the library's code.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ model level
    def run(self, images: Tensor) -> Tensor:
        """Run the model: logits (B, K), or the pooled feature (B, C) without a head."""
        raise NotImplementedError

    def grid(self, images: Tensor) -> Tuple[int, int]:
        """(h, w) patch grid for ``images`` (B, C, H, W); ValueError if the size is not accepted."""
        raise NotImplementedError

    # ------------------------------------------------------------------ last-block row reduction
    def can_reduce_last_block(self) -> bool:
        """True if the last block can compute only the ``head_rows`` rows the head reads."""
        return False

    def last_block_forward(self, rows: Callable[[], Optional[int]]) -> Callable:
        """Replacement for ``blocks[-1].forward``: the block on the first ``rows()`` tokens only
        (its attention called with ``rows=``), or the block's own forward when ``rows()`` is None."""
        raise NotImplementedError

    def can_reduce_first_block(self) -> bool:
        """True if block 1's residual + MLP path can be split into the [class] row (with the
        autograd graph) and the other rows (without): G_1 only needs dY/dT_1[0]."""
        return False

    def first_block_forward(self, split: Callable[[], bool]) -> Callable:
        """Replacement for ``blocks[0].forward``: when ``split()``, the block's attention
        (whose output only carries a graph in row 0) and then the residual + MLP path on row 0
        with the graph and on the other rows without; else the block's own forward."""
        raise NotImplementedError

    # ------------------------------------------------------------------ method="direct" (docs/method.md §7)
    def direct_support(self) -> Optional[str]:
        """None if method="direct" applies (each block's residual is x + ls * proj(T)), else why not."""
        return f"method='direct' is not implemented for the {self.family} family"

    def final_norm(self) -> nn.Module:
        """The module whose input is x_L, the last block's output (the final norm)."""
        raise NotImplementedError

    def head(self, xL: Tensor) -> Tensor:
        """Logits (B, K) or feature (B, C) from x_L (B, R, C), through the final norm and the head."""
        raise NotImplementedError

    def residual_weights(self, b: int) -> Tuple[Tensor, Optional[Tensor]]:
        """(proj.weight (C, H*d), layer-scale gamma (C,) or None) of block b's attention branch."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({type(self.model).__name__}, blocks={self.depth}, heads={self.num_heads}, "
                f"prefix={self.num_prefix}, pool={self.pool!r}, classes={self.num_classes})")


def _classes(names: Tuple[str, ...]) -> Tuple[type, ...]:
    """The classes named "module:Class", or () if one of their modules cannot be imported."""
    out = []
    for name in names:
        module, _, attr = name.partition(":")
        try:
            out.append(getattr(importlib.import_module(module), attr))
        except Exception:  # an optional library, absent or broken: its family is simply absent
            return ()
    return tuple(out)


ADAPTERS: List[Type[Adapter]] = []


def register(cls: Type[Adapter]) -> Type[Adapter]:
    """Class decorator: add an adapter family to the registry (tried in order)."""
    ADAPTERS.append(cls)
    return cls


def check_self_attention_call(name: str, attn_mask=None, is_causal: bool = False, extra: Optional[Dict] = None) -> None:
    if attn_mask is not None or is_causal:
        raise ValueError(f"DAAM: {name}: attention masks / causal attention are not supported")
    if extra:
        bad = {k: v for k, v in extra.items() if v not in (None, False)}
        if bad:
            raise ValueError(f"DAAM: {name}: unsupported attention arguments {sorted(bad)}")
