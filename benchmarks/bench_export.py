"""DAAM exported (daam_fast.export) against plain inference, side by side in one process, CPU.

Per model and batch, timed round-robin (each round runs every provider once; the ratio is the
median over rounds of each round's time over ONNX Runtime inference's in the same round):

- ``ort-infer``: the plain model exported with ``torch.onnx.export(dynamo=True)``, in ONNX Runtime;
- ``ort-row``: ``to_onnx(model)`` (method="row"), in ONNX Runtime;
- ``ort-grad``: ``to_onnx(model, method="grad")``, and ``torch-grad``: eager ``DAAM(model,
  method="grad")`` (models named in ``--grad``);
- ``torch-infer``: the model in eager PyTorch under ``inference_mode``;
- ``torch-row``: eager ``DAAM(model, method="row")``;
- ``module-row``: the exported module (``saliency_module``) in eager PyTorch under ``no_grad``.

Every ONNX Runtime session gets the same options: ``--threads`` intra-op threads and a spin-wait
of ``--spin-us`` microseconds (default 100). ONNX Runtime's default spin-wait keeps the pool's
threads busy long after each op; with several sessions in one process, or on a machine whose
cores are shared (a 2-vCPU VM), those threads take the CPU from the one that works, and on the
development machine the plain model ran 1.7x slower with the default than with 100 us
(benchmarks/NOTES.md). ``--spin-us -1`` restores the default, ``0`` turns spinning off.

Targets (docs/export.md): ort-row / ort-infer <= 1.15 for deit_small_patch16_224 at batch 8,
<= 1.2 for the shipped shapes model at batch 16. Also printed: the export times and the graph
sizes (fx nodes of the traced module, ONNX nodes).

    .venv/bin/python benchmarks/bench_export.py --threads 2 --reps 7
    .venv/bin/python benchmarks/bench_export.py --cases shapes_vit:16,shapes_vit:1 --grad shapes_vit
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

TARGETS = {("deit_small_patch16_224", 8): 1.15, ("shapes_vit", 16): 1.2}


def _model(name: str):
    if name.startswith("shapes_vit"):
        from daam_fast.zoo import load_model
        return load_model(name)
    import timm
    return timm.create_model(name, pretrained=False).eval()


def _session(path: str, threads: int, spin_us: int):
    """An ONNX Runtime CPU session; spin_us: how long its pool's threads spin-wait for work
    after each parallel op (-1: ONNX Runtime's default; 0: never, they sleep at once)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if spin_us == 0:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif spin_us > 0:
        opts.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _onnx_nodes(path: str) -> int:
    import onnx
    return len(onnx.load(path, load_external_data=False).graph.node)


def export_all(name: str, grad: bool, tmp: str, optimize: bool) -> dict:
    """The model, its row module, and the ONNX files (plain, row[, grad]) with sizes and export times (s)."""
    from daam_fast.export import saliency_module, to_onnx
    model = _model(name)
    t0 = time.perf_counter()
    sal = saliency_module(model, model_name=name)
    info = {"trace_row_s": time.perf_counter() - t0, "fx_nodes_row": len(sal.graph.graph.nodes)}
    t0 = time.perf_counter()
    paths = {"row": to_onnx(sal, os.path.join(tmp, f"{name}-row.onnx"), optimize=optimize)}
    info["onnx_row_s"] = time.perf_counter() - t0
    info["onnx_nodes_row"] = _onnx_nodes(paths["row"])
    paths["plain"] = os.path.join(tmp, f"{name}-plain.onnx")
    x = torch.randn(2, sal.in_chans, *sal.input_size)
    t0 = time.perf_counter()
    torch.onnx.export(model, (x,), paths["plain"], dynamo=True, input_names=["pixels"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},), verbose=False,
                      optimize=optimize, external_data=False)
    info["onnx_plain_s"] = time.perf_counter() - t0
    info["onnx_nodes_plain"] = _onnx_nodes(paths["plain"])
    if grad:
        t0 = time.perf_counter()
        gsal = saliency_module(model, method="grad", model_name=name)
        info["trace_grad_s"] = time.perf_counter() - t0
        info["fx_nodes_grad"] = len(gsal.graph.graph.nodes)
        t0 = time.perf_counter()
        paths["grad"] = to_onnx(gsal, os.path.join(tmp, f"{name}-grad.onnx"), optimize=optimize)
        info["onnx_grad_s"] = time.perf_counter() - t0
        info["onnx_nodes_grad"] = _onnx_nodes(paths["grad"])
        info["onnx_mib_grad"] = os.path.getsize(paths["grad"]) / 2 ** 20
    info["onnx_mib_row"] = os.path.getsize(paths["row"]) / 2 ** 20
    info["onnx_mib_plain"] = os.path.getsize(paths["plain"]) / 2 ** 20
    return {"model": model, "sal": sal, "paths": paths, "info": info}


def run_case(ex: dict, batch: int, threads: int, reps: int, spin_us: int) -> dict:
    from daam_fast import DAAM
    model, sal, paths = ex["model"], ex["sal"], ex["paths"]
    x = torch.randn(batch, sal.in_chans, *sal.input_size, generator=torch.Generator().manual_seed(0))
    xn = x.numpy()
    s_inf, s_row = _session(paths["plain"], threads, spin_us), _session(paths["row"], threads, spin_us)
    daam = DAAM(model, method="row")
    providers = {
        "ort-infer": lambda: s_inf.run(None, {"pixels": xn}),
        "ort-row": lambda: s_row.run(None, {"pixels": xn}),
        "torch-infer": lambda: _infer(model, x),
        "torch-row": lambda: daam(x),
        "module-row": lambda: _no_grad(sal, x),
    }
    if "grad" in paths:
        s_grad = _session(paths["grad"], threads, spin_us)
        gdaam = DAAM(model, method="grad")
        providers.update({"ort-grad": lambda: s_grad.run(None, {"pixels": xn}), "torch-grad": lambda: gdaam(x)})
    for f in providers.values():          # warm-up
        f()
    times = {k: [] for k in providers}
    for _ in range(reps):
        for k, f in providers.items():
            time.sleep(0.02)              # every provider starts with the other pools' threads asleep
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    base = times["ort-infer"]
    rows = {k: (1000 * statistics.median(v) / batch, statistics.median([t / b for t, b in zip(v, base)]))
            for k, v in times.items()}
    return rows


def _infer(model, x):
    with torch.inference_mode():
        return model(x)


def _no_grad(sal, x):
    with torch.no_grad():
        return sal(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="deit_small_patch16_224:8,deit_small_patch16_224:1,shapes_vit:16,shapes_vit:1",
                    help="model:batch, comma-separated")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--grad", default="", help="models (comma-separated) also exported and timed with method='grad'")
    ap.add_argument("--no-optimize", action="store_true", help="leave out the exporter's ONNX optimiser (both files)")
    ap.add_argument("--spin-us", type=int, default=100,
                    help="ONNX Runtime's spin-wait of its pool threads after each parallel op, in microseconds, for "
                         "every session (-1: its default, 0: none; default 100)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    grad = set(filter(None, args.grad.split(",")))
    exported = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch in cases:
            if name not in exported:
                exported[name] = export_all(name, name in grad, tmp, not args.no_optimize)
                info = exported[name]["info"]
                print(f"\n{name}: sizes and export times (s): "
                      + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()),
                      flush=True)
            rows = run_case(exported[name], batch, args.threads, args.reps, args.spin_us)
            print(f"\n### {name}, batch {batch}, {args.threads} threads, spin {args.spin_us} us, "
                  f"median of {args.reps} rounds")
            print("| provider | ms / image | ratio to ort-infer (same round) |\n|---|---|---|")
            for k, (ms, ratio) in rows.items():
                print(f"| {k} | {ms:.2f} | {ratio:.3f} |")
            target = TARGETS.get((name, batch))
            if target is not None:
                ok = rows["ort-row"][1] <= target
                print(f"target ort-row / ort-infer <= {target}: {'met' if ok else 'NOT met'}", flush=True)


if __name__ == "__main__":
    main()
