"""DAAM exported (daam_fast.export) against plain inference, side by side in one process, CPU.

Per model and batch, timed round-robin (each round runs every provider once; the ratio is the
median over rounds of each round's time over ONNX Runtime inference's in the same round):

- ``ort-infer``: the plain model exported with ``torch.onnx.export(dynamo=True)``, in ONNX Runtime;
- ``ort-row``: ``to_onnx(model)`` (method="row"), in ONNX Runtime;
- ``ort-grad``: ``to_onnx(model, method="grad")`` (``--grad``);
- ``torch-infer``: the model in eager PyTorch under ``inference_mode``;
- ``torch-row``: eager ``DAAM(model, method="row")``;
- ``module-row``: the exported module (``saliency_module``) in eager PyTorch under ``no_grad``.

Targets (docs/export.md): ort-row / ort-infer <= 1.15 for deit_small_patch16_224 at batch 8,
<= 1.2 for the shipped shapes model at batch 16. Also printed: the export times and the graph
sizes (fx nodes of the traced module, ONNX nodes).

    .venv/bin/python benchmarks/bench_export.py --threads 2 --reps 7
    .venv/bin/python benchmarks/bench_export.py --cases shapes_vit:16,shapes_vit:1 --grad
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


def _session(path: str, threads: int):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _onnx_nodes(path: str) -> int:
    import onnx
    return len(onnx.load(path, load_external_data=False).graph.node)


def run_case(name: str, batch: int, threads: int, reps: int, grad: bool, tmp: str, optimize: bool) -> dict:
    from daam_fast import DAAM
    from daam_fast.export import saliency_module, to_onnx
    model = _model(name)
    sal = saliency_module(model, model_name=name)
    x = torch.randn(batch, sal.in_chans, *sal.input_size, generator=torch.Generator().manual_seed(0))
    xn = x.numpy()
    info = {"fx_nodes_row": len(sal.graph.graph.nodes)}
    t0 = time.perf_counter()
    row_path = to_onnx(sal, os.path.join(tmp, f"{name}-row.onnx"), optimize=optimize)
    info["export_row_s"] = time.perf_counter() - t0
    info["onnx_nodes_row"] = _onnx_nodes(row_path)
    plain = os.path.join(tmp, f"{name}-plain.onnx")
    t0 = time.perf_counter()
    torch.onnx.export(model, (x[:2],), plain, dynamo=True, input_names=["pixels"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},), verbose=False,
                      optimize=optimize)
    info["export_plain_s"] = time.perf_counter() - t0
    info["onnx_nodes_plain"] = _onnx_nodes(plain)
    s_inf, s_row = _session(plain, threads), _session(row_path, threads)
    daam = DAAM(model, method="row")
    providers = {
        "ort-infer": lambda: s_inf.run(None, {"pixels": xn}),
        "ort-row": lambda: s_row.run(None, {"pixels": xn}),
        "torch-infer": lambda: _infer(model, x),
        "torch-row": lambda: daam(x),
        "module-row": lambda: _no_grad(sal, x),
    }
    if grad:
        gsal = saliency_module(model, method="grad", model_name=name)
        info["fx_nodes_grad"] = len(gsal.graph.graph.nodes)
        t0 = time.perf_counter()
        grad_path = to_onnx(gsal, os.path.join(tmp, f"{name}-grad.onnx"), optimize=optimize)
        info["export_grad_s"] = time.perf_counter() - t0
        info["onnx_nodes_grad"] = _onnx_nodes(grad_path)
        s_grad = _session(grad_path, threads)
        gdaam = DAAM(model, method="grad")
        providers.update({"ort-grad": lambda: s_grad.run(None, {"pixels": xn}), "torch-grad": lambda: gdaam(x)})
    for f in providers.values():          # warm-up
        f()
    times = {k: [] for k in providers}
    for _ in range(reps):
        for k, f in providers.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    base = times["ort-infer"]
    rows = {k: (1000 * statistics.median(v) / batch, statistics.median([t / b for t, b in zip(v, base)]))
            for k, v in times.items()}
    return {"rows": rows, "info": info}


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
    ap.add_argument("--grad", action="store_true", help="also export and time method='grad'")
    ap.add_argument("--no-optimize", action="store_true", help="leave out the exporter's ONNX optimiser")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch in cases:
            r = run_case(name, batch, args.threads, args.reps, args.grad, tmp, not args.no_optimize)
            print(f"\n### {name}, batch {batch}, {args.threads} threads, median of {args.reps} rounds")
            print("| provider | ms / image | ratio to ort-infer (same round) |\n|---|---|---|")
            for k, (ms, ratio) in r["rows"].items():
                print(f"| {k} | {ms:.2f} | {ratio:.3f} |")
            target = TARGETS.get((name, batch))
            if target is not None:
                ok = r["rows"]["ort-row"][1] <= target
                print(f"target ort-row / ort-infer <= {target}: {'met' if ok else 'NOT met'}")
            print("sizes and export times: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                                          for k, v in r["info"].items()))


if __name__ == "__main__":
    main()
