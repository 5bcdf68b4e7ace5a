"""Leaving a training model exactly as it was found: the guard around each monitor call."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

__all__ = ["preserved"]


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, no parameter gradients and autograd on for the duration; everything restored.

    Saved on entry and put back on exit (also on error; the exception is re-raised):
    every module's ``training`` flag, every parameter's ``requires_grad`` flag and ``.grad``
    tensor (the same tensor object, so an optimizer holding it is unaffected; with
    ``requires_grad`` off nothing can accumulate into it), the autograd mode, and the CPU and
    (where CUDA is initialised) every CUDA device's random number generator state.

    Args:
        model: any ``nn.Module``.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    grad_mode = torch.is_grad_enabled()
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield model
    finally:
        torch.set_grad_enabled(grad_mode)
        for p, f, g in zip(params, flags, grads):
            p.requires_grad_(f)
            if p.grad is not g:
                p.grad = g
        for m, mode in modes:
            if m.training != mode:
                m.training = mode
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
