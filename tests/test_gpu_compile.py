"""Compiled for the GPU without a GPU: every Triton kernel at every specialisation the
dispatchers produce (float32 / float16 / bfloat16; head dims 32, 40, 64, 80, 96, 128, and 72 and 256,
the dispatcher's Triton limit, on the main shapes; sizes of 1)
is compiled for sm_80 and sm_90 by Triton's own compiler (``python -m daam_fast.ops._gpu_compile``,
run once per test session in a child process without TRITON_INTERPRET, its JSON cached in build/
by a hash of the kernel sources), and ptxas -v must report no spill and no stack frame; render's
PTX must use IEEE division and libdevice's exp; offsets are int64; grids are checked. The CUDA
extension's own ptxas report (nvcc -Xptxas -v, kept by setup.py in build/daam_fast_C-build.log)
must show no spill either. Skipped, with the reason, where Triton's NVIDIA backend or ptxas is missing.
"""
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OPS = os.path.join(ROOT, "daam_fast", "ops")
KERNEL_FILES = [os.path.join(OPS, op, "triton.py") for op in ("block_map", "cls_attention", "render")]
BUILD_LOG = os.path.join(ROOT, "build", "daam_fast_C-build.log")


def _triton_or_skip():
    try:
        import triton
    except ImportError:
        pytest.skip("triton is not installed")
    return triton


@pytest.fixture(scope="session")
def records():
    triton = _triton_or_skip()
    from daam_fast.ops import _gpu_compile
    ok, why = _gpu_compile.ready(in_subprocess=True)
    if not ok:
        pytest.skip(why)
    h = hashlib.sha256(triton.__version__.encode())
    for f in KERNEL_FILES + [os.path.join(OPS, "_gpu_compile.py")]:
        with open(f, "rb") as fh:
            h.update(fh.read())
    cache = os.path.join(ROOT, "build", f"gpu_compile-{h.hexdigest()[:16]}.json")
    if not os.path.exists(cache):
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        res = subprocess.run([sys.executable, "-m", "daam_fast.ops._gpu_compile", "--json", cache + ".tmp"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        os.replace(cache + ".tmp", cache)
    with open(cache) as f:
        return json.load(f)


def _fmt(r):
    return f"{r['kernel']} {r['case']} {r['arch']}"


def test_every_specialisation_compiles(records):
    kernels = {r["kernel"] for r in records}
    assert kernels == {"_token_kernel", "_combine_kernel", "_cls_attn_fwd", "_render_kernel"}, kernels
    assert {r["arch"] for r in records} == {"sm_80", "sm_90"}
    failed = [f"{_fmt(r)}: {r['error']}" for r in records if "error" in r]
    assert not failed, "\n".join(failed[:10])
    cases = " ".join(r["case"] for r in records)
    for needle in ("float32", "float16", "bfloat16", "-d40-", "-d72-", "-d80-", "-d96-", "-d128-", "-d256-", "B1-H1-N1",
                   "M1-N1", "1x1x1x1-to-1x1", "1x7-to", "5x1-to", "to-1x16", "to-16x1"):
        assert needle in cases, f"no compiled case with {needle}"


def test_no_spills_no_stack(records):
    bad = [f"{_fmt(r)}: {r['registers']} regs, stack {r['stack']} B, spill {r['spill_stores']}/{r['spill_loads']} B"
           for r in records if "error" not in r and (r["stack"] or r["spill_stores"] or r["spill_loads"] or r["local"])]
    assert not bad, "\n".join(bad[:20])


def test_render_is_ieee(records):
    """render: no approximate division (div.full), IEEE div.rn; exp from libdevice (range
    reduction with fma.rm, then ex2.approx.ftz on the reduced argument), never tl.exp's bare
    ex2.approx.f32 of the full argument."""
    rs = [r for r in records if r["kernel"] == "_render_kernel" and "error" not in r]
    assert rs
    for r in rs:
        assert r["div_full"] == 0 and r["div_rn"] > 0, _fmt(r)
        assert r["ex2_plain"] == 0, _fmt(r)
        if "nonlinear" in r["case"]:
            assert r["fma_rm"] > 0, f"{_fmt(r)}: libdevice expf's range reduction missing"


def test_offsets_are_int64(records):
    """Every program id is widened to int64 before it forms an offset (code), and the kernels
    do 64-bit multiplies of their strides / sizes (PTX)."""
    for f in KERNEL_FILES:
        src = open(f).read()
        for m in re.finditer(r"tl\.program_id\(\d\)(\.to\(tl\.int64\))?", src):
            line = src[src.rfind("\n", 0, m.start()) + 1: src.find("\n", m.end())]
            if m.group(1) is None:
                var = line.split("=")[0].strip()
                assert f"{var}.to(tl.int64)" in src, f"{os.path.basename(os.path.dirname(f))}: {line.strip()}"
        for m in re.finditer(r"tl\.arange\(0, BLOCK_[NM]?\)(\.to\(tl\.int64\))?", src):
            line = src[src.rfind("\n", 0, m.start()) + 1: src.find("\n", m.end())]
            assert m.group(1) is not None or "int64" in line, f"32-bit token / pixel offsets: {line.strip()}"
    for r in records:   # (sizes of 1 are constants: their multiplies fold away)
        if "error" not in r and not re.search(r"B1-H1|1x1x1x1", r["case"]):
            assert r["mul_lo_s64"] > 0, f"{_fmt(r)}: no 64-bit offset arithmetic in the PTX"


def test_grids_are_checked():
    """A grid dimension past CUDA's 65535 raises a clear error before any launch."""
    _triton_or_skip()
    import torch
    from daam_fast.ops.render import triton as rt
    maps = torch.empty(65536, 1, 2, 2)
    with pytest.raises(ValueError, match="65535"):
        rt.launches(maps, None, "nonlinear", (2, 2), 0.4, 0.8, False)
    maps = torch.empty(1, 65535, 2, 2)
    assert rt.launches(maps, None, "nonlinear", (2, 2), 0.4, 0.8, False)


def test_cuda_extension_has_no_spills():
    from daam_fast import _ext
    if not _ext.has_cuda_build():
        pytest.skip("daam_fast._C was built without CUDA")
    if not os.path.exists(BUILD_LOG):
        pytest.skip(f"no build log at {BUILD_LOG} (the extension was built before setup.py kept it)")
    log = open(BUILD_LOG).read()
    entries = re.findall(r"Compiling entry function '([^']+)' for '(sm_\d+)'.*?(\d+) bytes stack frame, "
                         r"(\d+) bytes spill stores, (\d+) bytes spill loads", log, re.S)
    assert entries, "no ptxas report in the build log: is -Xptxas -v in CMakeLists.txt?"
    assert {a for _, a, *_ in entries} >= {"sm_80", "sm_90"}
    names = " ".join(n for n, *_ in entries)
    for kernel in ("token_terms_kernel", "combine_heads_kernel", "cls_attention_kernel", "render_pixels_kernel",
                   "render_stats_kernel"):
        assert kernel in names, f"{kernel} missing from the ptxas report"
    bad = [f"{n} {a}: stack {s}, spills {st}/{ld}" for n, a, s, st, ld in entries if int(s) or int(st) or int(ld)]
    assert not bad, "\n".join(bad)
