"""Reference of method="direct" (docs/method.md §7), literally: G_b = proj_b.weight^T (ls_b.gamma *
dY/dx_L[0]), with dY/dx_L by autograd (placed in row 0, or row P for a mean-pooled model,
whose patch rows are summed by the caller)."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .._session import in_this_call
from ..adapters import Adapter
from ..targets import Scored, Target


def support(adapter: Adapter) -> Optional[str]:
    return adapter.direct_support()


def coefficients(adapter: Adapter, x: Tensor, store: List[dict], target: Target) -> Tuple[List[Tensor], Scored]:
    x_last: list = []
    hook = adapter.final_norm().register_forward_pre_hook(in_this_call(lambda _mod, args: x_last.append(args[0])))
    try:
        out = adapter.run(x)
    finally:
        hook.remove()
    scored = target.score(out)
    (r,) = torch.autograd.grad(scored.y.sum(), x_last)                     # dY/dx_L (B, N, C)
    P = adapter.num_prefix
    r = r[:, 0] if adapter.pool == "token" else r[:, P:].sum(dim=1)
    grads = []
    for b in range(adapter.depth):
        proj_w, gamma = adapter.residual_weights(b)
        gamma = torch.ones_like(r[0]) if gamma is None else gamma
        G0 = (gamma * r) @ proj_w                                          # proj^T (ls * dY/dx_L[0])
        G = G0.new_zeros(r.shape[0], store[b]["T"].shape[1], G0.shape[1])
        G[:, 0 if adapter.pool == "token" else P] = G0
        grads.append(G)
    return grads, scored
