"""Pure-PyTorch reference of the fused ``block_map`` op (SPEC sections 1 and 3).

For one block b, with the [class] query q_cls, keys k, values v and channel
coefficients g (already ReLU-ed by the caller in supervised mode), per image:

    a^h[n]  = softmax_n( scale * <q_cls^h, k^h[n]> )            (row 0 of A_b^h)
    L[n]    = ReLU( sum_h a^h[n] * <g^h, v^h[n]> )   for n = prefix .. N-1

which equals ReLU(sum_c g[c] * S_b[n, c]) with S_b[n, c] = a^{h(c)}[n] v[n, c].
"""
from __future__ import annotations

import torch
from torch import Tensor


def block_map_reference(q_cls: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float,
                        prefix: int = 0) -> Tensor:
    """Per-block DAAM map from the [class] query, keys, values and coefficients.

    Args:
        q_cls: (B, H, d) query of the [class] token (after any q-norm).
        k: (B, H, N, d) keys (after any k-norm); any strides.
        v: (B, H, N, d) values; any strides.
        g: (B, H, d) channel coefficients G_b split per head (ReLU applied by the caller
            where the method asks for it).
        scale: softmax scale, usually d ** -0.5.
        prefix: number of prefix tokens P; they are dropped from the output.

    Returns:
        (B, N - prefix) float32 map (float64 if the inputs are float64).
    """
    dt = torch.float64 if q_cls.dtype == torch.float64 else torch.float32
    q_cls, k, v, g = (t.to(dt) for t in (q_cls, k, v, g))
    a = (torch.einsum("bhd,bhnd->bhn", q_cls, k) * scale).softmax(dim=-1)
    w = torch.einsum("bhd,bhnd->bhn", g, v)
    return (a * w).sum(dim=1)[:, prefix:].clamp_min(0)


def cls_attention_row_reference(q_cls: Tensor, k: Tensor, scale: float) -> Tensor:
    """(B, H, N) softmax row of the [class] query: a^h[n] above."""
    dt = torch.float64 if q_cls.dtype == torch.float64 else torch.float32
    return (torch.einsum("bhd,bhnd->bhn", q_cls.to(dt), k.to(dt)) * scale).softmax(dim=-1)
