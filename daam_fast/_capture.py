"""What a DAAM call captures in flight: the call state, the capture slots, the attention
computation of the patched forwards, and the map of a block from its slot and coefficients.

The methods (:mod:`daam_fast.methods`) decide what to keep in each block and where the
coefficients G_b come from; this module is what they share.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _config
from ._checks import Checks
from ._rows import attention_row, row_map
from .adapters import Adapter
from .ops.block_map import block_map
from .ops.cls_attention import cls_attention
from .targets import Target

__all__ = ["Attended", "CallState", "QKVSlot", "RowSlot", "bias_mask", "block_attention", "block_coefficients",
           "map_terms", "kernel_backend", "model_attention", "slot_map"]


class QKVSlot(NamedTuple):
    """Block b kept the [class] query (B, H, d) and k, v (B, H, N, d): the fused ``block_map``
    op forms the row and the map in one pass when the coefficients arrive."""

    q_cls: Tensor
    k: Tensor
    v: Tensor


class RowSlot(NamedTuple):
    """Block b's attention row a (B, H, N), formed in the forward (an attention bias,
    mean-pooling, or the row the cls_attention kernel wrote), and its values v (B, H, N, d)."""

    a: Tensor
    v: Tensor


Slot = Union[QKVSlot, RowSlot]


class CallState:
    """Everything one call holds; dropped as soon as the call ends. Active in the calling
    context only (:meth:`daam_fast._session.Patches.active`): the patched forwards read it
    with :func:`daam_fast._session.current`, so concurrent calls never see each other's.

    Attributes:
        adapter, method, target: the model's adapter, the method object, the bound target.
        relu: whether G_b is ReLU'd (docs/method.md §3).
        slots / maps / head_maps: per block, filled as the call proceeds.
        checks: value checks read once at the end of the call.
    """

    def __init__(self, adapter: Adapter, method, target: Target, backend: Optional[str],
                 reduce_rows: Optional[int], heads: bool = False, checkpoint: bool = False):
        L = adapter.depth
        self.adapter = adapter
        self.method = method
        self.target = target
        self.relu = target.relu_coefficients()
        self.backend = backend
        self.reduce_rows = reduce_rows
        self.heads = heads
        self.checkpoint = checkpoint
        self.slots: List[Optional[Slot]] = [None] * L
        self.maps: List[Optional[Tensor]] = [None] * L
        self.head_maps: List[Optional[Tensor]] = [None] * L
        self.patches = 0                         # N - P patch tokens (h * w)
        self.sinks: List[Tensor] = []            # method="grad": the maps come back as their gradients
        self.first: Optional[Tensor] = None      # where a method's backward stops
        self.split_first = False                 # block 1: graph on the [class] row of T_1 only
        self.x_last: Optional[Tensor] = None     # method="direct": the input of the final norm
        self.row = None                          # method="row": its RowCall, for the call's duration
        self.checks = Checks()


def kernel_backend(backend: Optional[str]) -> Optional[str]:
    """The backend of the cls_attention kernel when one was asked for explicitly ("triton" or
    "cuda", by ``backend=`` or ``DAAM_FAST_BACKEND``), else None.

    Under auto the kernel is not used: no GPU measurement shows it faster than the model's
    SDPA plus the O(N d) row yet, so auto keeps SDPA.
    """
    name = (backend or _config.backend()).lower()
    return name if name in ("triton", "cuda") else None


class Attended(NamedTuple):
    """Block b's attention as the model computed it: q (B, H, R, d), k, v (B, H, N, d), the
    block's additive bias (1 or B, H, N, N) or None, T (B, R, H*d) the input of the output
    projection, and row (B, H, N) float32 the [class] row when the cls_attention kernel wrote
    it, else None."""

    q: Tensor
    k: Tensor
    v: Tensor
    bias: Optional[Tensor]
    T: Tensor
    row: Optional[Tensor]


def block_attention(adapter: Adapter, b: int, x: Tensor, rows: Optional[int], ctx, *,
                    row_kernel: Optional[str] = None,
                    keep: Optional[Callable[[Tensor, Tensor, Tensor, Optional[Tensor]], None]] = None) -> Attended:
    """The attention core every patched forward shares (the methods, the baselines): block b's
    q / k / v and bias through the model's adapter, the attention, and T.

    The attention is the model's own fused SDPA (:func:`model_attention`), unless
    ``row_kernel`` names a kernel backend (:func:`kernel_backend`: a method that reads the
    [class] row in the forward) and the row is the [class] query's without a bias: then the
    cls_attention kernel writes the output and the row in one pass.

    Args:
        adapter: the model's adapter.  b: block index.  x: (B, N, C) attention input.
        rows: query rows (None: all N).  ctx: the family's per-call context (adapters.base).
        row_kernel: "triton" / "cuda" or None.
        keep: called with (q, k, v, bias) before the attention runs (it may raise to stop the
            forward there, as method="row" does after the last block's k, v).
    """
    q, k, v = adapter.qkv(b, x, rows, ctx)
    bias = adapter.attn_bias(b, ctx)                                     # e.g. BEiT's relative position bias
    if keep is not None:
        keep(q, k, v, bias)
    scale = adapter.scale(b)
    if row_kernel is not None and bias is None and adapter.pool == "token":
        o, a = cls_attention(q, k, v, scale, backend=row_kernel)
    else:
        o, a = model_attention(q, k, v, scale, bias), None
    T = o.transpose(1, 2).reshape(x.shape[0], q.shape[2], adapter.num_heads * adapter.head_dim)
    return Attended(q, k, v, bias, T, a)


def bias_mask(bias: Optional[Tensor], q: Tensor) -> Optional[Tensor]:
    """The additive attention bias (B | 1, H, N, N) cut to q's R rows, in q's dtype (None: no bias)."""
    return None if bias is None else bias[:, :, :q.shape[2]].to(q.dtype)


def model_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, bias: Optional[Tensor]) -> Tensor:
    """The model's own attention: fused SDPA of q (B, H, R, d) over k, v (B, H, N, d) with the
    block's additive bias (relative positions, or None); (B, H, R, d)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias_mask(bias, q), scale=scale)


def formed_row(st: CallState, q: Tensor, k: Tensor, scale: float, bias: Optional[Tensor]) -> Tensor:
    """(B, H, N) the row the head reads, formed now (no graph)."""
    adapter = st.adapter
    with torch.no_grad():
        return attention_row(q.detach(), k.detach(), scale, adapter.num_prefix, adapter.pool,
                             None if bias is None else bias.detach())


def map_terms(x1: Tensor, k: Optional[Tensor], v: Tensor, g: Tensor, scale: float, prefix: int,
              backend: Optional[str], heads: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """Block map (B, N - P) and, with ``heads``, the per-head terms (B, H, N - P), from the
    coefficients ``g`` (B, H, d): with ``k``, x1 is the [class] query (B, H, d) and the fused
    block_map op forms the row; without, x1 is the attention row (B, H, N) already formed
    (docs/method.md §2-§4). Shared by the call state's slots and grad's autograd sinks."""
    if k is not None:
        res = block_map(x1, k, v, g.to(k.dtype), scale, prefix, backend=backend, heads=heads)
    else:
        res = row_map(x1, v, g, prefix, heads=heads)
    return res if heads else (res, None)


def slot_map(st: CallState, slot: Slot, G: Tensor, scale: float) -> Tuple[Tensor, Optional[Tensor]]:
    """Block map (B, N - P) float32 and, with ``heads``, the per-head terms (B, H, N - P).

    Args:
        st: the call state.  slot: what the block kept.  G: (B, C) coefficients, already
            ReLU'd where the method asks for it.  scale: the block's softmax scale.
    """
    adapter = st.adapter
    g = G.reshape(G.shape[0], adapter.num_heads, adapter.head_dim)
    if isinstance(slot, QKVSlot):
        return map_terms(slot.q_cls, slot.k, slot.v, g, scale, adapter.num_prefix, st.backend, st.heads)
    return map_terms(slot.a, None, slot.v, g, scale, adapter.num_prefix, st.backend, st.heads)


def block_coefficients(grad: Tensor, pool: str, prefix: int, relu: bool) -> Tensor:
    """(B, C) G_b from dY/dT_b (B, R, C): row 0 (``pool`` "token"), or the patch rows summed
    (mean-pooled), ReLU'd with ``relu`` (docs/method.md §2, §3, §7)."""
    G = grad[:, 0] if pool == "token" else grad[:, prefix:].sum(dim=1)
    return G.clamp_min(0) if relu else G


def coefficients(st: CallState, grad: Tensor) -> Tensor:
    """:func:`block_coefficients` with the call's pooling, prefix and ReLU."""
    return block_coefficients(grad, st.adapter.pool, st.adapter.num_prefix, st.relu)
