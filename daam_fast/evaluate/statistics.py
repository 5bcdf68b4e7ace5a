"""Statistics of an evaluation: Spearman rank correlation, means with standard errors, the summary."""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
from torch import Tensor

__all__ = ["spearman", "summarize"]


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row, ties given their average rank.

    rho = Pearson(rank(a), rank(b)); a constant row gives NaN.

    Args:
        a, b: (B, M) (or (B, ...), flattened per row).

    Returns:
        (B,) float32.
    """
    a, b = a.reshape(a.shape[0], -1).float(), b.reshape(b.shape[0], -1).float()

    def ranks(x: Tensor) -> Tensor:
        B, Mn = x.shape
        v, idx = x.sort(dim=1)
        new = torch.ones_like(v, dtype=torch.bool)
        new[:, 1:] = v[:, 1:] != v[:, :-1]
        gid = new.long().cumsum(dim=1) - 1 + torch.arange(B, device=x.device)[:, None] * Mn   # group ids, unique per row
        pos = torch.arange(Mn, device=x.device, dtype=torch.float32).expand(B, Mn)
        tot = torch.zeros(B * Mn, device=x.device).index_add_(0, gid.flatten(), pos.flatten())
        cnt = torch.zeros(B * Mn, device=x.device).index_add_(0, gid.flatten(), torch.ones(B * Mn, device=x.device))
        avg = (tot / cnt.clamp_min(1))[gid]
        out = torch.empty_like(avg)
        out.scatter_(1, idx, avg)
        return out

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    den = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    return torch.where(den > 0, (ra * rb).sum(1) / den.clamp_min(1e-30), torch.full_like(den, float("nan")))


def _mean_se(v: Tensor) -> Tuple[float, float, int]:
    v = v[~torch.isnan(v)].double()
    k = v.numel()
    if k == 0:
        return float("nan"), float("nan"), 0
    se = float(v.std(unbiased=True) / math.sqrt(k)) if k > 1 else float("nan")
    return float(v.mean()), se, k


def summarize(results: dict) -> dict:
    """Means and standard errors: {metric: {method: (mean, se, count)}} plus "direct_vs_grad" and timings."""
    table: Dict[str, Dict[str, Tuple[float, float, int]]] = {}
    from .config import ROWS
    for key, _label, scale, _ in ROWS:
        for meth in results["methods"]:
            v = results["per_image"][meth].get(key)
            if v is None:
                continue
            m, se, k = _mean_se(v * scale)
            table.setdefault(key, {})[meth] = (m, se, k)
    summary = {"table": table, "ms_per_image": {m: 1000 * s / results["n"] for m, s in results["seconds"].items()}}
    if "daam" in results["final"] and "direct" in results["final"]:
        g, d = results["final"]["daam"], results["final"]["direct"]
        rho = spearman(d, g)
        same = (g.flatten(1).argmax(1) == d.flatten(1).argmax(1)).float()
        q = torch.nanquantile(rho.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
        summary["direct_vs_grad"] = {"spearman": _mean_se(rho), "spearman_quartiles": q,
                                     "same_argmax_patch_pct": _mean_se(100 * same)}
    return summary
