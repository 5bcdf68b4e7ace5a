"""Shared set-up of the end-to-end benchmarks: models, inputs, providers, side-by-side timing."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List

import timm
import torch

from daam_fast import DAAM, daam_reference


def make_model(name: str = "deit_small_patch16_224", **kw) -> torch.nn.Module:
    """Random-weight timm model (no downloads here); eval mode, parameters as timm creates them."""
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kw).eval()


def make_inputs(model: torch.nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    H, W = model.patch_embed.img_size
    return torch.randn(batch, 3, H, W, generator=torch.Generator().manual_seed(seed))


def providers(model: torch.nn.Module) -> Dict[str, Callable[[torch.Tensor], object]]:
    """name -> function(images). 'inference' is the baseline every ratio is taken against."""
    daam_grad = DAAM(model, method="grad")
    daam_direct = DAAM(model, method="direct")

    def inference(x):
        with torch.inference_mode():
            return model(x)

    def grad(x):
        with daam_grad:
            return daam_grad(x)

    def direct(x):
        with daam_direct:
            return daam_direct(x)

    def reference(x):
        return daam_reference(model, x)

    return {"inference": inference, "daam_fast grad": grad, "daam_fast direct": direct,
            "daam_fast.reference": reference}


def side_by_side(fns: Dict[str, Callable], x: torch.Tensor, reps: int = 5, warmup: int = 1) -> Dict[str, List[float]]:
    """Round-robin timing (each rep runs every provider once), so machine noise hits all alike.

    Returns seconds per call for each provider."""
    for fn in fns.values():
        for _ in range(warmup):
            fn(x)
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn(x)
            times[k].append(time.perf_counter() - t0)
    return times


def table(times: Dict[str, List[float]], batch: int, baseline: str = "inference") -> str:
    base = statistics.median(times[baseline])
    rows = ["| provider | median ms / image | images / s | ratio to inference |", "|---|---:|---:|---:|"]
    for k, ts in times.items():
        med = statistics.median(ts)
        rows.append(f"| {k} | {1000 * med / batch:.1f} | {batch / med:.1f} | {med / base:.2f}x |")
    return "\n".join(rows)
