"""The interface of a DAAM method (one module per method in this package)."""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

from .._capture import CallState, block_attention, kernel_backend
from ..adapters import Adapter
from ..adapters.base import Core
from ..targets import Scored

__all__ = ["Method"]


class Method:
    """How one method computes the maps of a call.

    A method is one object (``METHOD`` in its module, listed in :data:`daam_fast.methods.METHODS`).
    The explainer patches every block's attention with :meth:`core` for the duration of its
    context, holds the model frozen, and per call builds a :class:`~daam_fast._capture.CallState`
    and calls :meth:`run`, which fills ``st.maps`` (and ``st.head_maps``) per block.

    Attributes:
        name: the ``method=`` string.
        summary: one line for help texts.
        forward_only: no backward through the blocks (``activation_checkpointing=True`` is refused).
        reduce_first_block: the block-1 row split of "grad" applies (exact; always on where
            the model's family supports it).
        reduce_last_block: the last block may compute only the rows the head reads (exact;
            always on where the family supports it).
        kernel_row: the method reads the [class] row in the forward, so the cls_attention
            kernel may produce it beside the attention output (only when a kernel backend
            is asked for explicitly, see :func:`daam_fast._capture.kernel_backend`).
        traceable: the capturing attention has no Python side effects, so ``compile=True``
            compiles it inside each block; otherwise it is left eager (``torch.compiler.disable``).
    """

    name: str = ""
    summary: str = ""
    forward_only: bool = False
    reduce_first_block: bool = False
    reduce_last_block: bool = True
    kernel_row: bool = False
    traceable: bool = False

    def support(self, adapter: Adapter) -> Optional[str]:
        """None if the method can explain the model, else the reason it cannot."""
        return None

    def core(self, adapter: Adapter, b: int, state: Callable[[], CallState]) -> Core:
        """Block b's attention core ``core(x, rows, ctx)`` (see :mod:`daam_fast.adapters.base`).

        The default runs the shared attention core (:func:`daam_fast._capture.block_attention`)
        and hands everything to :meth:`capture`. ``state()`` is the current call's state.
        """
        scale = adapter.scale(b)

        def core(x: Tensor, rows: Optional[int], ctx) -> Tensor:
            st = state()
            att = block_attention(adapter, b, x, rows, ctx,
                                  row_kernel=kernel_backend(st.backend) if self.kernel_row else None)
            return self.capture(st, b, scale, x, rows, att.q, att.k, att.v, att.T, att.row, att.bias)

        return core

    def capture(self, st: CallState, b: int, scale: float, x: Tensor, rows: Optional[int], q: Tensor,
                k: Tensor, v: Tensor, T: Tensor, a: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
        """Keep what block b's map needs; return the attention module's output.

        Args:
            x: (B, N, C) attention input.  rows: query rows (None: all).  q: (B, H, R, d),
            k, v: (B, H, N, d).  T: (B, R, H*d) attention output before the projection.
            a: (B, H, N) the [class] row when the kernel wrote it, else None.
            bias: (1 or B, H, N, N) attention bias or None.
        """
        raise NotImplementedError

    def run(self, st: CallState, images: Tensor) -> Scored:
        """The call: forward (and backward), filling ``st.maps`` / ``st.head_maps``.

        Args:
            images: (R, C, H, W) the batch the model runs (each image ``st.target.per_image`` times).

        Returns:
            What the target made of the model output. Value checks go to ``st.checks``
            (read after this returns).
        """
        raise NotImplementedError

    def score(self, st: CallState, out: Tensor) -> Scored:
        """The model output's check (left to the end of the call) and the target's scores."""
        st.checks.add_output(out, st.target.per_image)
        return st.target.score(out)
