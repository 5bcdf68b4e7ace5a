"""Reference of method="grad": G_b = dY/dT_b by autograd, for every row of every block's T_b."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..adapters import Adapter
from ..targets import Scored, Target


def support(adapter: Adapter) -> Optional[str]:
    return None


def coefficients(adapter: Adapter, x: Tensor, store: List[dict], target: Target) -> Tuple[List[Tensor], Scored]:
    """(dY/dT_b (B, N, C) per block, the target's scores) from one forward of ``x`` (B, C, H, W)."""
    out = adapter.run(x)
    scored = target.score(out)
    return list(torch.autograd.grad(scored.y.sum(), [s["T"] for s in store])), scored
