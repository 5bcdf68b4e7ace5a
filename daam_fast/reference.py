"""The pure-PyTorch reference of DAAM, written straight from SPEC sections 1-4.

Slow on purpose and independent of the fast path's code: explicit (unfused) attention
with the full N x N softmax (q, k, v and the output projection taken from the model's
adapter, :mod:`daam_fast.adapters`, the only code it shares with the fast path), autograd gradients of Y with respect to every block's full
T_b, the literal decomposition S_b[n, c] = a_b^{h(c)}[n] v_b[n, c] and the channel sum.
It is the oracle of every test. Rendering's reference is :func:`daam_fast.render.render`
(plain torch ops, SPEC section 5).
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import Tensor, nn

from ._model import TargetLike, check_images, resolve_targets
from .adapters import Adapter, get_adapter
from .bank import MemoryBank, dimension_weights, label_free_weights
from .result import DAAMResult

__all__ = ["daam_reference"]


def _explicit_attention(ad, b, store: Optional[list] = None):
    """Block b's attention with an explicit softmax (through the adapter) that records A, v and T.

    Also callable as ``_explicit_attention(timm_attention_module, store)`` (one timm
    ``Attention`` on its own, as the cross-check tests use it).
    """
    if store is None:
        from .adapters.timm_vit import TimmViTAdapter
        ad, b, store = TimmViTAdapter.single_attention(ad), 0, b
    H, d, scale = ad.num_heads, ad.head_dim, ad.scale(b)

    def core(x: Tensor, rows, ctx) -> Tensor:
        if rows is not None:
            raise RuntimeError("daam_reference: row reduction is not used by the reference")
        B, N, _ = x.shape
        q, k, v = ad.qkv(b, x, None, ctx)
        logits = (q * scale) @ k.transpose(-2, -1)                          # (B, H, N, N)
        bias = ad.attn_bias(b, ctx)
        if bias is not None:
            logits = logits + bias
        A = logits.softmax(dim=-1)
        T = (A @ v).transpose(1, 2).reshape(B, N, H * d)                    # (B, N, C)
        store.append({"A": A.detach(), "v": v.detach(), "T": T})
        return ad.attn_out(b, T, x)

    return ad.attn_forward(b, core, lambda: True)


def daam_reference(model: nn.Module, images: Tensor, target: TargetLike = None,
                   bank: Optional[MemoryBank] = None, *, dtype: torch.dtype = torch.float32,
                   normalize: bool = False, method: str = "grad") -> DAAMResult:
    """DAAM maps computed the slow, literal way (the oracle for every fast path).

    Args:
        model: any model :func:`daam_fast.adapters.get_adapter` accepts (timm, Hugging Face,
            torchvision ViTs). Not modified: a float64 run works on a deep copy.
        images: (B, C, H, W) normalised model input.
        target: None (each image's argmax), an int, or (B,) class indices. Supervised only.
        bank: MemoryBank for a model without a head (SPEC section 4); None uses the
            label-free weights ``w = minmax(f'^2 / |sum f'^2|)`` (see README).
        dtype: float32 or float64 (computed on a copy of the model in that dtype).
        normalize: per-block min-max normalisation of L_b (off by default, as the authors' demos).
        method: "grad" (the paper: G_b = dY/dT_b[0] by autograd) or "direct" (SPEC section 7,
            literally: G_b = proj_b.weight^T (ls_b.gamma * dY/dx_L[0]), dY/dx_L by autograd).

    Returns:
        DAAMResult with block_maps / maps (B, L, h, w) in ``dtype``, method="reference".
    """
    if method not in ("grad", "direct"):
        raise ValueError(f"method={method!r}: expected 'grad' or 'direct'")
    layout = get_adapter(model)
    check_images(images, layout)
    if method == "direct":
        why = layout.direct_support()
        if why is not None:
            raise ValueError(f"method='direct' cannot explain this model: {why}")
    if bank is not None and layout.num_classes > 0:
        raise ValueError("bank= is for models without a classifier head (num_classes=0)")
    targets = resolve_targets(target, images.shape[0], layout.num_classes, images.device)
    h, w = layout.grid(images)
    B = images.shape[0]
    m = model
    if next(model.parameters()).dtype != dtype:
        m = copy.deepcopy(model).to(dtype)
    lay = get_adapter(m)
    P, H, d = lay.num_prefix, lay.num_heads, lay.head_dim
    store: list = []
    saved_modes = [(mod, mod.training) for mod in m.modules()]
    m.eval()
    patched = []
    x_last: list = []
    hook = lay.final_norm().register_forward_pre_hook(lambda _mod, args: x_last.append(args[0]))
    try:
        for b, attn in enumerate(lay.attns):
            patched.append((attn, attn.__dict__.get("forward")))
            attn.forward = _explicit_attention(lay, b, store)
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
                    targets = torch.full((out.shape[0],), -1, dtype=torch.long, device=out.device)
                Y = (weights.to(dtype) * out).sum()
            if method == "grad":
                grads = torch.autograd.grad(Y, [s["T"] for s in store])
            else:
                (r,) = torch.autograd.grad(Y, x_last)                      # dY/dx_L (B, N, C)
                r = r[:, 0] if lay.pool == "token" else r[:, P:].sum(dim=1)
                grads = []
                for b in range(lay.depth):
                    proj_w, gamma = lay.residual_weights(b)
                    gamma = torch.ones_like(r[0]) if gamma is None else gamma
                    G0 = (gamma * r) @ proj_w                             # proj^T (ls * dY/dx_L[0])
                    G = G0.new_zeros(B, store[0]["T"].shape[1], G0.shape[1])
                    if lay.pool == "token":
                        G[:, 0] = G0
                    else:                                                  # summed over rows P.. below
                        G[:, P] = G0
                    grads.append(G)
    finally:
        hook.remove()
        for attn, fwd in patched:
            if fwd is None:
                del attn.forward
            else:
                attn.forward = fwd
        for mod, mode in saved_modes:
            mod.training = mode
    block_maps = []
    for s, G in zip(store, grads):
        A, v = s["A"], s["v"]
        N = A.shape[-1]
        if lay.pool == "token":
            a = A[:, :, 0, :]                       # (B, H, N): row 0 of the softmax
            g = G[:, 0, :]                          # (B, C):    dY / dT_b[0]
        else:                                       # mean-pooled: mean patch query row (SPEC 7)
            a = A[:, :, P:, :].mean(dim=2)
            g = G[:, P:, :].sum(dim=1)
        v_tok = v.transpose(1, 2).reshape(B, N, H * d)                      # v_b[n, c]
        a_chan = a.transpose(1, 2).repeat_interleave(d, dim=2)              # a^{h(c)}[n]
        S = a_chan * v_tok                                                  # S_b (B, N, C)
        coef = g.clamp_min(0) if lay.num_classes > 0 else g
        L = (S * coef[:, None, :]).sum(dim=-1).clamp_min(0)[:, P:]          # (B, N - P)
        if normalize:
            lo, hi = L.min(dim=1, keepdim=True).values, L.max(dim=1, keepdim=True).values
            L = (L - lo) / (hi - lo + 1e-10)
        if L.shape[1] != h * w:
            raise ValueError(f"{L.shape[1]} patch tokens do not fill the {h}x{w} grid")
        block_maps.append(L.reshape(B, h, w))
    bm = torch.stack(block_maps, dim=1).detach()
    return DAAMResult(block_maps=bm, maps=torch.cumsum(bm, dim=1), targets=targets.detach(),
                      logits=None if logits is None else logits.detach(),
                      features=None if features is None else features.detach(),
                      weights=weights, method="reference" if method == "grad" else "reference-direct", grid=(h, w))
