"""Statistics of an evaluation: Spearman rank correlation, means with standard errors, the summary."""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
from torch import Tensor

from ..metrics import spearman

__all__ = ["summarize"]


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
            pooled = results.get("trust", {}).get(meth, {}).get(key, {})
            if key == "pxap" and "pooled" in pooled:        # Choe et al.'s PxAP pools the pixels of all images
                m, se = pooled["pooled"] * scale, float("nan")
            table.setdefault(key, {})[meth] = (m, se, k)
    n = results["n"]
    summary = {"table": table, "ms_per_image": {m: 1000 * s / n for m, s in results["seconds"].items()},
               "metric_ms_per_image": {m: {g: 1000 * s / n for g, s in d.items()}
                                       for m, d in results.get("metric_seconds", {}).items()}}
    if "grad" in results["final"] and "direct" in results["final"]:
        g, d = results["final"]["grad"], results["final"]["direct"]
        rho = spearman(d, g)
        same = (g.flatten(1).argmax(1) == d.flatten(1).argmax(1)).float()
        q = torch.nanquantile(rho.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
        summary["direct_vs_grad"] = {"spearman": _mean_se(rho), "spearman_quartiles": q,
                                     "same_argmax_patch_pct": _mean_se(100 * same)}
    return summary
