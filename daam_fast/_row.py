"""method="row" (docs/method.md §8): forward-only coefficients along the rows the head reads.

How one call works:

1. Forward without a graph. Each block's attention (patched through the adapter) runs the
   model's own computation (q / k / v projection, one fused SDPA, output projection) and
   keeps k_b and v_b (views of the projection output: nothing is copied) and, where the
   model has a position bias (BEiT), its first R rows. A pre-hook on block 1 keeps the rows
   x_1[:R] of its input. The forward stops as soon as the last block's k_L, v_L exist (its
   attention, MLP and the head never run on all tokens).
2. The row graph. From x_1[:R] (R = the rows the head reads: 1, or 2 for a distilled
   model) each block is run again on those R rows only: its own forward, with the
   attention of the R queries over [their own keys / values (in the graph), the other
   tokens' k_b, v_b (constants)]. Then the head. One ``torch.autograd.grad`` of Y with
   respect to every block's T_b[:R] gives G_b = dY/dT_b[0] along the row path:
   O(L (R C^2 + R N C)) work per image, about 3R/N of the forward.
3. Maps: the fused ``block_map`` op from the row's [class] query q_b[0], k_b, v_b and
   G_b, as for "grad" (docs/method.md §3); with a position bias, the attention row from
   the graph weights v_b directly.

The last block's map is exact, and so is every block of a depth-1 model; elsewhere the
paths through the other tokens' keys and values are dropped (docs/method.md §8).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adapters import Adapter
from .ops.block_map import block_map

__all__ = ["row_support", "RowCall", "row_rows"]


def row_support(adapter: Adapter) -> Optional[str]:
    """None if method="row" applies to the model, else the reason it does not."""
    if adapter.pool != "token" or adapter.head_rows is None:
        return ("method='row' follows the rows the head reads; a mean-pooled model (global_pool='avg') reads "
                "every patch row, so its row path is the full backward: use method='grad'")
    return None


def row_rows(adapter: Adapter) -> int:
    """R: the rows of the residual stream the head reads (the [class] row, and the distillation row)."""
    return int(adapter.head_rows)


class _Stop(BaseException):
    """Raised by the last block's attention once k_L, v_L are kept: the rest of the forward is not needed.

    A BaseException, so that a model's ``except Exception`` cannot swallow it."""


class RowCall:
    """The state of one method="row" call and the attention core that serves both of its phases.

    Use: ``core(b)`` as the attention core of block b (``adapter.attn_forward(b, core(b), active)``),
    a forward pre-hook ``grab_input`` on block 1, then :meth:`forward`, then :meth:`maps`.

    Args:
        adapter: the model's adapter (token-pooled: see :func:`row_support`).
        backend: backend of the ``block_map`` op (None: ``DAAM_FAST_BACKEND`` or auto).
    """

    def __init__(self, adapter: Adapter, backend: Optional[str] = None):
        why = row_support(adapter)
        if why is not None:
            raise ValueError(why)
        self.adapter = adapter
        self.backend = backend
        self.R = row_rows(adapter)
        L = adapter.depth
        self.phase = "forward"
        self.x1: Optional[Tensor] = None
        self.kv: List[Optional[Tuple[Tensor, Tensor, Optional[Tensor]]]] = [None] * L
        self.T: List[Optional[Tensor]] = [None] * L          # T_b[:R] in the row graph
        self.q0: List[Optional[Tensor]] = [None] * L         # (B, H, d): the [class] query, from the graph
        self.a0: List[Optional[Tensor]] = [None] * L         # (B, H, N): its attention row (bias models)

    # ------------------------------------------------------------------ capture
    def grab_input(self, _mod: nn.Module, args, kwargs) -> None:
        """Forward pre-hook (``with_kwargs=True``) on block 1: keep x_1[:R]."""
        if self.phase != "forward":
            return None
        x = args[0] if args else next(iter(kwargs.values()))
        self.x1 = x[:, :self.R].detach()
        return None

    def core(self, b: int):
        """Block b's attention core ``core(x, rows, ctx)`` (see :mod:`daam_fast.adapters.base`)."""
        ad = self.adapter
        H, d, R = ad.num_heads, ad.head_dim, self.R
        scale = ad.scale(b)
        last = b == ad.depth - 1

        def core(x: Tensor, rows: Optional[int], ctx) -> Tensor:
            B = x.shape[0]
            if self.phase == "forward":
                with torch.no_grad():
                    q, k, v = ad.qkv(b, x, rows, ctx)
                    bias = ad.attn_bias(b, ctx)
                    self.kv[b] = (k, v, None if bias is None else bias[:, :, :R])
                    if last:
                        raise _Stop()
                    mask = None if bias is None else bias[:, :, :q.shape[2]].to(q.dtype)
                    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                    T = o.transpose(1, 2).reshape(B, q.shape[2], H * d)
                    return ad.attn_out(b, T, x, rows)
            # the row graph: x is norm1(x_b[:R]), (B, R, C)
            if x.shape[1] != R or rows is not None:
                raise RuntimeError(f"method='row': block {b}'s attention got {x.shape[1]} rows in the row graph, "
                                   f"expected {R}")
            kc, vc, brow = self.kv[b]
            q, k, v = ad.qkv(b, x, None, None)                      # rows < R carry no rotary embedding
            logits = torch.cat([q @ k.transpose(-2, -1), q @ kc[:, :, R:].transpose(-2, -1)], dim=-1) * scale
            if brow is not None:
                logits = logits + brow
            a = logits.float().softmax(dim=-1).to(v.dtype)          # (B, H, R, N)
            o = a[..., :R] @ v + a[..., R:] @ vc[:, :, R:]           # (B, H, R, d)
            T = o.transpose(1, 2).reshape(B, R, H * d)
            self.T[b] = T
            self.q0[b] = q[:, :, 0].detach()
            if brow is not None:
                self.a0[b] = a[:, :, 0].detach().float()
            return ad.attn_out(b, T, x, None)

        return core

    # ------------------------------------------------------------------ the two phases
    def forward(self, images: Tensor) -> None:
        """Phase 1: the forward without a graph, stopped after the last block's k, v."""
        self.phase = "forward"
        try:
            with torch.no_grad():
                self.adapter.run(images)
        except _Stop:
            pass
        missing = [b for b, s in enumerate(self.kv) if s is None]
        if self.x1 is None or missing:
            raise RuntimeError(f"method='row': the forward did not reach blocks {missing or [0]} "
                               "(does the model run its blocks in order on one token sequence?)")

    def row_graph(self) -> Tensor:
        """Phase 2: the model's output (logits (B, K) or feature (B, C)) from the rows x_1[:R]
        through every block on R rows, with a graph from each T_b[:R] to it."""
        self.phase = "graph"
        x = self.x1.requires_grad_(True)
        for blk in self.adapter.blocks:
            x = blk(x)
            if isinstance(x, (tuple, list)):
                x = x[0]
        return self.adapter.head(x)

    def maps(self, Y: Tensor, relu: bool) -> Tensor:
        """Per-block maps (B, L, N - P) float32 from the scalar Y (summed over the batch);
        ``relu``: ReLU on G_b (a class score, docs/method.md §3), not for a self-supervised Y."""
        ad = self.adapter
        H, d, P = ad.num_heads, ad.head_dim, ad.num_prefix
        grads = torch.autograd.grad(Y, self.T)
        out = []
        with torch.no_grad():
            for b, g in enumerate(grads):
                G = g[:, 0]                                                        # (B, C)
                if relu:
                    G = G.clamp_min(0)
                k, v, brow = self.kv[b]
                B = G.shape[0]
                if brow is None:
                    out.append(block_map(self.q0[b], k, v, G.reshape(B, H, d).to(k.dtype), ad.scale(b), P,
                                         backend=self.backend))
                else:
                    w = torch.einsum("bhd,bhnd->bhn", G.reshape(B, H, d).float(), v.float())
                    out.append((self.a0[b] * w).sum(dim=1)[:, P:].clamp_min(0))
                self.kv[b] = None
        return torch.stack(out, dim=1)


def run_row(adapter: Adapter, images: Tensor, objective, relu: bool, backend: Optional[str] = None):
    """One method="row" call on a model in eval mode (parameters frozen or not).

    Patches each attention forward (restored on exit, also on error) and a pre-hook on block 1.

    Args:
        adapter: the model's adapter.  images: (B, C, H, W) normalised input.
        objective: ``objective(out) -> (Y, extra)``: the scalar Y (summed over the batch) from the
            model's output (logits (B, K) or feature (B, C)), and anything the caller wants back.
        backend: backend of the ``block_map`` op.

    Returns:
        (block maps (B, L, N - P) float32, extra).
    """
    call = RowCall(adapter, backend)
    patched = []
    handle = adapter.blocks[0].register_forward_pre_hook(call.grab_input, with_kwargs=True)
    try:
        for b, attn in enumerate(adapter.attns):
            if "forward" in attn.__dict__:
                raise RuntimeError(f"blocks[{b}].attn.forward is already patched (another DAAM or hook library "
                                   "is active on this model)")
            patched.append(attn)
            attn.forward = adapter.attn_forward(b, call.core(b), lambda: True)
        call.forward(images)
        with torch.enable_grad():
            out = call.row_graph()
            Y, extra = objective(out)
            bm = call.maps(Y, relu)
    finally:
        handle.remove()
        for attn in patched:
            attn.__dict__.pop("forward", None)
    return bm, extra


def explain_row(model: nn.Module, images: Tensor, target=None, bank=None, backend: Optional[str] = None):
    """method="row" on its own (what ``DAAM(model, method="row")`` runs): a DAAMResult.

    Args:
        model: a token-pooled model the adapters accept.  images: (B, C, H, W) normalised.
        target: None, an int or (B,) class indices (supervised).  bank: a MemoryBank (headless).
        backend: backend of the ``block_map`` op.
    """
    from ._model import check_images, resolve_targets
    from .adapters import get_adapter
    from .bank import dimension_weights, label_free_weights
    from .result import DAAMResult

    ad = get_adapter(model)
    check_images(images, ad)
    why = row_support(ad)
    if why is not None:
        raise ValueError(f"method='row' cannot explain this model: {why}")
    B = images.shape[0]
    targets = resolve_targets(target, B, ad.num_classes, images.device)
    h, w = ad.grid(images)

    def objective(out: Tensor):
        if ad.num_classes > 0:
            logits = out.detach().float()
            t = logits.argmax(dim=1) if targets is None else targets
            return out.gather(1, t[:, None]).sum(), (t, logits, None, None)
        feats = out.detach().float()
        if bank is not None:
            wts, t = dimension_weights(feats, bank)
        else:
            wts, t = label_free_weights(feats), torch.full((B,), -1, dtype=torch.long, device=out.device)
        return (wts.to(out.dtype) * out).sum(), (t, None, feats, wts)

    modes = [(m, m.training) for m in model.modules()]
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    try:
        for p in frozen:
            p.requires_grad_(False)
        bm, (t, logits, feats, wts) = run_row(ad, images, objective, ad.num_classes > 0, backend)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        for m, mode in modes:
            m.training = mode
    bm = bm.reshape(B, ad.depth, h, w)
    return DAAMResult(block_maps=bm, maps=torch.cumsum(bm, dim=1), targets=t, logits=logits, features=feats,
                      weights=wts, method="row", grid=(h, w))
