"""Compile every Triton kernel of daam_fast for a GPU target without a GPU, and read ptxas.

    python -m daam_fast.ops._gpu_compile            # table: kernel, case, arch, registers, stack, spills
    python -m daam_fast.ops._gpu_compile --json F   # the same records as JSON (tests/test_gpu_compile.py)

Each case is built by the op's own launch plan (``launches(...)`` in each ``triton.py``) on
small CPU tensors, then bound exactly as ``kernel[grid](...)`` would bind it on a GPU (Triton's
own specialisation: integers equal to 1 become constants, 16-divisible ones get a divisibility
hint), compiled with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))``, and
its PTX passed to Triton's bundled ``ptxas -v``. Must run with TRITON_INTERPRET unset (the
interpreter replaces the kernels by Python functions).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, Iterator, List, Tuple

import torch

HEAD_DIMS = (32, 40, 64, 80, 96, 128)
EDGE_HEAD_DIMS = (72, 256)   # 72: BLOCK_D 128 without the 16-divisible hint; 256: the dispatcher's Triton limit
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ARCHS = (80, 90)


def ptxas_path() -> str:
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def ready(in_subprocess: bool = False) -> Tuple[bool, str]:
    """Whether this machine can compile for NVIDIA targets (triton's nvidia backend + ptxas);
    ``in_subprocess``: the check for a child started without TRITON_INTERPRET."""
    if not in_subprocess and os.environ.get("TRITON_INTERPRET", "0") == "1":
        return False, "TRITON_INTERPRET=1 replaces the kernels by Python functions"
    try:
        import triton
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler.compiler import make_backend
        make_backend(GPUTarget("cuda", 90, 32))
    except Exception as e:  # noqa: BLE001
        return False, f"triton's nvidia backend is missing: {e}"
    if not os.access(ptxas_path(), os.X_OK):
        return False, f"ptxas not found at {ptxas_path()}"
    return True, ""


def parse_ptxas(report: str) -> Dict[str, int]:
    regs = re.search(r"Used (\d+) registers", report)
    st = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", report)
    if regs is None or st is None:
        raise RuntimeError(f"unexpected ptxas report:\n{report}")
    return dict(registers=int(regs.group(1)), stack=int(st.group(1)), spill_stores=int(st.group(2)),
                spill_loads=int(st.group(3)))


def compile_launch(kernel, args: tuple, kwargs: dict, cc: int) -> Dict[str, object]:
    """Compile one launch for compute capability ``cc``; PTX facts and the ptxas report."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", cc, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, spec, opts = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, spec, opts)
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                              options=options.__dict__)
    ptx = compiled.asm["ptx"]
    arch = f"sm_{cc}a" if cc >= 90 else f"sm_{cc}"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        res = subprocess.run([ptxas_path(), "-v", f"--gpu-name={arch}", f.name, "-o", os.devnull],
                             capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if res.returncode != 0:
        raise RuntimeError(f"ptxas failed for {kernel.__name__}: {res.stderr}")
    rec: Dict[str, object] = dict(parse_ptxas(res.stderr))
    rec.update(
        div_full=ptx.count("div.full.f32") + ptx.count("div.approx.f32"), div_rn=ptx.count("div.rn.f32"),
        ex2_approx=ptx.count("ex2.approx"), ex2_plain=ptx.count("ex2.approx.f32"), fma_rm=ptx.count("fma.rm."),
        mul_wide=ptx.count("mul.wide.s32") + ptx.count("mul.wide.u32"),
        mul_lo_s64=ptx.count("mul.lo.s64") + ptx.count("mad.lo.s64"), local=ptx.count("st.local") + ptx.count("ld.local"),
        warps=int(compiled.metadata.num_warps), shared=int(compiled.metadata.shared),
    )
    return rec


def cases() -> Iterator[Tuple[str, str, object, tuple, dict]]:
    """(kernel name, case id, kernel, args, kwargs) for every specialisation the dispatchers produce."""
    from .block_map import triton as bm
    from .cls_attention import triton as ca
    from .render import triton as rt

    for dt in DTYPES:
        name = str(dt).replace("torch.", "")
        for D in HEAD_DIMS + EDGE_HEAD_DIMS:
            edge = D in EDGE_HEAD_DIMS                       # the main shapes only
            # qkv views (strides multiples of 16 for these H), a contiguous layout with strides that
            # are not (Triton specialises 16-divisible ints), and 1s (Triton's constant specialisation)
            for B, H, N, P, layout in ((2, 6, 197, 1, "qkv"), (2, 3, 50, 2, "contiguous"), (1, 1, 1, 0, "qkv")):
                if (layout == "contiguous" and D not in (40, 80)) or (edge and N == 1):
                    continue
                q = torch.empty(B, H, D, dtype=dt)
                k = (torch.empty(B, N, 3, H, D, dtype=dt).permute(2, 0, 3, 1, 4)[1] if layout == "qkv"
                     else torch.empty(B, H, N, D, dtype=dt))
                ws = bm.workspace(B, H, N, D, "cpu")
                out = torch.empty(B, N - P)
                for heads in (False, True):
                    ht = torch.empty(B, H, N - P) if heads else None
                    for kern, grid, args, kw in bm.launches(q, k, k, q, 0.125, P, ws, out, ht):
                        if kern is bm._combine_kernel and dt != torch.float32:
                            continue                                  # float32 workspace whatever the inputs
                        if kern is bm._token_kernel and heads:
                            continue
                        yield (kern.__name__, f"{name}-d{D}-B{B}-H{H}-N{N}-P{P}-heads{int(heads)}-{layout}", kern, args,
                               kw)
            for B, H, M, N in ((2, 6, 197, 197), (2, 6, 1, 197), (2, 6, 5, 261), (2, 3, 50, 50), (1, 1, 1, 1)):
                if (B, H, M, N) == (2, 3, 50, 50) and D not in (40, 80):
                    continue                                 # strides not multiples of 16
                if edge and M not in (1, 197):
                    continue
                q = torch.empty(B, H, M, D, dtype=dt)
                kv = torch.empty(B, N, 3, H, D, dtype=dt).permute(2, 0, 3, 1, 4)
                out = torch.empty(B, H, M, D, dtype=dt)
                a = torch.empty(B, H, N)
                for kern, grid, args, kw in ca.launches(q, kv[1], kv[2], out, a, 0.125):
                    yield (kern.__name__, f"{name}-d{D}-B{B}-H{H}-M{M}-N{N}", kern, args, kw)
    # render: sizes are not specialised (do_not_specialize), so every constexpr combination on
    # one resized shape, and the other shapes (sizes of 1 included) once each
    shapes = ((2, 12, 14, 14, 224, 224), (1, 1, 1, 1, 1, 1), (2, 3, 1, 7, 16, 16), (2, 3, 5, 1, 16, 16),
              (2, 3, 5, 7, 1, 16), (2, 3, 5, 7, 16, 1), (1, 2, 14, 14, 14, 14))
    for i, (B, L, h, w, H, W) in enumerate(shapes):
        maps = torch.empty(B, L, h, w)
        combos = [(m, p, a) for m in ("nonlinear", "linear", "raw") for p in ("none", "uint8", "float")
                  for a in (False, True)] if i in (0, len(shapes) - 1) else [("nonlinear", "uint8", True)]
        for mode, pictures, acc in combos:
            img = {"none": None, "uint8": torch.empty(B, 3, H, W, dtype=torch.uint8),
                   "float": torch.empty(B, 3, H, W)}[pictures]
            for kern, grid, args, kw in rt.launches(maps, img, mode, (H, W), 0.4, 0.8, acc):
                yield (kern.__name__, f"{B}x{L}x{h}x{w}-to-{H}x{W}-{mode}-{pictures}-acc{int(acc)}", kern, args, kw)


def _compile_one(task: Tuple[int, int]) -> Dict[str, object]:
    import warnings
    warnings.simplefilter("ignore")
    index, cc = task
    kname, cid, kern, args, kw = next(c for i, c in enumerate(cases()) if i == index)
    rec: Dict[str, object] = dict(kernel=kname, case=cid, arch=f"sm_{cc}")
    try:
        rec.update(compile_launch(kern, args, kw, cc))
    except Exception as e:  # noqa: BLE001 - reported, the test fails on it
        rec["error"] = f"{type(e).__name__}: {str(e)[-600:]}"
    return rec


def run(archs=ARCHS, only: str = "", case: str = "", jobs: int = 0) -> List[Dict[str, object]]:
    """Compile every case for every arch (``jobs`` processes, default one per core); a failed
    compilation is a record with ``error``."""
    tasks = [(i, cc) for i, (kname, cid, *_rest) in enumerate(cases())
             if not (only and only not in kname) and not (case and case not in cid) for cc in archs]
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1:
        return [_compile_one(t) for t in tasks]
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return pool.map(_compile_one, tasks, chunksize=4)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the records to this file")
    p.add_argument("--only", default="", help="kernels whose name contains this")
    p.add_argument("--case", default="", help="cases whose id contains this")
    p.add_argument("--arch", type=int, action="append", help="compute capability (80, 90); default both")
    p.add_argument("--jobs", type=int, default=0, help="compiling processes (default: one per core)")
    a = p.parse_args(argv)
    ok, why = ready()
    if not ok:
        print(f"cannot compile for NVIDIA targets here: {why}")
        return 1
    recs = run(archs=tuple(a.arch or ARCHS), only=a.only, case=a.case, jobs=a.jobs)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(recs, f)
    for r in recs:
        if "error" in r:
            print(f"{r['kernel']:18s} {r['case']:42s} {r['arch']}  ERROR {r['error'][:200]}")
        else:
            print(f"{r['kernel']:18s} {r['case']:42s} {r['arch']}  regs {r['registers']:3d} stack {r['stack']:5d} "
                  f"spill {r['spill_stores']:5d}/{r['spill_loads']:5d} warps {r['warps']} div.full {r['div_full']} "
                  f"ex2.approx {r['ex2_approx']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
