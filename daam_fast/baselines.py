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

import contextlib
from typing import Callable, Iterator, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._model import TargetLike, ViTLayout, check_images, inspect_vit, resolve_targets, token_grid
from .result import DAAMResult

__all__ = ["BASELINES", "attention_map", "rollout", "grad_rollout", "gradcam", "explain"]

BASELINES = ("attention", "rollout", "grad_rollout", "gradcam")
HEAD_FUSIONS = ("mean", "max", "min")


# ---------------------------------------------------------------------------------- capture
@contextlib.contextmanager
def _patched_attention(layout: ViTLayout, on_block: Callable) -> Iterator[None]:
    """Replace each block's attention forward (through the model's adapter: timm, Hugging Face,
    torchvision) by the family's own q / k / v, SDPA and output ops, calling
    ``on_block(b, q, k, v, T, bias, x)`` on the way; restored on exit."""
    patched: List[nn.Module] = []
    try:
        for b, attn in enumerate(layout.attns):
            if "forward" in attn.__dict__:
                raise RuntimeError(f"blocks[{b}].attn.forward is already patched (a DAAM context or another hook "
                                   "library is active on this model): run the baseline outside it")
            attn.forward = layout.attn_forward(b, _make_core(layout, b, on_block), lambda: True)
            patched.append(attn)
        yield
    finally:
        for attn in patched:
            attn.__dict__.pop("forward", None)


def _make_core(layout: ViTLayout, b: int, on_block: Callable):
    H, d = layout.num_heads, layout.head_dim
    scale = layout.scale(b)

    def core(x: Tensor, rows: Optional[int], ctx) -> Tensor:
        B = x.shape[0]
        q, k, v = layout.qkv(b, x, rows, ctx)
        bias = layout.attn_bias(b, ctx)
        mask = None if bias is None else bias[:, :, :q.shape[2]].to(q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)      # fused; (B, H, R, d)
        T = o.transpose(1, 2).reshape(B, q.shape[2], H * d)
        T = on_block(b, q, k, v, T, mask, x)
        return layout.attn_out(b, T, x, rows)

    return core


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration (flags and modes restored)."""
    modes = [(m, m.training) for m in model.modules()]
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
        for m, mode in modes:
            m.training = mode


def _setup(model: nn.Module, images: Tensor, target: TargetLike, need_head: bool):
    layout = inspect_vit(model)
    check_images(images, layout)
    if need_head and layout.num_classes == 0:
        raise ValueError("this baseline needs a classifier head (a target logit to differentiate); "
                         "the model has num_classes=0")
    targets = resolve_targets(target, images.shape[0], layout.num_classes, images.device)
    return layout, targets, token_grid(model, images)


def _outputs(out, layout: ViTLayout, targets: Optional[Tensor]):
    """(Y summed target logits or None, targets, logits, features)."""
    if isinstance(out, tuple):
        out = out[0]
    B = out.shape[0]
    if layout.num_classes > 0:
        if targets is None:
            targets = out.detach().argmax(dim=1)
        return out.gather(1, targets[:, None]).sum(), targets, out.detach().float(), None
    return None, torch.full((B,), -1, dtype=torch.long, device=out.device), None, out.detach().float()


def _query_row(M: Tensor, layout: ViTLayout) -> Tensor:
    """The row the head reads, (B, ..., N, N) -> (B, ..., N): row 0 ([class]) or the mean of the patch rows."""
    if layout.pool == "token":
        return M[..., 0, :]
    return M[..., layout.num_prefix:, :].mean(dim=-2)


def _softmax_attention(scale: float, q: Tensor, k: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """(B, H, R, N) float32 softmax(q k^T scale + bias): the O(N^2) matrix, one block at a time."""
    s = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) * scale
    if bias is not None:
        s = s + bias.float()
    return s.softmax(dim=-1)


def _result(rows: List[Tensor], layout: ViTLayout, grid, targets, logits, features, method: str,
            maps_rows: Optional[List[Tensor]] = None) -> DAAMResult:
    P = layout.num_prefix
    h, w = grid
    B = rows[0].shape[0]
    bm = torch.stack([r[:, P:] for r in rows], dim=1).float().reshape(B, len(rows), h, w)
    if maps_rows is None:
        maps = torch.cumsum(bm, dim=1)
    else:
        maps = torch.stack([r[:, P:] for r in maps_rows], dim=1).float().reshape(B, len(rows), h, w)
    return DAAMResult(block_maps=bm, maps=maps, targets=targets, logits=logits, features=features,
                      method=method, grid=(h, w))


# ---------------------------------------------------------------------------------- baselines
def attention_map(model: nn.Module, images: Tensor, target: TargetLike = None) -> DAAMResult:
    """Raw attention of the last block: the [class] row of the softmax, mean of heads.

    map[n] = (1/H) sum_h softmax(q_L^h[0] . k_L^h[n] * d^-0.5), patch tokens n only (for a
    mean-pooled model the patch rows are averaged). Class-agnostic; the targets are only
    reported. O(B H N d) extra work, no N x N matrix.

    Args:
        model: a timm ViT (as for :class:`daam_fast.DAAM`).
        images: (B, C, H, W) normalised model input.
        target: None (each image's argmax), int or (B,): reported in ``targets`` only.

    Returns:
        DAAMResult with block_maps = maps (B, 1, h, w), method "attention".
    """
    layout, targets, grid = _setup(model, images, target, need_head=False)
    L, P = layout.depth, layout.num_prefix
    keep: dict = {}

    def on_block(b, q, k, v, T, bias, x):
        if b == L - 1:
            with torch.no_grad():
                sel = slice(0, 1) if layout.pool == "token" else slice(P, None)
                a = _softmax_attention(layout.scale(b), q[:, :, sel], k, None if bias is None else bias[:, :, sel])
                keep["row"] = a.mean(dim=2).mean(dim=1)                          # (B, N)
        return T

    with _frozen(model), _patched_attention(layout, on_block), torch.no_grad():
        out = layout.run(images)
    _, targets, logits, features = _outputs(out, layout, targets)
    row = keep["row"]
    return _result([row], layout, grid, targets, logits, features, "attention")


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
        model: a timm ViT.  images: (B, C, H, W) normalised model input.
        target: reported only.
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
    layout, targets, grid = _setup(model, images, target, need_head=False)
    st: dict = {"R": None, "rows": [], "block_rows": []}

    def on_block(b, q, k, v, T, bias, x):
        with torch.no_grad():
            A = _discard(_fuse_heads(_softmax_attention(layout.scale(b), q, k, bias), head_fusion), discard_ratio)
            N = A.shape[-1]
            A = (A + torch.eye(N, device=A.device)) / 2
            A = A / A.sum(dim=-1, keepdim=True)
            st["R"] = A if st["R"] is None else A @ st["R"]
            st["block_rows"].append(_query_row(A, layout))
            st["rows"].append(_query_row(st["R"], layout))
        return T

    with _frozen(model), _patched_attention(layout, on_block), torch.no_grad():
        out = layout.run(images)
    _, targets, logits, features = _outputs(out, layout, targets)
    return _result(st["block_rows"], layout, grid, targets, logits, features, "rollout", maps_rows=st["rows"])


def grad_rollout(model: nn.Module, images: Tensor, target: TargetLike = None) -> DAAMResult:
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf 2021, generic attention explainability).

    Per block: Ā_b = mean_h( (dY/dA_b^h ⊙ A_b^h)^+ ), with Y the target logit and A_b the
    softmax attention; R_b = R_{b-1} + Ā_b R_{b-1}, R_0 = I. maps[:, b] = R_b[0, P:] (through
    block b), block_maps[:, b] = Ā_b[0, P:]. dY/dA_b^h = dY/dT_b^h (v_b^h)^T (T = A v), taken
    from one backward that stops at block 1's T, so the forward keeps fused attention.

    Memory: q, k, v of every block until the backward ends, then one (B, H, N, N) softmax and
    gradient at a time and the (B, N, N) matrix R (inherent to rollout).

    Args:
        model: a timm ViT with a classifier head.  images: (B, C, H, W) normalised model input.
        target: None (each image's argmax), int or (B,) class indices.

    Returns:
        DAAMResult: maps (B, L, h, w) (rollout through each block; not a cumulative sum of
        ``block_maps``), method "grad_rollout".
    """
    layout, targets, grid = _setup(model, images, target, need_head=True)
    saved: list = []

    def on_block(b, q, k, v, T, bias, x):
        if not T.requires_grad:          # frozen parameters: the graph starts at block 1's T
            T.requires_grad_(True)
        saved.append((layout.scale(b), q.detach(), k.detach(), v.detach(), T, None if bias is None else bias.detach()))
        return T

    with _frozen(model), _patched_attention(layout, on_block), torch.enable_grad():
        out = layout.run(images)
        Y, targets, logits, features = _outputs(out, layout, targets)
        grads = torch.autograd.grad(Y, [s[4] for s in saved])
    R = None
    rows, block_rows = [], []
    with torch.no_grad():
        for (scale, q, k, v, _, bias), gT in zip(saved, grads):
            B, H, N, d = v.shape
            A = _softmax_attention(scale, q, k, bias)                              # (B, H, N, N)
            gA = gT.float().reshape(B, N, H, d).transpose(1, 2) @ v.float().transpose(-2, -1)
            cam = (gA * A).clamp_min(0).mean(dim=1)                                 # (B, N, N)
            if R is None:
                R = torch.eye(N, device=cam.device).expand(B, N, N)
            R = R + cam @ R
            block_rows.append(_query_row(cam, layout))
            rows.append(_query_row(R, layout))
    return _result(block_rows, layout, grid, targets, logits, features, "grad_rollout", maps_rows=rows)


def gradcam(model: nn.Module, images: Tensor, target: TargetLike = None) -> DAAMResult:
    """Grad-CAM on the last block (the usual ViT setting: ``blocks[-1].norm1``, patch tokens as the grid).

    With X (B, N, C) the output of the last block's norm1 and Y the target logit:
    alpha_c = mean_{n >= P} dY/dX[n, c];  map[n] = ReLU( sum_c alpha_c X[n, c] ), n >= P.
    (pytorch-grad-cam's GradCAM with ``target_layers=[model.blocks[-1].norm1]``, before its
    rescaling to [0, 1].)

    Args:
        model: a timm ViT with a classifier head.  images: (B, C, H, W) normalised model input.
        target: None (each image's argmax), int or (B,) class indices.

    Returns:
        DAAMResult with block_maps = maps (B, 1, h, w), method "gradcam".
    """
    layout, targets, grid = _setup(model, images, target, need_head=True)
    P, L = layout.num_prefix, layout.depth
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

    with _frozen(model), _patched_attention(layout, on_block), torch.enable_grad():
        handle = layout.attns[-1].register_forward_pre_hook(pre_hook, with_kwargs=True)
        try:
            out = layout.run(images)
        finally:
            handle.remove()
        Y, targets, logits, features = _outputs(out, layout, targets)
        (g,) = torch.autograd.grad(Y, [keep["X"]])
    with torch.no_grad():
        X = keep["X"].detach().float()
        alpha = g[:, P:].float().mean(dim=1, keepdim=True)                         # (B, 1, C)
        cam = (X * alpha).sum(dim=-1).clamp_min(0)                                 # (B, N)
    return _result([cam], layout, grid, targets, logits, features, "gradcam")


def explain(model: nn.Module, images: Tensor, method: str, target: TargetLike = None, **kw) -> DAAMResult:
    """Run one baseline by name ("attention", "rollout", "grad_rollout", "gradcam").

    Args:
        model: a timm ViT.  images: (B, C, H, W).  target: None, int or (B,).
        **kw: options of the baseline (e.g. ``discard_ratio``, ``head_fusion`` for rollout).

    Returns:
        DAAMResult (B, L, h, w).
    """
    fns = {"attention": attention_map, "rollout": rollout, "grad_rollout": grad_rollout, "gradcam": gradcam}
    if method not in fns:
        raise ValueError(f"unknown baseline {method!r}; expected one of {', '.join(BASELINES)}")
    return fns[method](model, images, target, **kw)
