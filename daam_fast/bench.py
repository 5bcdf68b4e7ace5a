"""Side-by-side end-to-end benchmark, shared by ``benchmarks/`` and ``daam-fast bench``.

Providers (same model, same inputs, one process, round-robin so machine noise hits all
alike): plain inference (the baseline of every ratio), daam_fast grad / direct / row /
reference, and, when installed, the other DAAM package on PyPI (``daam-timm-vit``, which
turns fused attention off and keeps every N x N matrix) and pytorch-grad-cam's GradCAM on
the last block. Peak memory is measured per provider in a fresh subprocess (peak RSS above
the loaded model). The ``daam-fast bench`` command is :mod:`daam_fast.cli.bench`.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from .explainer import DAAM
from .reference import daam_reference

__all__ = ["make_model", "make_inputs", "providers", "side_by_side", "paired_ratio", "table", "peak_memory"]

PROVIDERS = ("inference", "daam_fast grad", "daam_fast direct", "daam_fast row", "daam_fast.reference", "daam-timm-vit",
             "grad-cam GradCAM")
# DAAM options measured by `make bench` (and by `daam-fast bench --providers ...`); not in the
# default table: compile=True spends its first call compiling.
OPTIONS = {"daam_fast grad checkpoint": dict(activation_checkpointing=True),
           "daam_fast grad compile": dict(compile=True),
           "daam_fast direct compile": dict(method="direct", compile=True)}
# The floor the issue names for "grad": one plain forward plus one input-only backward that
# stops at block 1's T (the input of blocks[0].attn.proj), frozen weights, no maps.
LIMIT = "forward + input-only backward"
KNOWN = PROVIDERS + tuple(OPTIONS) + (LIMIT,)


def make_model(name: str = "deit_small_patch16_224", **kw) -> nn.Module:
    """Random-weight timm model (or a shipped zoo model), eval mode."""
    if name.startswith("shapes_vit"):
        from .zoo import load_model
        return load_model(name)
    import timm
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kw).eval()


def make_inputs(model: nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    H, W = model.patch_embed.img_size
    return torch.randn(batch, 3, H, W, generator=torch.Generator().manual_seed(seed))


def _gradcam(model: nn.Module) -> Callable:
    from pytorch_grad_cam import GradCAM

    P = int(model.num_prefix_tokens)
    gh, gw = model.patch_embed.grid_size

    def reshape(t):
        return t[:, P:].reshape(t.shape[0], gh, gw, t.shape[-1]).permute(0, 3, 1, 2)

    cam = GradCAM(model=model, target_layers=[model.blocks[-1].norm1], reshape_transform=reshape)

    def run(x):
        return cam(input_tensor=x, targets=None)

    return run


def _forward_input_backward(model: nn.Module) -> Callable:
    first = model.blocks[0].attn.proj
    held = {}

    def grab(_mod, args):
        held["T"] = args[0].detach().requires_grad_(True)
        return (held["T"],)

    def run(x):
        frozen = [p for p in model.parameters() if p.requires_grad]
        handle = first.register_forward_pre_hook(grab)
        try:
            for p in frozen:
                p.requires_grad_(False)
            with torch.enable_grad():
                out = model(x)
                Y = out.gather(1, out.argmax(dim=1, keepdim=True)).sum()
                return torch.autograd.grad(Y, [held.pop("T")])
        finally:
            handle.remove()
            for p in frozen:
                p.requires_grad_(True)

    return run


def providers(model: nn.Module, names=PROVIDERS) -> Dict[str, Callable[[torch.Tensor], object]]:
    """name -> function(images); providers whose package is missing are left out (see `missing`)."""
    out: Dict[str, Callable] = {}
    for name in names:
        if name == "inference":
            def inference(x):
                with torch.inference_mode():
                    return model(x)
            out[name] = inference
        elif name in ("daam_fast grad", "daam_fast direct", "daam_fast row") or name in OPTIONS:
            d = DAAM(model, **OPTIONS.get(name, dict(method=name.split()[-1])))

            def run(x, d=d):
                with d:
                    return d(x)
            out[name] = run
        elif name == LIMIT:
            out[name] = _forward_input_backward(model)
        elif name == "daam_fast.reference":
            out[name] = lambda x: daam_reference(model, x)
        elif name == "daam-timm-vit":
            try:
                import daam as daam_timm_vit
            except ImportError:
                continue

            def other(x):
                with daam_timm_vit.DAAM(model) as d:
                    return d(x)
            out[name] = other
        elif name == "grad-cam GradCAM":
            try:
                out[name] = _gradcam(model)
            except ImportError:
                continue
        else:
            raise ValueError(f"unknown provider {name!r}; known: {', '.join(KNOWN)}")
    return out


def side_by_side(fns: Dict[str, Callable], x: torch.Tensor, reps: int = 5, warmup: int = 1,
                 progress: bool = False) -> Dict[str, List[float]]:
    """Round-robin timing: each rep runs every provider once. Returns seconds per call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn(x)
    times: Dict[str, List[float]] = {k: [] for k in fns}
    it = range(reps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="benchmark reps", unit="rep")
    for _ in it:
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn(x)
            times[k].append(time.perf_counter() - t0)
    return times


def paired_ratio(ts: List[float], base: List[float]) -> float:
    """Median over rounds of ts[i] / base[i] (both from one side_by_side run)."""
    if len(ts) != len(base):
        return statistics.median(ts) / statistics.median(base)
    return statistics.median(t / b for t, b in zip(ts, base))


def table(times: Dict[str, List[float]], batch: int, baseline: str = "inference",
          memory: Optional[Dict[str, float]] = None) -> str:
    """Markdown table: median ms / image, images / s, ratio to the baseline (and peak memory).

    The ratio is paired: the median over rounds of each round's time over the baseline's in
    the same round (side_by_side runs every provider once per round), so slow drifts of
    the machine's speed cancel."""
    base = times.get(baseline)
    head = "| provider | median ms / image | images / s | ratio to inference |"
    sep = "|---|---:|---:|---:|"
    if memory:
        head += " peak memory above model (MB) |"
        sep += "---:|"
    rows = [head, sep]
    for k, ts in times.items():
        med = statistics.median(ts)
        ratio = f"{paired_ratio(ts, base):.2f}x" if base else "-"
        row = f"| {k} | {1000 * med / batch:.1f} | {batch / med:.1f} | {ratio} |"
        if memory:
            mem = memory.get(k)
            row += f" {mem:.0f} |" if mem is not None else " - |"
        rows.append(row)
    return "\n".join(rows)


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_mb() -> float:
    """Peak RSS of this process image (VmHWM, MB). Not ru_maxrss: Linux carries the parent's
    high-water mark across fork + exec into it, so a child of a big benchmark process would
    report the parent's peak."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0     # kB -> MB (Linux)


def _memory_child(model_name: str, provider: str, batch: int) -> None:
    torch.set_num_threads(2)
    model = make_model(model_name)
    x = make_inputs(model, batch)
    fns = providers(model, [provider])
    if provider not in fns:
        print(json.dumps({"provider": provider, "peak_mb": None}))
        return
    base = _rss_mb()
    fns[provider](x)
    peak = _hwm_mb()
    print(json.dumps({"provider": provider, "peak_mb": peak - base}))


def peak_memory(model_name: str, provider: str, batch: int) -> Optional[float]:
    """Peak RSS (MB) of one explained batch above the loaded model and inputs, in a fresh process."""
    code = ("import sys; from daam_fast.bench import _memory_child; "
            "_memory_child(sys.argv[1], sys.argv[2], int(sys.argv[3]))")
    out = subprocess.run([sys.executable, "-c", code, model_name, provider, str(batch)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def run_bench(model_name: str, batch: int, reps: int, threads: int, names=PROVIDERS, memory: bool = False,
              progress: bool = True) -> str:
    torch.set_num_threads(threads)
    model = make_model(model_name)
    x = make_inputs(model, batch)
    fns = providers(model, names)
    missing = [n for n in names if n not in fns]
    times = side_by_side(fns, x, reps=reps, progress=progress)
    mem = {k: peak_memory(model_name, k, batch) for k in fns} if memory else None
    head = (f"{model_name}, batch {batch}, {threads} threads, {reps} reps, CPU ({torch.__version__}); "
            f"medians, measured side by side in one process")
    if missing:
        head += f"\nnot installed (left out): {', '.join(missing)}"
    return head + "\n\n" + table(times, batch, memory=mem)
