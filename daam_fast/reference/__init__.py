"""The pure-PyTorch reference of DAAM, written straight from docs/method.md §1-4 and §7.

Slow on purpose and independent of the fast path's code: explicit (unfused) attention
with the full N x N softmax (q, k, v and the output projection taken from the model's
adapter, :mod:`daam_fast.adapters`; besides the adapter it shares only the session, the
targets, the one explicit softmax :func:`daam_fast._rows.softmax_rows` and the result's
constructor with the fast path), coefficients for every row of every block's T_b, the literal
decomposition S_b[n, c] = a_b^{h(c)}[n] v_b[n, c] and the channel sum. It is the oracle of
every test. Rendering's reference is :func:`daam_fast.render.render` (docs/method.md §5).

One module per method gives the coefficients (``coefficients(adapter, x, store, target)``,
``support(adapter)``, optionally its own attention ``core(adapter, b, store)`` with
:func:`~daam_fast.reference._explicit.explicit_core`'s signature and store format), listed in
``_MODULES``: "grad" (:mod:`.grad`), "direct" (:mod:`.direct`), "row" (:mod:`.row`).
"""
from __future__ import annotations

import copy
import importlib

import torch
from torch import Tensor, nn

from .._checks import Checks, check_images
from .._removed import REMOVED_CALL_KEYWORDS, reject_keywords
from .._session import frozen, patched
from ..adapters import get_adapter
from ..result import DAAMResult
from ..targets import TargetLike, as_target
from ._explicit import explicit_core

__all__ = ["daam_reference"]

_MODULES = (
    "grad",
    "direct",
    "row",
)

REFERENCES = {name: importlib.import_module(f"{__name__}.{name}") for name in _MODULES}


def daam_reference(model: nn.Module, images: Tensor, target: TargetLike = None, *,
                   dtype: torch.dtype = torch.float32, normalize: bool = False, method: str = "grad",
                   heads: bool = False, **removed) -> DAAMResult:
    """DAAM maps computed the slow, literal way (the oracle for every fast path).

    Args:
        model: any model :func:`daam_fast.adapters.get_adapter` accepts (timm, Hugging Face,
            torchvision ViTs, DINO / DINOv2 checkpoints). Not modified: a float64 run works
            on a deep copy.
        images: (B, C, H, W) normalised model input.
        target: as for :meth:`daam_fast.DAAM.__call__` (:mod:`daam_fast.targets`): None, an
            int, (B,) class indices, ``TopK(k)``, ``BankTarget(bank)`` (model without a head,
            docs/method.md §4; None there uses the label-free weights), ``Similarity(query)``
            or a callable ``f(output) -> (B,)``.
        dtype: float32 or float64 (computed on a copy of the model in that dtype).
        normalize: per-block min-max normalisation of L_b (off by default, as the authors' demos).
        method: "grad" (the paper: G_b = dY/dT_b[0] by autograd), "direct" (docs/method.md
            §7, literally: G_b = proj_b.weight^T (ls_b.gamma * dY/dx_L[0]), dY/dx_L by autograd)
            or "row" (docs/method.md §8: the explicit softmax with the other tokens' keys and
            values detached, G_b by autograd).
        heads: also return the per-head terms sum_{c in head h} G_b[c] S_b[n, c] as
            ``head_maps`` (B, L, H, h, w), not normalised.

    Returns:
        DAAMResult with block_maps / maps (B, L, h, w) in ``dtype``, method "reference"
        ("reference-<method>" for other methods).

    Example:
        >>> ref = daam_reference(model, x, dtype=torch.float64)
        >>> torch.testing.assert_close(DAAM(model)(x).maps, ref.maps.float(), rtol=1e-4, atol=1e-6)
    """
    reject_keywords("daam_reference()", removed, REMOVED_CALL_KEYWORDS)
    if method not in REFERENCES:
        raise ValueError(f"method={method!r}: expected one of {', '.join(map(repr, REFERENCES))}")
    ref = REFERENCES[method]
    adapter = get_adapter(model)
    check_images(images, adapter)
    why = ref.support(adapter)
    if why is not None:
        raise ValueError(f"method={method!r} cannot explain this model: {why}")
    tgt = as_target(target, adapter, images.shape[0])
    h, w = adapter.grid(images)
    m = model
    if next(model.parameters()).dtype != dtype:
        m = copy.deepcopy(model).to(dtype)
    adapter = get_adapter(m)
    tgt.adapter = adapter
    P, H, d = adapter.num_prefix, adapter.num_heads, adapter.head_dim
    store: list = []
    core = getattr(ref, "core", explicit_core)            # a method may bring its own literal attention
    with frozen(m), patched(adapter, lambda b: core(adapter, b, store)), torch.enable_grad():
        x = tgt.expand(images).detach().to(dtype).requires_grad_(True)
        grads, scored = ref.coefficients(adapter, x, store, tgt)
    Checks(tgt.deferred()).raise_first()           # e.g. a class index on the device out of range
    relu = tgt.relu_coefficients()
    block_maps, head_maps = [], []
    for s, G in zip(store, grads):
        A, v = s["A"], s["v"]
        B, N = A.shape[0], A.shape[-1]
        if adapter.pool == "token":
            a = A[:, :, 0, :]                       # (B, H, N): row 0 of the softmax
            g = G[:, 0, :]                          # (B, C):    dY / dT_b[0]
        else:                                       # mean-pooled: mean patch query row (docs/method.md §7)
            a = A[:, :, P:, :].mean(dim=2)
            g = G[:, P:, :].sum(dim=1)
        v_tok = v.transpose(1, 2).reshape(B, N, H * d)                      # v_b[n, c]
        a_chan = a.transpose(1, 2).repeat_interleave(d, dim=2)              # a^{h(c)}[n]
        S = a_chan * v_tok                                                  # S_b (B, N, C)
        coef = g.clamp_min(0) if relu else g
        terms = S * coef[:, None, :]                                        # (B, N, C)
        L = terms.sum(dim=-1).clamp_min(0)[:, P:]                           # (B, N - P)
        if heads:
            head_maps.append(terms.reshape(B, N, H, d).sum(dim=-1).transpose(1, 2)[:, :, P:])     # (B, H, N - P)
        block_maps.append(L)
    return DAAMResult.from_block_maps(
        torch.stack(block_maps, dim=1), **scored.reported(), normalize=normalize, grid=(h, w), topk=tgt.per_image,
        method="reference" if method == "grad" else f"reference-{method}",
        head_maps=torch.stack(head_maps, dim=1) if heads else None)
