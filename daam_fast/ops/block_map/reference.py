"""Pure-PyTorch reference of the fused ``block_map`` op (docs/method.md §1 and §3).

For one block b, with the [class] query q_cls, keys k, values v and channel
coefficients g (already ReLU-ed by the caller in supervised mode), per image:

    a^h[n]     = softmax_n( scale * <q_cls^h, k^h[n]> )        (row 0 of A_b^h)
    t^h[n]     = a^h[n] * <g^h, v^h[n]>                         (head term, before the ReLU)
    L[n]       = ReLU( sum_h t^h[n] )              for n = prefix .. N-1

which equals ReLU(sum_c g[c] * S_b[n, c]) with S_b[n, c] = a^{h(c)}[n] v[n, c]. The row
itself is ``daam_fast.ops.cls_attention.reference.cls_row`` (the one copy of that math).
"""
from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import Tensor

from ..cls_attention.reference import cls_row


def block_map_reference(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float,
                        prefix: int = 0, heads: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Per-block DAAM map from the [class] query, keys, values and coefficients.

    Args:
        q_cls: (B, H, d) query of the [class] token (after any q-norm).
        k: (B, H, N, d) keys (after any k-norm); any strides.
        v: (B, H, N, d) values; any strides.
        g: (B, H, d) channel coefficients G_b split per head (ReLU applied by the caller
            where the method asks for it).
        scale: softmax scale, usually d ** -0.5.
        prefix: number of prefix tokens P; they are dropped from the output.
        heads: also return each head's term t^h[n] (before the ReLU).

    Returns:
        (B, N - prefix) float32 map (float64 if the inputs are float64); with ``heads``,
        ``(map, head_terms (B, H, N - prefix))`` where ``relu(head_terms.sum(1)) == map``.
    """
    dt = torch.float64 if q_cls.dtype == torch.float64 else torch.float32
    a = cls_row(q_cls, k, scale)
    w = torch.einsum("bhd,bhnd->bhn", g.to(dt), v.to(dt))
    terms = (a * w)[:, :, prefix:]
    maps = terms.sum(dim=1).clamp_min(0)
    return (maps, terms) if heads else maps
