"""GPU benchmark: every backend of every fused op, and the explainer end to end.

    .venv/bin/python benchmarks/gpu.py                 # on a machine with a CUDA GPU (make bench-gpu)
    .venv/bin/python benchmarks/gpu.py --quick         # fewer shapes and repetitions
    .venv/bin/python benchmarks/gpu.py --cpu-smoke     # the same code path on the CPU, tiny shapes
                                                       # (checks this script; figures meaningless)

Ops, per shape, each available backend (cuda extension, triton, torch), timed with CUDA events
(median of --reps after warm-up), with the bytes each op must move and the resulting GB/s:
  block_map(q_cls, k, v, g)         reads k and v once
  cls_attention(q, k, v)            flash forward + [class] row; baseline: plain SDPA
  render(maps, images)              fused frames; baseline: the torch path
End to end (random-weight timm models, batch --batch): inference, daam_fast grad and direct
with each op backend, daam_fast.reference; ms per image, images/s and the ratio to inference.
Without a CUDA device it prints why and exits 0 (there is no GPU where this was written:
the first GPU run produces the figures the README marks as pending).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from daam_fast.ops import _dispatch  # noqa: E402
from daam_fast.ops.block_map import block_map  # noqa: E402
from daam_fast.ops.cls_attention import cls_attention  # noqa: E402
from daam_fast.ops.render import render_frames  # noqa: E402

OP_BACKENDS = ("cuda", "triton", "torch")


def gpu_status() -> Tuple[bool, str]:
    """Whether a CUDA device can run this benchmark, and if not, why."""
    if not torch.cuda.is_available():
        built = "with" if torch.version.cuda else "without"
        return False, (f"no CUDA device visible to torch {torch.__version__} (built {built} CUDA "
                       f"{torch.version.cuda or ''}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return True, torch.cuda.get_device_name(0)


def time_ms(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()``: CUDA events on a GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    ts: List[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            ts.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def _backends(op: str, device: torch.device, names: Sequence[str]) -> List[str]:
    out = []
    for n in names:
        ok, why = _dispatch.backend_status(op, n)
        if ok and not (n == "cuda" and device.type != "cuda") and not (n == "cpp" and device.type != "cpu"):
            out.append(n)
        elif n != "cpp":
            print(f"  ({op}: backend {n} skipped: {why or 'not for this device'})")
    return out


def _row(op: str, shape: str, backend: str, ms: float, nbytes: float, base: Optional[float]) -> str:
    gbs = nbytes / (ms * 1e-3) / 1e9
    ratio = f"{base / ms:.2f}x" if base else "-"
    return f"| {op} | {shape} | {backend} | {ms:.3f} | {gbs:.1f} | {ratio} |"


def bench_ops(device: torch.device, reps: int, quick: bool, smoke: bool, dtype: torch.dtype) -> None:
    names = ("cpp", "triton", "torch") if device.type == "cpu" else OP_BACKENDS
    el = torch.tensor([], dtype=dtype).element_size()
    print("\n| op | shape | backend | median ms | GB/s | speed-up vs torch |\n|---|---|---|---:|---:|---:|")
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*s):
        return torch.randn(*s, generator=gen).to(device=device, dtype=dtype)

    # block_map: (B, H, N, d)
    shapes = [(2, 2, 17, 32)] if smoke else ([(8, 6, 197, 64), (8, 6, 785, 64)] if quick else
                                             [(8, 6, 197, 64), (8, 6, 785, 64), (8, 12, 577, 64), (64, 6, 197, 64)])
    for B, H, N, d in shapes:
        qkv = rnd(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        g = rnd(B, H, d).clamp_min(0)
        nbytes = el * (2 * B * H * N * d + 2 * B * H * d) + 4 * B * N
        times = {b: time_ms(lambda b=b: block_map(q[:, :, 0], k, v, g, d ** -0.5, 1, backend=b), device, reps)
                 for b in _backends("block_map", device, names)}
        for b, ms in times.items():
            print(_row("block_map", f"B{B}-H{H}-N{N}-d{d}", b, ms, nbytes, times.get("torch")))

    # cls_attention: (B, H, N, d), M = N
    shapes = [(1, 2, 33, 32)] if smoke else ([(8, 6, 197, 64), (8, 6, 785, 64)] if quick else
                                             [(8, 6, 197, 64), (8, 6, 785, 64), (8, 12, 577, 64), (32, 6, 197, 64)])
    for B, H, N, d in shapes:
        qkv = rnd(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        nbytes = el * 4 * B * H * N * d + 4 * B * H * N
        sdpa = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), device, reps)
        print(_row("cls_attention", f"B{B}-H{H}-N{N}-d{d}", "SDPA alone (no row)", sdpa, nbytes, None))
        times = {b: time_ms(lambda b=b: cls_attention(q, k, v, backend=b), device, reps)
                 for b in _backends("cls_attention", device, names)}
        for b, ms in times.items():
            print(_row("cls_attention", f"B{B}-H{H}-N{N}-d{d}", b, ms, nbytes, times.get("torch")))

    # render: (B, L, h, w) -> (H, W) overlays
    shapes = [(1, 2, 5, 7, 20, 28)] if smoke else ([(8, 12, 14, 14, 224, 224)] if quick else
                                                   [(8, 12, 14, 14, 224, 224), (8, 12, 28, 28, 224, 224),
                                                    (32, 12, 24, 24, 384, 384)])
    for B, L, h, w, Hh, Ww in shapes:
        maps = torch.cumsum(torch.rand(B, L, h, w, generator=gen), 1).to(device)
        img = torch.randint(0, 256, (B, 3, Hh, Ww), generator=gen, dtype=torch.uint8).to(device)
        nbytes = 4 * B * L * h * w + 3 * B * Hh * Ww + 3 * B * L * Hh * Ww
        times = {b: time_ms(lambda b=b: render_frames(maps, img, backend=b), device, reps)
                 for b in _backends("render", device, names)}
        for b, ms in times.items():
            print(_row("render", f"B{B}-L{L}-{h}x{w}-to-{Hh}x{Ww}", b, ms, nbytes, times.get("torch")))


def bench_e2e(device: torch.device, reps: int, models: Sequence[str], batch: int, smoke: bool) -> None:
    import timm

    from daam_fast import DAAM
    from daam_fast.bench import LIMIT, _forward_input_backward
    from daam_fast.reference import daam_reference

    print("\n| model | provider | median ms / image | images / s | ratio to inference |\n|---|---|---:|---:|---:|")
    for name in models:
        torch.manual_seed(0)
        kw = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2) if smoke else {}
        model = timm.create_model(name, pretrained=False, **kw).eval().to(device)
        x = torch.randn(batch, 3, *model.patch_embed.img_size, generator=torch.Generator().manual_seed(0)).to(device)
        provs: Dict[str, Callable[[], object]] = {}

        def inference():
            with torch.no_grad():
                return model(x)
        provs["inference"] = inference
        op_backends = ("cpp", "torch") if device.type == "cpu" else OP_BACKENDS
        for method in ("grad", "direct"):
            for b in op_backends:
                if not _dispatch.backend_status("block_map", b)[0]:
                    continue
                explainer = DAAM(model, method=method, backend=b)
                provs[f"daam_fast {method} ({b})"] = (lambda e=explainer: e(x))   # patches and restores per call
        for label, kw in (("grad checkpoint", dict(checkpoint=True)), ("grad compile", dict(compile=True)),
                          ("direct compile", dict(method="direct", compile=True))):
            explainer = DAAM(model, **kw)                  # the default backend of the device
            provs[f"daam_fast {label}"] = (lambda e=explainer: e(x))
        provs[LIMIT] = lambda f=_forward_input_backward(model): f(x)
        provs["daam_fast.reference"] = lambda: daam_reference(model, x)
        times, peak = {}, {}
        for p, fn in provs.items():
            try:
                times[p] = time_ms(fn, device, reps, warmup=2)     # warm-up includes compile=True's compile
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                    torch.cuda.reset_peak_memory_stats(device)
                    base_mb = torch.cuda.memory_allocated(device) / 2**20
                    fn()
                    torch.cuda.synchronize(device)
                    peak[p] = torch.cuda.max_memory_allocated(device) / 2**20 - base_mb
            except Exception as e:  # noqa: BLE001 - report and go on: one failure must not hide the rest
                print(f"  ({name}: {p} failed: {type(e).__name__}: {e})")
        base = times.get("inference")
        for p, ms in times.items():
            per = ms / batch
            ratio = f"{ms / base:.2f}x" if base else "-"
            mem = f" (peak +{peak[p]:.0f} MB)" if p in peak else ""
            print(f"| {name} | {p}{mem} | {per:.2f} | {1e3 / per:.1f} | {ratio} |")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--models", default="deit_small_patch16_224,vit_small_patch8_224,vit_base_patch16_384")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="dtype of the op benchmarks' inputs")
    ap.add_argument("--quick", action="store_true", help="fewer shapes and models")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="run the same code on the CPU at tiny sizes (checks the script; figures meaningless)")
    ap.add_argument("--no-e2e", action="store_true")
    args = ap.parse_args(argv)

    if args.cpu_smoke:
        device = torch.device("cpu")
        print("daam_fast GPU benchmark, CPU smoke run (tiny shapes, perf_counter timing: not GPU figures)")
    else:
        ok, why = gpu_status()
        if not ok:
            print(f"daam_fast GPU benchmark: skipped, {why}.\n"
                  "Run it on a machine with a CUDA GPU (make bench-gpu); CPU figures: benchmarks/bench_*.py.")
            return 0
        device = torch.device("cuda")
        print(f"daam_fast GPU benchmark on {why}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"timing: CUDA events, median of {args.reps}")
    dtype = getattr(torch, args.dtype)
    bench_ops(device, args.reps, args.quick, args.cpu_smoke, dtype)
    if not args.no_e2e:
        models = [m for m in args.models.split(",") if m]
        if args.cpu_smoke:
            models = ["vit_small_patch16_224"]
        elif args.quick:
            models = models[:1]
        bench_e2e(device, args.reps, models, 2 if args.cpu_smoke else args.batch, args.cpu_smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
