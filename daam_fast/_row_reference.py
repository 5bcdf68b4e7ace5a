"""The literal reference of method="row" (docs/method.md §8): slow on purpose, shares nothing
with the fast path but the adapter.

The full model runs with an explicit softmax over all N x N pairs in every block, in which the
keys and values of tokens j >= R (R = the rows the head reads) are detached: the rows 0..R-1
then depend on the other tokens only through constants, which is the row path. Autograd of Y
with respect to every block's full T_b gives G_b = dY/dT_b[0]; the maps are the literal sum
over S_b[n, c] = a_b^{h(c)}[n] v_b[n, c] (docs/method.md §1, §3).
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import Tensor, nn

from ._model import TargetLike, check_images, resolve_targets
from ._row import row_rows, row_support
from .adapters import get_adapter
from .bank import MemoryBank, dimension_weights, label_free_weights
from .result import DAAMResult

__all__ = ["row_reference"]


def _row_attention(ad, b: int, R: int, store: list):
    H, d, scale = ad.num_heads, ad.head_dim, ad.scale(b)

    def core(x: Tensor, rows, ctx) -> Tensor:
        B, N, _ = x.shape
        q, k, v = ad.qkv(b, x, None, ctx)
        k = torch.cat([k[:, :, :R], k[:, :, R:].detach()], dim=2)        # other tokens: constants
        v = torch.cat([v[:, :, :R], v[:, :, R:].detach()], dim=2)
        logits = (q * scale) @ k.transpose(-2, -1)                        # (B, H, N, N)
        bias = ad.attn_bias(b, ctx)
        if bias is not None:
            logits = logits + bias
        A = logits.softmax(dim=-1)
        T = (A @ v).transpose(1, 2).reshape(B, N, H * d)
        store.append({"A": A.detach(), "v": v.detach(), "T": T})
        return ad.attn_out(b, T, x)

    return core


def row_reference(model: nn.Module, images: Tensor, target: TargetLike = None, bank: Optional[MemoryBank] = None,
                  *, dtype: torch.dtype = torch.float64, normalize: bool = False) -> DAAMResult:
    """method="row" maps, computed literally (the oracle of the fast path).

    Args:
        model: a token-pooled model :func:`daam_fast.adapters.get_adapter` accepts. Not modified
            (a run in another dtype works on a deep copy).
        images: (B, C, H, W) normalised input.
        target: None (each image's argmax), an int, or (B,) class indices (supervised only).
        bank: MemoryBank for a model without a head (docs/method.md §4).
        dtype: float64 (default) or float32.
        normalize: per-block min-max normalisation of L_b.

    Returns:
        DAAMResult with block_maps / maps (B, L, h, w) in ``dtype``, method="reference-row".
    """
    layout = get_adapter(model)
    check_images(images, layout)
    why = row_support(layout)
    if why is not None:
        raise ValueError(why)
    if bank is not None and layout.num_classes > 0:
        raise ValueError("bank= is for models without a classifier head (num_classes=0)")
    targets = resolve_targets(target, images.shape[0], layout.num_classes, images.device)
    h, w = layout.grid(images)
    B = images.shape[0]
    m = model if next(model.parameters()).dtype == dtype else copy.deepcopy(model).to(dtype)
    lay = get_adapter(m)
    P, H, d, R = lay.num_prefix, lay.num_heads, lay.head_dim, row_rows(lay)
    store: list = []
    modes = [(mod, mod.training) for mod in m.modules()]
    m.eval()
    patched = []
    try:
        for b, attn in enumerate(lay.attns):
            patched.append((attn, attn.__dict__.get("forward")))
            attn.forward = lay.attn_forward(b, _row_attention(lay, b, R, store), lambda: True)
        with torch.enable_grad():
            x = images.detach().to(dtype).requires_grad_(True)
            out = lay.run(x)
            logits = features = weights = None
            if lay.num_classes > 0:
                logits = out
                if targets is None:
                    targets = out.argmax(dim=1)
                Y = out.gather(1, targets[:, None]).sum()
            else:
                features = out
                if bank is not None:
                    weights, targets = dimension_weights(features.to(torch.float64), bank)
                else:
                    weights = label_free_weights(features.to(torch.float64))
                    targets = torch.full((B,), -1, dtype=torch.long, device=out.device)
                Y = (weights.to(dtype) * out).sum()
            grads = torch.autograd.grad(Y, [s["T"] for s in store])
    finally:
        for attn, fwd in patched:
            if fwd is None:
                del attn.forward
            else:
                attn.forward = fwd
        for mod, mode in modes:
            mod.training = mode
    block_maps = []
    for s, G in zip(store, grads):
        A, v = s["A"], s["v"]
        N = A.shape[-1]
        a = A[:, :, 0, :]                                                  # (B, H, N)
        g = G[:, 0, :]                                                     # (B, C): dY/dT_b[0] on the row path
        S = a.transpose(1, 2).repeat_interleave(d, dim=2) * v.transpose(1, 2).reshape(B, N, H * d)
        coef = g.clamp_min(0) if lay.num_classes > 0 else g
        L = (S * coef[:, None, :]).sum(dim=-1).clamp_min(0)[:, P:]
        if normalize:
            lo, hi = L.min(dim=1, keepdim=True).values, L.max(dim=1, keepdim=True).values
            L = (L - lo) / (hi - lo + 1e-10)
        block_maps.append(L.reshape(B, h, w))
    bm = torch.stack(block_maps, dim=1).detach()
    return DAAMResult(block_maps=bm, maps=torch.cumsum(bm, dim=1), targets=targets.detach(),
                      logits=None if logits is None else logits.detach(),
                      features=None if features is None else features.detach(),
                      weights=weights, method="reference-row", grid=(h, w))
