"""Reference of method="row" (docs/method.md §8), literally.

The full model runs with the explicit N x N softmax in every block, in which the keys and
values of the tokens j >= R (R = the rows the head reads) are detached: the rows 0..R-1 then
depend on the other tokens only through constants, which is the row path. Autograd of Y with
respect to every block's full T_b gives G_b = dY/dT_b[0] on that path. Shares nothing with the
fast path (daam_fast/methods/row.py) but the adapter and the explicit softmax
(:func:`daam_fast._rows.softmax_rows`).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..adapters import Adapter
from ..adapters.base import Core
from ..targets import Scored, Target
from ._explicit import explicit_core


def support(adapter: Adapter) -> Optional[str]:
    if adapter.pool != "token" or adapter.head_rows is None:
        return "method='row' follows the rows the head reads; a mean-pooled model (global_pool='avg') reads every row"
    return None


def core(adapter: Adapter, b: int, store: List[dict]) -> Core:
    """Block b's explicit attention with the keys and values of the tokens j >= R detached
    (:func:`~daam_fast.reference._explicit.explicit_core` with ``detach_from=R``)."""
    return explicit_core(adapter, b, store, detach_from=int(adapter.head_rows))


def coefficients(adapter: Adapter, x: Tensor, store: List[dict], target: Target) -> Tuple[List[Tensor], Scored]:
    scored = target.score(adapter.run(x))
    grads = torch.autograd.grad(scored.y.sum(), [s["T"] for s in store])  # row 0 is read by the caller
    return list(grads), scored
