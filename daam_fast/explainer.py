"""The fast path: DAAM maps produced in flight, with the model's fused attention kept on.

The explainer talks to the model only through its adapter (:mod:`daam_fast.adapters`:
timm, Hugging Face, torchvision), which says where the blocks, q / k / v, the output
projection, the prefix tokens, the grid and the head are.

How one call works (method="grad"):

1. Forward. Each block's attention is replaced (for the duration of the context) by a
   forward that runs the same ops as the library's (the adapter's q / k / v projection and
   q/k norms, one fused SDPA, the adapter's output projection) and keeps
   references to the [class] query q[:, :, 0] and to k and v, which are views of the qkv
   output that SDPA's autograd node saves anyway: nothing is copied, no N x N matrix
   exists. The input T_b of ``proj`` gets a tensor hook. In the last block only the rows
   the head reads are computed (attention with 1-2 queries, MLP on 1-2 tokens); in block 1
   only the [class] row of T_1 starts the graph (G_1 = dY/dT_1[0] is all block 1 needs),
   so block 1's residual + MLP path has a backward on that row alone.
2. One backward, ``torch.autograd.grad(Y, T_1)``: no parameter gradient, nothing below
   block 1. When the gradient of T_b arrives, its hook computes block b's map at once
   with the fused ``block_map`` op (C++ / CUDA / Triton / PyTorch) from G_b = dY/dT_b[0]
   and drops its references to q, k, v, so memory falls as the backward proceeds.

Options: ``checkpoint=True`` wraps each block in non-reentrant activation checkpointing (the
block's recompute in the backward captures q[:, :, 0], k, v); ``compile=True`` runs each
block through ``torch.compile`` with the capturing attention forward left eager.
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch import Tensor, nn

from . import _config
from ._model import TargetLike, can_reduce_last_block, check_images, resolve_targets
from .adapters import Adapter, get_adapter
from .bank import MemoryBank, dimension_weights, label_free_weights
from .ops.block_map import block_map
from .ops.cls_attention import cls_attention
from .result import DAAMResult

__all__ = ["DAAM"]

METHODS = ("grad", "direct")


def direct_support(layout: Adapter) -> Optional[str]:
    """None if method="direct" (SPEC section 7) applies to the model, else the reason it does not."""
    return layout.direct_support()


def _mean_patch_row(q: Tensor, k: Tensor, scale: float, prefix: int, budget: int = 1 << 24,
                    bias: Optional[Tensor] = None) -> Tensor:
    """(B, H, N): rows P..N-1 of softmax(q k^T scale + bias) averaged, in query chunks (no N x N kept)."""
    B, H, N, d = k.shape
    chunk = max(1, budget // max(1, B * H * N))
    acc = torch.zeros(B, H, N, dtype=torch.float32, device=k.device)
    for s in range(prefix, N, chunk):
        e = min(N, s + chunk)
        logits = torch.einsum("bhqd,bhnd->bhqn", q[:, :, s:e].float(), k.float()) * scale
        if bias is not None:
            logits = logits + bias[:, :, s:e].float()
        acc += logits.softmax(dim=-1).sum(dim=2)
    return acc / (N - prefix)


def _cls_row(q: Tensor, k: Tensor, scale: float, bias: Optional[Tensor]) -> Tensor:
    """(B, H, N): row 0 of softmax(q k^T scale + bias) (bias (1 or B, H, N, N) or None)."""
    logits = torch.einsum("bhd,bhnd->bhn", q[:, :, 0].float(), k.float()) * scale
    if bias is not None:
        logits = logits + bias[:, :, 0].float()
    return logits.softmax(-1)


def _check_finite_output(out: Tensor) -> None:
    """A NaN / inf model output (finite but huge pixels overflow float32 inside the network)
    would give all-zero or NaN maps without a word: refuse it, naming the images."""
    bad = ~torch.isfinite(out.detach()).flatten(1).all(dim=1)
    if bool(bad.any()):
        idx = bad.nonzero().flatten().tolist()
        raise ValueError(f"the model's output is not finite (NaN or inf) for image(s) {idx[:10]}"
                         f"{' ...' if len(idx) > 10 else ''}: the input values overflow the network "
                         "(are the images normalised as the model expects?)")


def _fused_cls_attention(q: Tensor, k: Tensor, v: Tensor, scale: float,
                         backend: Optional[str]) -> Optional[Tuple[Tensor, Tensor]]:
    """(out (B, H, R, d), a_cls (B, H, N) float32) from the cls_attention kernel where it runs:
    CUDA tensors (CUDA extension -> Triton), or Triton asked for explicitly (on the CPU under
    TRITON_INTERPRET=1). None means SDPA + the O(N d) row (the CPU path). Kernel limits (e.g.
    head dim > 128 for CUDA) fall back to SDPA under auto and raise for an explicit backend."""
    name = (backend or _config.backend()).lower()
    if name in ("cpp", "torch") or not (q.is_cuda or name == "triton"):
        return None
    try:
        return cls_attention(q, k, v, scale, backend=None if name == "auto" else name)
    except ValueError:
        if name != "auto":
            raise
        return None


def _weighted_row_map(a: Tensor, v: Tensor, g: Tensor, prefix: int) -> Tensor:
    """ReLU(sum_h a^h[n] <g^h, v^h[n]>) for a given attention row a (B, H, N) -> (B, N - P)."""
    w = torch.einsum("bhd,bhnd->bhn", g.float(), v.float())
    return (a * w).sum(dim=1)[:, prefix:].clamp_min(0)


class _CallState:
    """Everything one call holds; dropped as soon as the call ends."""

    def __init__(self, layout: Adapter, supervised: bool, backend: Optional[str], reduce_rows: Optional[int],
                 direct: bool = False):
        L = layout.depth
        self.direct = direct
        self.x_last: Optional[Tensor] = None
        self.layout = layout
        self.supervised = supervised
        self.backend = backend
        self.reduce_rows = reduce_rows
        self.slots: List[Optional[tuple]] = [None] * L
        self.maps: List[Optional[Tensor]] = [None] * L
        self.first: Optional[Tensor] = None      # block 1's T: where the backward stops
        self.deferred = False                    # inside the first pass of a checkpointed block
        self.split_first = False                 # block 1: graph on the [class] row of T_1 only
        self.error: Optional[BaseException] = None


class DAAM:
    """Dynamic Accumulated Attention Maps for a Vision Transformer (timm, Hugging Face, torchvision).

    Use as a context manager: on entry each block's attention forward is wrapped (and the
    last block's forward, for the row reduction); on exit every patched attribute is
    restored, also when an exception is raised (it is re-raised). Outside a DAAM call the
    wrapped modules compute exactly what the library's do, so the model can be used as usual.

    Args:
        model: a timm VisionTransformer / DeiT / EVA / BEiT (incl. distilled, register tokens, q/k-norm,
            layer-scale, rotary embeddings, dynamic or non-square image sizes, ``global_pool``
            'token' or 'avg'), a Hugging Face ViT / DeiT, a torchvision VisionTransformer, or a
            DINO checkpoint loaded with :func:`daam_fast.adapters.load_dino` (see
            :mod:`daam_fast.adapters`). A model it cannot explain raises ``ValueError`` naming
            the reason, here.
        method: "grad", the paper's exact coefficients G_b = dY/dT_b[0] from one backward;
            or "direct" (SPEC section 7, forward only): G_b ~= proj_b^T (ls_b * dY/dx_L[0]),
            with dY/dx_L[0] exact through the final norm and head. An approximation: see
            the README for its measured fidelity to "grad".
        normalize: per-block min-max normalisation of each L_b (default off, as the authors' demos).
        backend: backend of the fused ops (None: ``DAAM_FAST_BACKEND`` or auto).
        reduce_last_block: compute only the rows the head reads in the last block (exact;
            default on).
        reduce_first_block: "grad" only needs dY/dT_1[0] in block 1, so block 1's residual +
            MLP path keeps a graph on the [class] row only (exact; default on; timm ViT/DeiT).
        checkpoint: activation checkpointing ("grad" only): each block keeps only its input
            and is recomputed in the backward, which also captures the k, v its map needs; for
            batches whose activations do not fit (about half the peak memory for +0.6-0.7x
            inference time, README).
        compile: run each block through ``torch.compile`` (the attention forward, which
            captures what the maps need, stays eager); the first call compiles. Measured on
            the CPU in the README: it does not pay there; meant for GPUs.

    Example:
        >>> with DAAM(model) as daam:
        ...     res = daam(images)            # images (B, 3, H, W), normalised
        >>> res.maps.shape                    # (B, L, h, w): the attention flow D_1..D_L
    """

    def __init__(self, model: nn.Module, method: str = "grad", *, normalize: bool = False,
                 backend: Optional[str] = None, reduce_last_block: bool = True, reduce_first_block: bool = True,
                 checkpoint: bool = False, compile: bool = False):
        if method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
        if checkpoint and method != "grad":
            raise ValueError("checkpoint=True applies to method='grad' (method='direct' keeps no activations "
                             "for a backward)")
        self.model = model
        self.layout = get_adapter(model)
        if method == "direct":
            why = direct_support(self.layout)
            if why is not None:
                raise ValueError(f"method='direct' cannot explain this model: {why}; use method='grad'")
        self.method = method
        self.normalize = bool(normalize)
        self.backend = backend
        self.reduce_last_block = bool(reduce_last_block) and can_reduce_last_block(self.layout)
        self.reduce_first_block = (bool(reduce_first_block) and method == "grad"
                                   and self.layout.can_reduce_first_block())
        self.checkpoint = bool(checkpoint)
        self.compile = bool(compile)
        self._fns: Optional[List[tuple]] = None      # the patched forwards, built once (compiled code is reused)
        self._patched: List[tuple] = []
        self._state: Optional[_CallState] = None
        self._depth = 0

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "DAAM":
        if self._depth == 0:
            self._patch()
        self._depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._depth -= 1
        if self._depth == 0:
            self._restore()
        return False  # never swallow

    def _set(self, mod: nn.Module, name: str, value) -> None:
        self._patched.append((mod, name, mod.__dict__.get(name, _MISSING)))
        setattr(mod, name, value)

    def _build(self) -> List[tuple]:
        """(module, attribute, replacement) for every patch; built on the first entry only, so
        that compiled code (``compile=True``) is reused by later calls."""
        lay = self.layout
        fns: List[tuple] = []
        for b, attn in enumerate(lay.attns):
            f = self._make_attn_forward(b)
            if self.compile:                       # side effects (slots, hooks) stay out of the graph
                f = torch.compiler.disable(f)
            fns.append((attn, "forward", f))
        if self.checkpoint or self.compile or self.reduce_last_block or self.reduce_first_block:
            for b, blk in enumerate(lay.blocks):
                if b == lay.depth - 1 and self.reduce_last_block:
                    f = lay.last_block_forward(self._reduce_rows)
                elif b == 0 and self.reduce_first_block:
                    f = lay.first_block_forward(self._split_first)
                elif self.checkpoint or self.compile:
                    f = functools.partial(type(blk).forward, blk)
                else:
                    continue
                if self.compile:
                    f = torch.compile(f)
                if self.checkpoint:
                    f = self._checkpointed(f)
                fns.append((blk, "forward", f))
        return fns

    def _checkpointed(self, f: Callable) -> Callable:
        """Block forward under non-reentrant checkpointing: the first pass keeps nothing of the
        block (not even the k, v its map needs); the recompute, which the backward runs
        before the gradient reaches the block's T, captures them."""
        def forward(*args, **kwargs):
            st = self._state
            if st is None or not torch.is_grad_enabled():      # (checkpoint=True is "grad" only)
                return f(*args, **kwargs)
            st.deferred = True
            try:
                return torch.utils.checkpoint.checkpoint(f, *args, use_reentrant=False, **kwargs)
            finally:
                st.deferred = False
        return forward

    def _patch(self) -> None:
        try:
            for b, attn in enumerate(self.layout.attns):
                if "forward" in attn.__dict__:
                    raise RuntimeError(f"blocks[{b}].attn.forward is already patched (another DAAM or hook library "
                                       "is active on this model)")
            if self._fns is None:
                self._fns = self._build()
            for mod, name, f in self._fns:
                self._set(mod, name, f)
        except BaseException:
            self._restore()
            raise

    def _restore(self) -> None:
        while self._patched:
            mod, name, old = self._patched.pop()
            if old is _MISSING:
                mod.__dict__.pop(name, None)
            else:
                setattr(mod, name, old)
        self._state = None

    # ------------------------------------------------------------------ patched forwards
    def _active(self) -> bool:
        return self._state is not None

    def _reduce_rows(self) -> Optional[int]:
        st = self._state
        return None if st is None else st.reduce_rows

    def _split_first(self) -> bool:
        st = self._state
        return st is not None and st.split_first and torch.is_grad_enabled()

    def _make_attn_forward(self, b: int):
        ad = self.layout
        H, d = ad.num_heads, ad.head_dim
        P = ad.num_prefix
        pool = ad.pool
        scale = ad.scale(b)

        def core(x: Tensor, rows: Optional[int], ctx) -> Tensor:
            st = self._state
            B = x.shape[0]
            q, k, v = ad.qkv(b, x, rows, ctx)
            bias = ad.attn_bias(b, ctx)                                  # e.g. BEiT's relative position bias
            a_cls = None
            if bias is None:
                fused = _fused_cls_attention(q, k, v, scale, st.backend) if pool == "token" else None
                if fused is not None:                                    # GPU: one kernel writes out and a_cls
                    o, a_cls = fused
                else:
                    o = F.scaled_dot_product_attention(q, k, v)          # fused; (B, H, R, d)
            else:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, :, :q.shape[2]].to(q.dtype))
            T = o.transpose(1, 2).reshape(B, q.shape[2], H * d)          # input of norm / proj
            if st.direct:                                                # forward only: keep row + v
                with torch.no_grad():
                    if a_cls is not None:
                        a = a_cls.detach()
                    elif pool == "token":
                        a = _cls_row(q, k, scale, bias)
                    else:
                        a = _mean_patch_row(q, k, scale, P, bias=bias)
                    st.slots[b] = (a, v.contiguous())                     # q, k and the qkv buffer can go
                return ad.attn_out(b, T, x, rows)
            out = None
            if b == 0 and st.split_first:                                # G_1 needs dY/dT_1[0] only: the
                with torch.no_grad():                                    # other rows carry no graph
                    rest = ad.attn_out(b, T[:, 1:], x[:, 1:])
                T = T[:, :1].detach().requires_grad_(True)
                out = torch.cat([ad.attn_out(b, T, x, 1), rest], dim=1)
            elif not T.requires_grad:                                    # frozen model: graph starts here
                T.requires_grad_(True)
            if st.first is None:
                st.first = T
            if st.deferred:                                              # checkpoint=True: the recompute in
                pass                                                     # the backward fills the slot
            elif pool == "token" and bias is None:                       # row formed by the fused op later
                st.slots[b] = (q[:, :, 0].detach(), k.detach(), v.detach())
            else:                                                        # row (with the bias) formed now
                with torch.no_grad():
                    bd = None if bias is None else bias.detach()
                    a = (_cls_row(q.detach(), k.detach(), scale, bd) if pool == "token"
                         else _mean_patch_row(q.detach(), k.detach(), scale, P, bias=bd))
                    st.slots[b] = (a, v.detach())
            T.register_hook(self._make_grad_hook(b, scale))
            return ad.attn_out(b, T, x, rows) if out is None else out

        return ad.attn_forward(b, core, self._active)

    def _make_grad_hook(self, b: int, scale: float):
        def hook(grad: Tensor) -> None:
            st = self._state
            if st is None:
                return None
            if st.slots[b] is None:
                st.error = st.error or RuntimeError(
                    f"DAAM: block {b}'s gradient arrived before its attention inputs were captured"
                    + (" (checkpoint=True: the block was not recomputed first)" if self.checkpoint else ""))
                return None
            try:
                lay = st.layout
                H, d, P = lay.num_heads, lay.head_dim, lay.num_prefix
                with torch.no_grad():
                    G = grad[:, 0] if lay.pool == "token" else grad[:, P:].sum(dim=1)     # (B, C)
                    if st.supervised:
                        G = G.clamp_min(0)
                    slot, st.slots[b] = st.slots[b], None
                    if len(slot) == 3:                                              # [class] query, k, v
                        q_cls, k, v = slot
                        g = G.reshape(G.shape[0], H, d).to(k.dtype)
                        st.maps[b] = block_map(q_cls, k, v, g, scale, P, backend=st.backend)
                    else:
                        a, v = slot
                        st.maps[b] = _weighted_row_map(a, v, G.reshape(G.shape[0], H, d), P)
            except BaseException as e:  # surface after backward; never a silent wrong map
                st.error = e
            return None

        return hook

    # ------------------------------------------------------------------ the call
    def __call__(self, images: Tensor, target: TargetLike = None, bank: Optional[MemoryBank] = None) -> DAAMResult:
        """Explain a batch.

        Args:
            images: (B, C, H, W) float, normalised as the model expects.
            target: None (each image's own argmax), an int for all images, or (B,) class
                indices (tensor or list). Supervised models only.
            bank: a :class:`MemoryBank` for a model without a head (SPEC section 4); None
                there uses the label-free default weights (README).

        Returns:
            DAAMResult: block_maps / maps (B, L, h, w) float32 on the images' device,
            targets (B,), logits (B, K) or features (B, C) and weights (B, C).
        """
        if self._depth == 0:
            with self:
                return self(images, target=target, bank=bank)
        lay = self.layout
        check_images(images, lay)
        supervised = lay.num_classes > 0
        if bank is not None and supervised:
            raise ValueError("bank= is for models without a classifier head (num_classes=0)")
        if bank is not None and not isinstance(bank, MemoryBank):
            raise TypeError(f"bank must be a daam_fast.MemoryBank, got {type(bank).__name__}")
        B = images.shape[0]
        targets = resolve_targets(target, B, lay.num_classes, images.device)
        h, w = lay.grid(images)
        reduce_rows = lay.head_rows if self.reduce_last_block else None
        st = _CallState(lay, supervised, self.backend, reduce_rows, direct=self.method == "direct")
        st.split_first = self.reduce_first_block
        modes = [(m, m.training) for m in self.model.modules()]
        # Parameters are constants for the explanation: with requires_grad off for the call,
        # autograd saves no layer inputs for weight gradients (about 40 % less memory); the
        # graph starts at T_1 (see the attention forward). Flags are restored below.
        frozen = [p for p in self.model.parameters() if p.requires_grad]
        self.model.eval()
        self._state = st
        try:
            for p in frozen:
                p.requires_grad_(False)
            if st.direct:
                return self._call_direct(st, images, targets, bank, h, w)
            with torch.enable_grad():
                out = lay.run(images)
                _check_finite_output(out)
                logits = features = weights = None
                if supervised:
                    logits = out.detach().float()
                    if targets is None:
                        targets = logits.argmax(dim=1)
                    Y = out.gather(1, targets[:, None]).sum()
                else:
                    features = out.detach().float()
                    if bank is not None:
                        weights, targets = dimension_weights(features, bank)
                    else:
                        weights = label_free_weights(features)
                        targets = torch.full((B,), -1, dtype=torch.long, device=out.device)
                    Y = (weights.to(out.dtype) * out).sum()
                torch.autograd.grad(Y, [st.first])
            if st.error is not None:
                raise st.error
            missing = [i for i, m in enumerate(st.maps) if m is None]
            if missing:
                raise RuntimeError(f"DAAM: no gradient reached blocks {missing} (is the output connected to them?)")
            bm = torch.stack(st.maps, dim=1)                                   # (B, L, N - P)
        finally:
            self._state = None
            for p in frozen:
                p.requires_grad_(True)
            for m, mode in modes:
                m.training = mode
        return self._result(bm, targets, logits, features, weights, h, w)

    def _result(self, bm: Tensor, targets, logits, features, weights, h: int, w: int) -> DAAMResult:
        B = bm.shape[0]
        if bm.shape[-1] != h * w:
            raise ValueError(f"{bm.shape[-1]} patch tokens do not fill the {h}x{w} grid")
        if self.normalize:
            lo, hi = bm.amin(dim=-1, keepdim=True), bm.amax(dim=-1, keepdim=True)
            bm = (bm - lo) / (hi - lo + 1e-10)
        bm = bm.reshape(B, self.layout.depth, h, w).float()
        return DAAMResult(block_maps=bm, maps=torch.cumsum(bm, dim=1), targets=targets, logits=logits,
                          features=features, weights=weights, method=self.method, grid=(h, w))

    def _call_direct(self, st: _CallState, images: Tensor, targets, bank, h: int, w: int) -> DAAMResult:
        """Forward only (no graph through the blocks), then dY/dx_L exactly through norm + head."""
        lay = self.layout
        B, P, H, d = images.shape[0], lay.num_prefix, lay.num_heads, lay.head_dim

        def grab(_mod, args):
            st.x_last = args[0].detach()

        handle = lay.final_norm().register_forward_pre_hook(grab)
        try:
            with torch.no_grad():
                lay.run(images)
        finally:
            handle.remove()
        with torch.enable_grad():
            xL = st.x_last.requires_grad_(True)                          # (B, R, C), R = rows the head reads
            out = lay.head(xL)
            _check_finite_output(out)
            logits = features = weights = None
            if st.supervised:
                logits = out.detach().float()
                if targets is None:
                    targets = logits.argmax(dim=1)
                Y = out.gather(1, targets[:, None]).sum()
            else:
                features = out.detach().float()
                if bank is not None:
                    weights, targets = dimension_weights(features, bank)
                else:
                    weights = label_free_weights(features)
                    targets = torch.full((B,), -1, dtype=torch.long, device=out.device)
                Y = (weights.to(out.dtype) * out).sum()
            (r,) = torch.autograd.grad(Y, [xL])
        r = r[:, 0] if lay.pool == "token" else r[:, P:].sum(dim=1)          # (B, C)
        maps = []
        with torch.no_grad():
            for b in range(lay.depth):
                a, v = st.slots[b]
                st.slots[b] = None
                proj_w, gamma = lay.residual_weights(b)
                rr = r if gamma is None else r * gamma
                G = rr.to(proj_w.dtype) @ proj_w                                # proj^T (ls * r)
                if st.supervised:
                    G = G.clamp_min(0)
                maps.append(_weighted_row_map(a, v, G.reshape(B, H, d), P))
        return self._result(torch.stack(maps, dim=1), targets, logits, features, weights, h, w)

    def __repr__(self) -> str:
        return (f"DAAM({type(self.model).__name__}, family={self.layout.family!r}, method={self.method!r}, blocks={self.layout.depth}, "
                f"prefix={self.layout.num_prefix}, pool={self.layout.pool!r})")


class _Missing:
    pass


_MISSING = _Missing()
