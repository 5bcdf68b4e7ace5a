"""Baseline explanations for ViTs, returned as :class:`DAAMResult` (same rendering, same metrics).

- :func:`attention_map`: the raw [class] attention row of the last block, mean of heads (L = 1).
- :func:`rollout`: attention rollout (Abnar & Zuidema, ACL 2020) with head fusion and discard
  ratio, one map per block (the rollout through blocks 1..b).
- :func:`grad_rollout`: gradient-weighted rollout (Chefer, Gur & Wolf, ICCV 2021, "Generic
  attention-model explainability"), one map per block.
- :func:`gradcam`: Grad-CAM (Selvaraju et al. 2017) on the last block's attention input (its
  ``norm1`` output), as pytorch-grad-cam applies it to ViTs (L = 1).

All are batched (each image its own target) and work with fused attention ON, on every model
family of :mod:`daam_fast.adapters` (timm, Hugging Face, torchvision): for the duration of one
call each block's attention forward is replaced, through the model's adapter, by one that runs
the family's own q / k / v projection, SDPA (with any attention bias) and output ops and hands
q, k, v and the attention output T to the baseline; everything is restored on exit, also on error. The model is never patched
permanently and no parameter gradient is computed.

Memory: the [class] attention needs O(B H N) per block. Rollout and gradient rollout are
inherently O(N^2): they multiply full N x N attention matrices, so they compute one
block's (B, H, N, N) softmax at a time from q and k (plain rollout, during the forward) and
keep the (B, N, N) rollout matrix; gradient rollout also keeps q, k, v of every block until
the backward has given dY/dT_b, then forms dY/dA_b = dY/dT_b v_b^T per head one block at a
time (T_b = A_b v_b, so this is exactly autograd's gradient of the attention).

Example:
    >>> from daam_fast import baselines, render
    >>> res = baselines.rollout(model, x, discard_ratio=0.9, head_fusion="max")
    >>> res.maps.shape            # (B, L, h, w): the rollout through each block
    >>> frames = render(res.maps[:, -1:], images=rgb)
"""
from __future__ import annotations

from typing import Callable, ContextManager, List, Optional

import torch
from torch import Tensor, nn

from ._capture import bias_mask, block_attention
from ._checks import Checks, check_images
from ._removed import REMOVED_CALL_KEYWORDS, reject_keywords
from ._rows import attention_row, query_row, softmax_rows
from ._session import Patches, frozen, in_this_call, patched
from .adapters import Adapter, get_adapter
from .result import DAAMResult
from .targets import Scored, Target, TargetLike, as_target

__all__ = ["BASELINES", "attention_map", "rollout", "grad_rollout", "gradcam", "explain"]

BASELINES = ("attention", "rollout", "grad_rollout", "gradcam")
HEAD_FUSIONS = ("mean", "max", "min")


# ---------------------------------------------------------------------------------- capture
def _capture(adapter: Adapter, on_block: Callable) -> ContextManager[Patches]:
    """Each block's attention forward replaced (through the model's adapter: timm, Hugging Face,
    torchvision) by the shared attention core (:func:`daam_fast._capture.block_attention`: the
    family's own q / k / v, SDPA and output ops), calling ``on_block(b, q, k, v, T, bias, x)``
    on the way; restored on exit."""

    def make_core(b: int):
        def core(x: Tensor, rows: Optional[int], ctx) -> Tensor:
            att = block_attention(adapter, b, x, rows, ctx)                                 # fused; T (B, R, C)
            T = on_block(b, att.q, att.k, att.v, att.T, bias_mask(att.bias, att.q), x)
            return adapter.attn_out(b, T, x, rows)

        return core

    return patched(adapter, make_core)


def _setup(model: nn.Module, images: Tensor, target: TargetLike, need_score: bool):
    """(adapter, bound target, grid, images as the model runs them)."""
    adapter = get_adapter(model)
    check_images(images, adapter)
    if need_score and adapter.num_classes == 0 and target is None:
        raise ValueError("this baseline needs a classifier head (a target logit to differentiate); "
                         "the model has num_classes=0: pass a target scoring the feature (e.g. a callable)")
    tgt = as_target(target, adapter, images.shape[0])
    return adapter, tgt, adapter.grid(images), tgt.expand(images)


def _scored(out, tgt: Target, need_score: bool) -> Scored:
    """The target's scores of the output (Y = y.sum() when differentiated)."""
    if isinstance(out, tuple):
        out = out[0]
    if not need_score:
        out = out.detach()
    scored = tgt.score(out)
    Checks(tgt.deferred()).raise_first()       # e.g. a class index on the device out of range: never a clamped map
    return scored


def _result(rows: List[Tensor], adapter: Adapter, grid, scored: Scored, tgt: Target, method: str,
            maps_rows: Optional[List[Tensor]] = None) -> DAAMResult:
    """The result from one (B, N) row per block (the patch entries are the map), and with
    ``maps_rows`` the accumulated maps of a method that does not sum the blocks."""
    P = adapter.num_prefix
    patches = lambda rs: torch.stack([r[:, P:] for r in rs], dim=1)  # noqa: E731  (B, L, N - P)
    return DAAMResult.from_block_maps(patches(rows), **scored.reported(), method=method, grid=grid,
                                      topk=tgt.per_image, maps=None if maps_rows is None else patches(maps_rows))


# ---------------------------------------------------------------------------------- baselines
def attention_map(model: nn.Module, images: Tensor, target: TargetLike = None) -> DAAMResult:
    """Raw attention of the last block: the [class] row of the softmax, mean of heads.

    map[n] = (1/H) sum_h softmax(q_L^h[0] . k_L^h[n] * d^-0.5), patch tokens n only (for a
    mean-pooled model the patch rows are averaged). Class-agnostic; the targets are only
    reported. O(B H N d) extra work, no N x N matrix.

    Args:
        model: any model :class:`daam_fast.DAAM` accepts.
        images: (B, C, H, W) normalised model input.
        target: as for DAAM (:mod:`daam_fast.targets`): reported in ``targets`` only (with
            top-k, each image's rows repeat the same map).

    Returns:
        DAAMResult with block_maps = maps (B, 1, h, w), method "attention".
    """
    adapter, tgt, grid, x = _setup(model, images, target, need_score=False)
    L = adapter.depth
    keep: dict = {}

    def on_block(b, q, k, v, T, bias, x):
        if b == L - 1:
            with torch.no_grad():
                a = attention_row(q, k, adapter.scale(b), adapter.num_prefix, adapter.pool, bias)
                keep["row"] = a.float().mean(dim=1)                              # (B, N)
        return T

    with frozen(model), _capture(adapter, on_block), torch.no_grad():
        out = adapter.run(x)
    return _result([keep["row"]], adapter, grid, _scored(out, tgt, False), tgt, "attention")


def _fuse_heads(A: Tensor, head_fusion: str) -> Tensor:
    if head_fusion == "mean":
        return A.mean(dim=1)
    if head_fusion == "max":
        return A.amax(dim=1)
    return A.amin(dim=1)


def _discard(Af: Tensor, ratio: float) -> Tensor:
    """Zero the floor(ratio N^2) smallest entries of each (N, N) matrix, never the [class]-to-[class] one."""
    B, N, _ = Af.shape
    n = int(N * N * ratio)
    if n <= 0:
        return Af
    flat = Af.reshape(B, N * N).clone()
    scores = flat.clone()
    scores[:, 0] = float("inf")
    idx = scores.topk(min(n, N * N - 1), dim=1, largest=False).indices
    flat.scatter_(1, idx, 0.0)
    return flat.reshape(B, N, N)


def rollout(model: nn.Module, images: Tensor, target: TargetLike = None, discard_ratio: float = 0.9,
            head_fusion: str = "mean") -> DAAMResult:
    """Attention rollout (Abnar & Zuidema 2020), per block, batched.

    Per block b: A_b = fuse_h(softmax(q k^T d^-0.5)) (mean / max / min over heads), the
    floor(discard_ratio N^2) smallest entries set to 0 (never [class]-to-[class]; as in
    jacobgil/vit-explain), Ã_b = (A_b + I) / 2 with rows renormalised to sum 1, and
    R_b = Ã_b R_{b-1}, R_0 = I. maps[:, b] = R_b[0, P:] (the rollout through block b);
    block_maps[:, b] = Ã_b[0, P:] (block b alone). For a mean-pooled model the patch rows
    are averaged instead of row 0. Class-agnostic (targets are only reported).

    Memory: O(B N^2) for R plus one block's (B, H, N, N) softmax at a time (inherent to rollout).

    Args:
        model: any model :class:`daam_fast.DAAM` accepts.  images: (B, C, H, W) normalised model input.
        target: as for DAAM (:mod:`daam_fast.targets`), reported only.
        discard_ratio: in [0, 1); 0 is the original method (jacobgil's default: 0.9).
        head_fusion: "mean" (original), "max" or "min".

    Returns:
        DAAMResult: maps (B, L, h, w) rollout through each block (``maps`` is NOT a cumulative
        sum of ``block_maps`` here: rollout accumulates by matrix product), method "rollout".
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion={head_fusion!r}: expected one of {', '.join(HEAD_FUSIONS)}")
    if not 0.0 <= float(discard_ratio) < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    adapter, tgt, grid, x = _setup(model, images, target, need_score=False)
    P, pool = adapter.num_prefix, adapter.pool
    st: dict = {"R": None, "rows": [], "block_rows": []}

    def on_block(b, q, k, v, T, bias, x):
        with torch.no_grad():
            A = _discard(_fuse_heads(softmax_rows(q, k, adapter.scale(b), bias).float(), head_fusion), discard_ratio)
            N = A.shape[-1]
            A = (A + torch.eye(N, device=A.device)) / 2
            A = A / A.sum(dim=-1, keepdim=True)
            st["R"] = A if st["R"] is None else A @ st["R"]
            st["block_rows"].append(query_row(A, P, pool))
            st["rows"].append(query_row(st["R"], P, pool))
        return T

    with frozen(model), _capture(adapter, on_block), torch.no_grad():
        out = adapter.run(x)
    return _result(st["block_rows"], adapter, grid, _scored(out, tgt, False), tgt, "rollout", maps_rows=st["rows"])


def grad_rollout(model: nn.Module, images: Tensor, target: TargetLike = None) -> DAAMResult:
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf 2021, generic attention explainability).

    Per block: Ā_b = mean_h( (dY/dA_b^h ⊙ A_b^h)^+ ), with Y the target's score and A_b the
    softmax attention; R_b = R_{b-1} + Ā_b R_{b-1}, R_0 = I. maps[:, b] = R_b[0, P:] (through
    block b), block_maps[:, b] = Ā_b[0, P:]. dY/dA_b^h = dY/dT_b^h (v_b^h)^T (T = A v), taken
    from one backward that stops at block 1's T, so the forward keeps fused attention.

    Memory: q, k, v of every block until the backward ends, then one (B, H, N, N) softmax and
    gradient at a time and the (B, N, N) matrix R (inherent to rollout).

    Args:
        model: any model :class:`daam_fast.DAAM` accepts; without a classifier head, a
            target that scores the feature must be given.  images: (B, C, H, W) normalised.
        target: as for DAAM (:mod:`daam_fast.targets`): None (each image's argmax), an int,
            (B,) class indices, ``TopK(k)``, a callable ``f(output) -> (B,)`` or another target object.

    Returns:
        DAAMResult: maps (B, L, h, w) (rollout through each block; not a cumulative sum of
        ``block_maps``), method "grad_rollout".
    """
    adapter, tgt, grid, x = _setup(model, images, target, need_score=True)
    P, pool = adapter.num_prefix, adapter.pool
    saved: list = []

    def on_block(b, q, k, v, T, bias, x):
        if not T.requires_grad:          # frozen parameters: the graph starts at block 1's T
            T.requires_grad_(True)
        saved.append((adapter.scale(b), q.detach(), k.detach(), v.detach(), T, None if bias is None else bias.detach()))
        return T

    with frozen(model), _capture(adapter, on_block), torch.enable_grad():
        out = adapter.run(x)
        scored = _scored(out, tgt, True)
        grads = torch.autograd.grad(scored.y.sum(), [s[4] for s in saved])
    R = None
    rows, block_rows = [], []
    with torch.no_grad():
        for (scale, q, k, v, _, bias), gT in zip(saved, grads):
            B, H, N, d = v.shape
            A = softmax_rows(q, k, scale, bias).float()                            # (B, H, N, N)
            gA = gT.float().reshape(B, N, H, d).transpose(1, 2) @ v.float().transpose(-2, -1)
            cam = (gA * A).clamp_min(0).mean(dim=1)                                 # (B, N, N)
            if R is None:
                R = torch.eye(N, device=cam.device).expand(B, N, N)
            R = R + cam @ R
            block_rows.append(query_row(cam, P, pool))
            rows.append(query_row(R, P, pool))
    return _result(block_rows, adapter, grid, scored, tgt, "grad_rollout", maps_rows=rows)


def gradcam(model: nn.Module, images: Tensor, target: TargetLike = None) -> DAAMResult:
    """Grad-CAM on the last block (the usual ViT setting: ``blocks[-1].norm1``, patch tokens as the grid).

    With X (B, N, C) the output of the last block's norm1 and Y the target's score:
    alpha_c = mean_{n >= P} dY/dX[n, c];  map[n] = ReLU( sum_c alpha_c X[n, c] ), n >= P.
    (pytorch-grad-cam's GradCAM with ``target_layers=[model.blocks[-1].norm1]``, before its
    rescaling to [0, 1].)

    Args:
        model: any model :class:`daam_fast.DAAM` accepts; without a classifier head, a
            target that scores the feature must be given.  images: (B, C, H, W) normalised.
        target: as for DAAM (:mod:`daam_fast.targets`).

    Returns:
        DAAMResult with block_maps = maps (B, 1, h, w), method "gradcam".
    """
    adapter, tgt, grid, x = _setup(model, images, target, need_score=True)
    P, L = adapter.num_prefix, adapter.depth
    keep: dict = {}

    def on_block(b, q, k, v, T, bias, x):
        if b == L - 1:
            keep["X"] = x                # the attention input: the last block's norm1 output
        return T

    # the last block's attention input must start the graph when the parameters are frozen
    def pre_hook(_mod, args, kwargs):
        x = args[0] if args else kwargs.get("x", kwargs.get("hidden_states", kwargs.get("query")))
        if x is not None and not x.requires_grad:
            x.requires_grad_(True)

    with frozen(model), _capture(adapter, on_block), torch.enable_grad():
        handle = adapter.attns[-1].register_forward_pre_hook(in_this_call(pre_hook), with_kwargs=True)   # this call only
        try:
            out = adapter.run(x)
        finally:
            handle.remove()
        scored = _scored(out, tgt, True)
        (g,) = torch.autograd.grad(scored.y.sum(), [keep["X"]])
    with torch.no_grad():
        X = keep["X"].detach().float()
        alpha = g[:, P:].float().mean(dim=1, keepdim=True)                         # (B, 1, C)
        cam = (X * alpha).sum(dim=-1).clamp_min(0)                                 # (B, N)
    return _result([cam], adapter, grid, scored, tgt, "gradcam")


def explain(model: nn.Module, images: Tensor, method: str, target: TargetLike = None, **kw) -> DAAMResult:
    """Run one baseline by name ("attention", "rollout", "grad_rollout", "gradcam").

    Args:
        model: any model :class:`daam_fast.DAAM` accepts.  images: (B, C, H, W).
        target: as for DAAM (:mod:`daam_fast.targets`).
        **kw: options of the baseline (e.g. ``discard_ratio``, ``head_fusion`` for rollout).

    Returns:
        DAAMResult (B, L, h, w).
    """
    fns = {"attention": attention_map, "rollout": rollout, "grad_rollout": grad_rollout, "gradcam": gradcam}
    reject_keywords(f"baselines.explain(method={method!r})",
                    {k: v for k, v in kw.items() if k in REMOVED_CALL_KEYWORDS}, REMOVED_CALL_KEYWORDS)
    if method not in fns:
        raise ValueError(f"unknown baseline {method!r}; expected one of {', '.join(BASELINES)}")
    return fns[method](model, images, target, **kw)
