"""GPU benchmark: every backend of every fused op, and the explainer end to end.

    python3 benchmarks/gpu.py --quick --out DIR      # make gpu-check's run: JSON + Markdown in DIR,
                                                     # rewritten after every section
    python3 benchmarks/gpu.py --dtype float32,bfloat16 --out DIR    # all shapes and models (make bench-gpu)
    python3 benchmarks/gpu.py --cpu-smoke --out DIR  # the same code path on the CPU, tiny shapes
                                                     # (checks this script; figures meaningless)

Timing: each figure is the median over --reps of (one CUDA event pair around --launches calls)
/ --launches, so microsecond ops are not timed as Python dispatch plus a sync; the op inputs
rotate through enough copies to exceed twice the L2 cache (each call reads cold memory, as in
a model). --dtype is honoured end to end: op inputs in that dtype, models run under
torch.autocast for float16 / bfloat16.

Ops, per shape, dtype and available backend (cuda extension, triton, torch), with the bytes
each op must move and the resulting GB/s:
  block_map(q_cls, k, v, g)         reads k and v once
  cls_attention(q, k, v)            flash forward + [class] row; baseline: plain SDPA
  render(maps, images)              fused frames (float32 maps); baseline: the torch path
End to end (random-weight timm ViT-S/16 and ViT-B/16, batch --batch, 64 with --quick):
inference, daam_fast grad and direct (default backend; every op backend without --quick),
images/s and peak memory above the model. Without a CUDA device it prints why and exits 0.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gpu_report  # noqa: E402

from daam_fast.ops import _dispatch  # noqa: E402
from daam_fast.ops.block_map import block_map  # noqa: E402
from daam_fast.ops.cls_attention import cls_attention  # noqa: E402
from daam_fast.ops.render import render_frames  # noqa: E402

OP_BACKENDS = ("cuda", "triton", "torch")
MODELS = "vit_small_patch16_224,vit_base_patch16_224"
RECORDS: List[Dict[str, object]] = []


def gpu_status() -> Tuple[bool, str]:
    """Whether a CUDA device can run this benchmark, and if not, why."""
    if not torch.cuda.is_available():
        built = "with" if torch.version.cuda else "without"
        return False, (f"no CUDA device visible to torch {torch.__version__} (built {built} CUDA "
                       f"{torch.version.cuda or ''}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return True, torch.cuda.get_device_name(0)


def l2_bytes(device: torch.device) -> int:
    if device.type != "cuda":
        return 1 << 20
    return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 64 << 20)


def copies_past_l2(device: torch.device, bytes_per_set: float, cap: int = 1024) -> int:
    """How many input copies to rotate through so that one pass reads > 2x the L2 cache."""
    return max(1, min(cap, math.ceil(2 * l2_bytes(device) / max(bytes_per_set, 1))))


def time_ms(fn: Callable[[int], object], device: torch.device, reps: int, launches: int = 1,
            warmup: int = 2) -> float:
    """Median milliseconds per call of ``fn(i)`` (i: the call's index, for rotating inputs):
    ``launches`` calls between one CUDA event pair, median of ``reps`` pairs."""
    for i in range(warmup):
        fn(i)
    ts: List[float] = []
    i = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(launches):
                fn(i)
                i += 1
            end.record()
            end.synchronize()
            ts.append(start.elapsed_time(end) / launches)
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(launches):
                fn(i)
                i += 1
            ts.append((time.perf_counter() - t0) * 1e3 / launches)
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


def _op_row(op: str, shape: str, dtype: str, backend: str, ms: float, nbytes: float, base: Optional[float]) -> None:
    gbs = nbytes / (ms * 1e-3) / 1e9
    ratio = base / ms if base else None
    RECORDS.append(dict(section="op", op=op, shape=shape, dtype=dtype, backend=backend, ms=ms, gbs=gbs,
                        speedup_vs_torch=ratio))
    print(f"| {op} | {shape} | {dtype} | {backend} | {ms:.4f} | {gbs:.1f} | {f'{ratio:.2f}x' if ratio else '-'} |")


def bench_ops(device: torch.device, reps: int, launches: int, quick: bool, smoke: bool, dtype: torch.dtype) -> None:
    names = ("cpp", "triton", "torch") if device.type == "cpu" else OP_BACKENDS
    dname = str(dtype).replace("torch.", "")
    el = torch.tensor([], dtype=dtype).element_size()
    print(f"\n| op | shape | dtype | backend | ms / call | GB/s | speed-up vs torch |\n|---|---|---|---|---:|---:|---:|")
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*s):
        return torch.randn(*s, generator=gen).to(device=device, dtype=dtype)

    # block_map: (B, H, N, d)
    shapes = [(2, 2, 17, 32)] if smoke else ([(1, 12, 197, 64), (64, 6, 197, 64), (64, 12, 197, 64)] if quick else
                                             [(1, 12, 197, 64), (8, 6, 785, 64), (8, 12, 577, 64),
                                              (64, 6, 197, 64), (64, 12, 197, 64)])
    for B, H, N, d in shapes:
        nbytes = el * (2 * B * H * N * d + 2 * B * H * d) + 4 * B * N
        sets = []
        for _ in range(copies_past_l2(device, el * 3 * B * H * N * d)):
            q, k, v = rnd(B, N, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)
            sets.append((q[:, :, 0], k, v, rnd(B, H, d).clamp_min(0)))
        times = {b: time_ms(lambda i, b=b: block_map(*sets[i % len(sets)], d ** -0.5, 1, backend=b),
                            device, reps, launches) for b in _backends("block_map", device, names)}
        for b, ms in times.items():
            _op_row("block_map", f"B{B}-H{H}-N{N}-d{d}", dname, b, ms, nbytes, times.get("torch"))

    # cls_attention: (B, H, N, d), M = N
    shapes = [(1, 2, 33, 32)] if smoke else ([(64, 6, 197, 64), (64, 12, 197, 64)] if quick else
                                             [(8, 6, 197, 64), (8, 6, 785, 64), (8, 12, 577, 64),
                                              (64, 6, 197, 64), (64, 12, 197, 64)])
    for B, H, N, d in shapes:
        nbytes = el * 4 * B * H * N * d + 4 * B * H * N
        sets = [rnd(B, N, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)
                for _ in range(copies_past_l2(device, el * 3 * B * H * N * d))]
        sdpa = time_ms(lambda i: torch.nn.functional.scaled_dot_product_attention(*sets[i % len(sets)]),
                       device, reps, launches)
        _op_row("cls_attention", f"B{B}-H{H}-N{N}-d{d}", dname, "SDPA alone (no row)", sdpa, nbytes, None)
        times = {b: time_ms(lambda i, b=b: cls_attention(*sets[i % len(sets)], backend=b), device, reps, launches)
                 for b in _backends("cls_attention", device, names)}
        for b, ms in times.items():
            _op_row("cls_attention", f"B{B}-H{H}-N{N}-d{d}", dname, b, ms, nbytes, times.get("torch"))

    # render: (B, L, h, w) float32 maps -> (H, W) overlays (maps are float32 whatever the model ran in)
    shapes = [(1, 2, 5, 7, 20, 28)] if smoke else ([(64, 12, 14, 14, 224, 224)] if quick else
                                                   [(8, 12, 14, 14, 224, 224), (8, 12, 28, 28, 224, 224),
                                                    (64, 12, 14, 14, 224, 224), (32, 12, 24, 24, 384, 384)])
    for B, L, h, w, Hh, Ww in shapes:
        nbytes = 4 * B * L * h * w + 3 * B * Hh * Ww + 3 * B * L * Hh * Ww
        sets = [(torch.cumsum(torch.rand(B, L, h, w, generator=gen), 1).to(device),
                 torch.randint(0, 256, (B, 3, Hh, Ww), generator=gen, dtype=torch.uint8).to(device))
                for _ in range(copies_past_l2(device, nbytes, cap=16))]
        times = {b: time_ms(lambda i, b=b: render_frames(*sets[i % len(sets)], backend=b), device, reps,
                            max(1, launches // 4)) for b in _backends("render", device, names)}
        for b, ms in times.items():
            _op_row("render", f"B{B}-L{L}-{h}x{w}-to-{Hh}x{Ww}", "float32 maps", b, ms, nbytes, times.get("torch"))


def _peak_mb(fn: Callable[[], object], device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def bench_e2e(device: torch.device, reps: int, models: Sequence[str], batch: int, smoke: bool, quick: bool,
              dtype: torch.dtype) -> None:
    import timm

    from daam_fast import DAAM

    dname = str(dtype).replace("torch.", "")
    amp = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    print(f"\n| model | dtype | provider | ms / image | images / s | ratio to inference | peak MB above the model |\n"
          "|---|---|---|---:|---:|---:|---:|")
    for name in models:
        torch.manual_seed(0)
        kw = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2) if smoke else {}
        model = timm.create_model(name, pretrained=False, **kw).eval().to(device)
        x = torch.randn(batch, 3, *model.patch_embed.img_size, generator=torch.Generator().manual_seed(0)).to(device)
        provs: Dict[str, Callable[[], object]] = {}

        def inference():
            with torch.no_grad(), amp:
                return model(x)
        provs["inference"] = inference
        backends = [None] if quick or smoke else [None] + [b for b in OP_BACKENDS if device.type == "cuda"]
        for method in ("grad", "direct"):
            for b in backends:
                if b is not None and not _dispatch.backend_status("block_map", b)[0]:
                    continue
                explainer = DAAM(model, method=method, backend=b)

                def call(e=explainer):
                    with amp:
                        return e(x)
                provs[f"daam_fast {method}" + (f" ({b})" if b else "")] = call
        if not quick and not smoke:
            from daam_fast.bench import LIMIT, _forward_input_backward
            for label, kw2 in (("grad checkpoint", dict(activation_checkpointing=True)), ("grad compile", dict(compile=True))):
                explainer = DAAM(model, **kw2)

                def call(e=explainer):
                    with amp:
                        return e(x)
                provs[f"daam_fast {label}"] = call
            provs[LIMIT] = lambda f=_forward_input_backward(model): f(x)
        times: Dict[str, float] = {}
        for p, fn in provs.items():
            try:
                times[p] = time_ms(lambda i, fn=fn: fn(), device, reps, 1, warmup=2)
                peak = _peak_mb(fn, device)
            except Exception as e:  # noqa: BLE001 - report and go on: one failure must not hide the rest
                print(f"  ({name} {dname}: {p} failed: {type(e).__name__}: {str(e)[:300]})")
                RECORDS.append(dict(section="e2e", model=name, dtype=dname, provider=p, error=f"{type(e).__name__}: {e}"))
                continue
            base = times.get("inference")
            per = times[p] / batch
            RECORDS.append(dict(section="e2e", model=name, dtype=dname, provider=p, batch=batch, ms_per_image=per,
                                images_per_s=1e3 / per, ratio_to_inference=times[p] / base if base else None,
                                peak_mb=peak))
            print(f"| {name} | {dname} | {p} | {per:.3f} | {1e3 / per:.1f} | "
                  f"{f'{times[p] / base:.2f}x' if base else '-'} | {f'{peak:.0f}' if peak is not None else '-'} |")
        del model, provs
        if device.type == "cuda":
            torch.cuda.empty_cache()


def write_outputs(out_dir: str, header: Dict[str, object]) -> None:
    """DIR/bench.json (the header and every record so far), then results.json / results.md
    (benchmarks/gpu_report.py, with make gpu-check's stages): called after every section, so a
    run cut short keeps what it measured."""
    os.makedirs(out_dir, exist_ok=True)
    bench = dict(header, records=RECORDS)
    tmp = os.path.join(out_dir, "bench.json.tmp")
    with open(tmp, "w") as f:
        json.dump(bench, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, "bench.json"))
    gpu_report.write(out_dir, bench)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=None, help="event pairs per figure (default 10, 5 with --quick)")
    ap.add_argument("--launches", type=int, default=50, help="op calls per event pair")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--dtype", default="float32,bfloat16",
                    help="comma list of float32 / float16 / bfloat16: op inputs and the models' autocast")
    ap.add_argument("--quick", action="store_true", help="the shapes and providers of make gpu-check")
    ap.add_argument("--out", default=None, help="directory for results.json and results.md")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="run the same code on the CPU at tiny sizes (checks the script; figures meaningless)")
    ap.add_argument("--no-e2e", action="store_true")
    args = ap.parse_args(argv)
    dtypes = [getattr(torch, d.strip()) for d in args.dtype.split(",") if d.strip()]
    for d in dtypes:
        if d not in (torch.float32, torch.float16, torch.bfloat16):
            ap.error(f"--dtype {d}: expected float32, float16 or bfloat16")
    reps = args.reps or (5 if args.quick else 10)
    RECORDS.clear()

    if args.cpu_smoke:
        device = torch.device("cpu")
        reps, launches = 1, 2
        header = dict(device="CPU smoke run (tiny shapes, perf_counter timing: not GPU figures)")
    else:
        ok, why = gpu_status()
        if not ok:
            print(f"daam_fast GPU benchmark: skipped, {why}.\n"
                  "Run it on a machine with a CUDA GPU (make bench-gpu / make gpu-check); CPU figures: "
                  "benchmarks/bench_*.py.")
            return 0
        device = torch.device("cuda")
        launches = args.launches
        header = dict(device=why, torch=torch.__version__, cuda=torch.version.cuda,
                      timing=f"CUDA events, {launches} op calls per event pair, median of {reps}; inputs rotated "
                             f"past 2x L2 ({l2_bytes(device) >> 20} MB)")
    header["dtypes"] = ",".join(str(d).replace("torch.", "") for d in dtypes)
    header["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header["command"] = "python3 benchmarks/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print("daam_fast GPU benchmark: " + "; ".join(f"{k} {v}" for k, v in header.items()))
    def done(section: str) -> None:
        if args.out:
            write_outputs(args.out, dict(header, finished=section))
    for dtype in dtypes:
        bench_ops(device, reps, launches, args.quick, args.cpu_smoke, dtype)
        done(f"ops {str(dtype).replace('torch.', '')}")
    if not args.no_e2e:
        models = ["vit_small_patch16_224"] if args.cpu_smoke else [m for m in args.models.split(",") if m]
        for dtype in dtypes:
            for model in models:
                bench_e2e(device, max(2, reps // 2) if args.cpu_smoke else reps, [model],
                          2 if args.cpu_smoke else args.batch, args.cpu_smoke, args.quick, dtype)
                done(f"e2e {model} {str(dtype).replace('torch.', '')}")
    if args.out:
        print(f"\nwrote {os.path.join(args.out, 'results.json')} and results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
