"""The fused ops as PyTorch ops: ``daam_fast::block_map``, ``daam_fast::cls_attention`` and
``daam_fast::render`` (``torch.library.custom_op`` with ``register_fake``; cls_attention also
``register_autograd``), so Dynamo keeps them in the graph (no graph break), fake tensors and
``torch.export`` see their output shapes, and ``torch.library.opcheck`` tests them.

Gated on the torch version: with a torch older than 2.4 (no ``custom_op``) the public functions
call the backends directly, as before. The backend is chosen outside the op (``resolve``: the
``backend`` argument, ``DAAM_FAST_BACKEND``, availability on the device, the kernels' size limits), a constant for Dynamo, and passed
in as a string. Triton kernels run inside the op (opaque to Inductor; ``triton_op`` /
``wrap_triton`` were not adopted: they cannot be exercised without a GPU, see benchmarks/NOTES.md).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _dispatch

HAS_CUSTOM_OP = hasattr(torch.library, "custom_op") and hasattr(torch.library, "register_fake")
HAS_TRITON_OP = HAS_CUSTOM_OP and hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")


def use_triton_op(backend: str, t: torch.Tensor) -> bool:
    """Whether this call takes the ``daam_fast::<op>_triton`` op (Triton on CUDA tensors)."""
    return HAS_TRITON_OP and backend == "triton" and t.device.type == "cuda"


def wrap(kernel):
    """``wrap_triton(kernel)``: how the Triton launch functions launch inside a triton_op."""
    return torch.library.wrap_triton(kernel)


def _constant(fn):
    deco = getattr(torch.compiler, "assume_constant_result", None)
    return deco(fn) if deco is not None else fn


@_constant
def resolve(op: str, device: str, backend: Optional[str], sizes: Tuple[int, ...]) -> str:
    """The backend that runs ``op`` on tensors of ``device`` (e.g. "cuda:0") with ``sizes`` (see
    ``_dispatch.SIZES``): a trace-time constant for Dynamo."""
    return _dispatch.resolve(op, torch.device(device), backend, sizes)
