"""The fast path: DAAM maps produced in flight, with the model's fused attention kept on.

The explainer talks to the model only through its adapter (:mod:`daam_fast.adapters`:
timm, Hugging Face, torchvision, DINO / DINOv2 checkpoints), which says where the blocks,
q / k / v, the output projection, the prefix tokens, the grid and the head are.

One call: the method (:data:`daam_fast.methods.METHODS`: "grad", "direct", "row") runs the model
with every block's attention replaced by its capturing forward (:mod:`daam_fast._session`
holds the model frozen and patched), the target (:mod:`daam_fast.targets`) makes the
scalar Y, and each block's map is formed by the fused ``block_map`` op as soon as its
coefficients exist; see :mod:`daam_fast.methods.grad` for how "grad" works step by step.

Options: ``activation_checkpointing=True`` wraps each block in non-reentrant activation
checkpointing (the block's recompute in the backward saves q[:, :, 0], k, v for its map);
``compile=True`` runs each block through ``torch.compile``, the capturing attention included
(no graph break; a method whose capture cannot be traced keeps it eager, see
``Method.traceable``). Two exact reductions are always on where the model's family supports
them: the last block computes only the rows the head reads, and for "grad" block 1's
residual + MLP path keeps a graph on the [class] row only.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, List, Optional, Tuple

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from ._capture import CallState
from ._checks import check_images
from ._removed import REMOVED_CALL_KEYWORDS, REMOVED_OPTIONS, reject_keywords
from ._session import Patches, current, frozen, resume
from .adapters import get_adapter
from .methods import METHODS
from .result import DAAMResult
from .targets import Scored, TargetLike, as_target

__all__ = ["DAAM", "METHODS"]


# compile=True calls take turns: the recompile limit is raised for the call through Dynamo's
# configuration, which is process-wide (two overlapping calls could restore it out of order)
_COMPILED_CALLS = threading.Lock()


def _compiled(f: Callable, depth: int) -> Callable:
    """``torch.compile(f)`` for one block. The blocks share their forward's code, and each
    block's graph is specialised on its index (the capture is per block), so Dynamo keeps one
    cache entry per block on that code: its default recompile limit (8) would send the blocks
    past the 8th back to eager with a warning. The limit is raised to the model's depth
    during the call only (``torch._dynamo.config.patch``), not for the process."""
    cf = torch.compile(f)
    config = torch._dynamo.config
    key = "recompile_limit" if "recompile_limit" in config._config else "cache_size_limit"   # torch < 2.7

    @functools.wraps(f)
    def run(*args, **kwargs):
        try:
            current = int(getattr(config, key))
        except AttributeError:        # hidden after a delattr (unittest.mock-style patching): the default
            current = 8
        with config.patch(**{key: max(depth + 8, current)}):
            return cf(*args, **kwargs)
    return run


class DAAM:
    """Dynamic Accumulated Attention Maps for a Vision Transformer (timm, Hugging Face, torchvision).

    One call explains a batch: ``DAAM(model)(images)`` patches each block's attention forward
    (and, where an option needs it, the block forwards), runs the method and restores every
    patched attribute before it returns. A DAAM object is also a context manager: inside
    ``with DAAM(model) as daam:`` the model stays patched for every call (the patches, and
    with ``compile=True`` the compiled blocks, are built once), and on exit everything is
    restored, also when an exception is raised (it is re-raised). Outside a DAAM call the
    patched modules compute exactly what the library's do, so the model can be used as usual
    in between.

    Threads and asyncio tasks may share one model and one explainer: each call keeps its own
    state in its context, plain ``model(x)`` calls elsewhere run the library's forward, and
    the model is restored when the last explainer on it exits (docs/serving.md).
    ``compile=True`` calls take turns (a process-wide lock); every other option runs
    concurrently.

    Args:
        model: a timm VisionTransformer / DeiT / EVA / BEiT (incl. distilled, register tokens, q/k-norm,
            layer-scale, rotary embeddings, dynamic or non-square image sizes, ``global_pool``
            'token' or 'avg'), a Hugging Face ViT / DeiT, a torchvision VisionTransformer, or a
            DINO / DINOv2 checkpoint loaded with :func:`daam_fast.models.load_dino` /
            ``load_dinov2`` (see :mod:`daam_fast.models`). A model it cannot explain raises
            ``ValueError`` naming the reason, here.
        method: a name from :data:`daam_fast.methods.METHODS`: "grad", the paper's exact
            coefficients G_b = dY/dT_b[0] from one backward; or "direct" (docs/method.md §7,
            forward only): G_b ~= proj_b^T (ls_b * dY/dx_L[0]), with dY/dx_L[0] exact through
            the final norm and head. An approximation: see the README for its measured
            fidelity to "grad". Or "row" (docs/method.md §8, forward only + a backward on the
            rows the head reads): near-exact (the last block exact) at about inference cost.
        normalize: per-block min-max normalisation of each L_b (default off, as the authors' demos).
        activation_checkpointing: "grad" only: each block keeps only its input and is
            recomputed in the backward, which also captures the k, v its map needs; for
            batches whose activations do not fit (about half the peak memory for +0.6-0.7x
            inference time, README).
        heads: also return each head's term of L_b before the ReLU, ``res.head_maps``
            (B, L, H, h, w) float32, formed by the same fused op in the same pass;
            ``relu(res.head_maps.sum(2)) == res.block_maps`` with ``normalize=False``. The
            head maps are never normalised: with ``normalize=True`` the block maps are
            (relu(sum) - min) / (max - min + 1e-10) of that sum.
        compile: run each block through ``torch.compile``, the capturing attention included
            (one graph per block, no graph break); the first call compiles. Measured on the
            CPU in the README: it does not pay there; meant for GPUs.
        backend: backend of the fused ops (None: ``DAAM_FAST_BACKEND`` or auto). "grad" always
            keeps the model's SDPA; a method that reads the [class] row in the forward
            ("direct") uses the cls_attention kernel only when "triton" or "cuda" is asked for.

    Raises:
        ValueError: an unknown method, a model the method cannot explain, or
            ``activation_checkpointing`` with a forward-only method.
        TypeError: an unknown option; a removed one (``checkpoint=``, ``reduce_first_block=``,
            ``reduce_last_block=``) names what replaces it.

    Example:
        >>> res = DAAM(model)(images)          # images (B, 3, H, W), normalised
        >>> res.maps.shape                     # (B, L, h, w): the attention flow D_1..D_L
        >>> with DAAM(model, method="row") as daam:      # patched once for many calls
        ...     results = [daam(x) for x in batches]
    """

    def __init__(self, model: nn.Module, method: str = "grad", *, normalize: bool = False,
                 activation_checkpointing: bool = False, heads: bool = False, compile: bool = False,
                 backend: Optional[str] = None, **removed):
        reject_keywords("DAAM()", removed, REMOVED_OPTIONS)
        if method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
        impl = METHODS[method]
        if activation_checkpointing and impl.forward_only:
            raise ValueError(f"activation_checkpointing=True applies to method='grad' (method={method!r} keeps no "
                             "activations for a backward)")
        self.model = model
        self.adapter = get_adapter(model)
        why = impl.support(self.adapter)
        if why is not None:
            raise ValueError(f"method={method!r} cannot explain this model: {why}; use method='grad'")
        self.method = method
        self._impl = impl
        self.normalize = bool(normalize)
        self.activation_checkpointing = bool(activation_checkpointing)
        self.heads = bool(heads)
        self.compile = bool(compile)
        self.backend = backend
        # the exact row reductions, on where they apply (switched off only by tests comparing them)
        adapter = self.adapter
        self._reduce_last = (impl.reduce_last_block and adapter.head_rows is not None
                             and adapter.can_reduce_last_block())
        self._reduce_first = impl.reduce_first_block and adapter.can_reduce_first_block()
        self._patches: Optional[Patches] = None     # built once (compiled code is reused)
        self._lock = threading.Lock()
        self._depth = 0                             # holders (contexts and calls, any thread)

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "DAAM":
        with self._lock:
            if self._patches is None:
                self._patches = self._build()
            if self._depth == 0:
                self._patches.acquire()
            self._depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self._patches.release()
        return False  # never swallow

    def _build(self) -> Patches:
        """The patch set: each attention's capturing forward and, where an option needs it, the
        block forwards (row reductions, checkpointing, compiled blocks)."""
        adapter = self.adapter
        blocks: List[Tuple[nn.Module, str, Callable]] = []
        ckpt = self.activation_checkpointing
        if ckpt or self.compile or self._reduce_last or self._reduce_first:
            for b, blk in enumerate(adapter.blocks):
                if b == adapter.depth - 1 and self._reduce_last:
                    f = adapter.last_block_forward(self._reduce_rows)
                elif b == 0 and self._reduce_first:
                    f = adapter.first_block_forward(self._split_first)
                elif ckpt or self.compile:
                    f = functools.partial(type(blk).forward, blk)
                else:
                    continue
                if self.compile:
                    f = _compiled(f, adapter.depth)
                if ckpt:
                    f = self._checkpointed(f)
                blocks.append((blk, "forward", f))
        return Patches(adapter, lambda b: self._impl.core(adapter, b, current),
                       wrap=torch.compiler.disable if self.compile and not self._impl.traceable else None,
                       extra=blocks)

    def _checkpointed(self, f: Callable) -> Callable:
        """Block forward under non-reentrant checkpointing: the first pass keeps nothing of the
        block (not even the k, v its map needs); the recompute, which the backward runs
        before the gradient reaches the block's T, saves them. The recompute runs with the
        call's context again (on a GPU the backward runs in autograd's device thread)."""
        def forward(*args, **kwargs):
            if current() is None or not torch.is_grad_enabled():      # ("grad" only)
                return f(*args, **kwargs)
            return torch.utils.checkpoint.checkpoint(f, *args, use_reentrant=False,
                                                     context_fn=lambda: (contextlib.nullcontext(), resume()()),
                                                     **kwargs)
        return forward

    def _reduce_rows(self) -> Optional[int]:
        st = current()
        return None if st is None else st.reduce_rows

    def _split_first(self) -> bool:
        st = current()
        return st is not None and st.split_first and torch.is_grad_enabled()

    # ------------------------------------------------------------------ the call
    def __call__(self, images: Tensor, target: TargetLike = None, **removed) -> DAAMResult:
        """Explain a batch (patching the model for the call, unless inside ``with``).

        Args:
            images: (B, C, H, W) float, normalised as the model expects
                (:func:`daam_fast.prepare` turns pictures into it).
            target: what is explained (:mod:`daam_fast.targets`): None (each image's own
                prediction; a model without a head: the label-free weights); an int for every
                image or (B,) class indices (a tensor or a list of ints); ``TopK(k)``: each
                image's k best classes in one batched call, rows image-major (row ``i * k + j``
                is image i explained for its j-th best class, ``res.topk == k``);
                ``BankTarget(bank)``: a model without a head with its :class:`MemoryBank`
                (docs/method.md §4); ``Similarity(query)``; or any callable
                ``f(output) -> (B,)`` scoring the logits (B, K) or the feature (B, C).

        Returns:
            DAAMResult: block_maps / maps (R, L, h, w) float32 on the images' device
            (R = B, or B * k with ``TopK(k)``), targets (R,), logits (R, K) or features (R, C)
            and weights (R, C); head_maps (R, L, H, h, w) with ``heads=True``.

        Raises:
            ValueError: bad images or targets, or a model output that is not finite; the value
                checks are read once, after the maps are formed.
            TypeError: a removed spelling such as ``bank=`` or ``topk=`` (the message names
                the target to use).

        Safe from many threads or asyncio tasks at once, on one model and one explainer
        (docs/serving.md). Inside ``torch.inference_mode()`` the call leaves it for its
        duration (images may be inference tensors; the result's tensors are ordinary ones).
        """
        reject_keywords("DAAM call", removed, REMOVED_CALL_KEYWORDS)
        # Each call holds the patch set (so that another thread's exit cannot restore the model
        # under it) and leaves inference mode, if the caller is in it, for its duration: the
        # inputs may be inference tensors (no forward saves them for a backward), everything
        # the call makes is an ordinary tensor.
        with self, torch.inference_mode(False), (_COMPILED_CALLS if self.compile else contextlib.nullcontext()):
            return self._explain(images, target)

    def _explain(self, images: Tensor, target: TargetLike) -> DAAMResult:
        adapter = self.adapter
        bad_images = check_images(images, adapter, finite=False)
        tgt = as_target(target, adapter, images.shape[0])
        h, w = adapter.grid(images)
        st = CallState(adapter, self._impl, tgt, self.backend, adapter.head_rows if self._reduce_last else None,
                       heads=self.heads, checkpoint=self.activation_checkpointing)
        st.split_first = self._reduce_first
        st.patches = h * w
        st.checks.add_images(bad_images)
        # Parameters are constants for the explanation: with requires_grad off for the call,
        # autograd saves no layer inputs for weight gradients (about 40 % less memory).
        # The call's state is active in this context only: other threads' forwards run the model.
        with frozen(self.model), self._patches.active(st):
            try:
                scored = self._impl.run(st, tgt.expand(images))
            except Exception:
                st.checks.raise_first()                  # bad input first: it explains the failure
                raise
        for flags, make in tgt.deferred():
            st.checks.add(flags, make)
        st.checks.raise_first()                          # the call's one host synchronisation
        missing = [i for i, m in enumerate(st.maps) if m is None]
        if missing:
            raise RuntimeError(f"DAAM: no gradient reached blocks {missing} (is the output connected to them?)")
        return self._result(st, scored, h, w)

    def _result(self, st: CallState, scored: Scored, h: int, w: int) -> DAAMResult:
        bm = torch.stack(st.maps, dim=1)                                    # (R, L, N - P)
        hm = torch.stack(st.head_maps, dim=1) if self.heads else None       # (R, L, H, N - P)
        return DAAMResult.from_block_maps(bm, **scored.reported(), method=self.method, grid=(h, w),
                                          topk=st.target.per_image, normalize=self.normalize, head_maps=hm)

    def __repr__(self) -> str:
        a = self.adapter
        return (f"DAAM({type(self.model).__name__}, family={a.family!r}, method={self.method!r}, blocks={a.depth}, "
                f"prefix={a.num_prefix}, pool={a.pool!r})")
