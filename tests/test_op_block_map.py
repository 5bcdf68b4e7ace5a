"""block_map: every available backend against the float64 reference.

Cases use strided k / v exactly like the explainer passes them (views of timm's qkv output,
``qkv.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)``), and outputs are checked for NaN so
an element a kernel forgot fails. Backends: torch (reference op), cpp (C++ extension),
triton (TRITON_INTERPRET=1 on the CPU, small shapes only), cuda (needs a GPU: skipped here).
"""
import os

import pytest
import torch

from daam_fast.ops import _dispatch
from daam_fast.ops.block_map import block_map, block_map_reference
from tolerances import assert_close

# (B, H, N, d, P): what each exercises
CASES = [
    (2, 6, 197, 64, 1),   # deit_small: 14x14 + [class]
    (3, 2, 785, 32, 1),   # patch-8 at 224: 785 tokens, batch 3
    (2, 3, 50, 40, 2),    # odd N, head dim 40 (not a power of two), distilled
    (1, 4, 65, 64, 4),    # odd N, 4 prefix tokens (registers), batch 1
    (4, 1, 17, 16, 1),    # single head
    (2, 2, 33, 32, 3),    # head dim 32, 3 prefix tokens, odd N
]
IDS = [f"B{b}-H{h}-N{n}-d{d}-P{p}" for b, h, n, d, p in CASES]
SMALL = [c for c in CASES if c[0] * c[1] * c[2] <= 2000]   # for the Triton interpreter


def _inputs(B, H, N, d, seed=0, dtype=torch.float32, layout="qkv"):
    g = torch.Generator().manual_seed(seed)
    if layout == "qkv":
        qkv = torch.randn(B, N, 3, H, d, generator=g, dtype=dtype).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
    else:
        q, k, v = (torch.randn(B, H, N, d, generator=g, dtype=dtype) for _ in range(3))
    q_cls = q[:, :, 0] * 2.0        # sharper softmax than a plain randn
    coeffs = torch.randn(B, H, d, generator=g, dtype=dtype).clamp_min(0)
    return q_cls, k, v, coeffs


def _check(backend, case, layout="qkv", dtype=torch.float32):
    B, H, N, d, P = case
    q, k, v, g = _inputs(B, H, N, d, layout=layout, dtype=dtype)
    ref = block_map_reference(q.double(), k.double(), v.double(), g.double(), d ** -0.5, P)
    out = block_map(q, k, v, g, d ** -0.5, P, backend=backend)
    assert out.shape == (B, N - P)
    assert not torch.isnan(out).any(), "NaN in the output: an element was not written"
    assert (ref > 0).float().mean() > 0.1 and (ref == 0).any(), "case must exercise both sides of the ReLU"
    assert_close(out, ref, torch.float32 if dtype != torch.float64 else torch.float64, name=f"{backend} {case}")


def _status(name):
    return _dispatch.backend_status("block_map", name)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_backend(case):
    _check("torch", case)


@pytest.mark.parametrize("layout", ["qkv", "contiguous"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cpp_backend(case, layout):
    ok, why = _status("cpp")
    if not ok:
        pytest.skip(why)
    _check("cpp", case, layout)


@pytest.mark.parametrize("case", CASES[2:4], ids=IDS[2:4])
def test_cpp_float64(case):
    ok, why = _status("cpp")
    if not ok:
        pytest.skip(why)
    _check("cpp", case, dtype=torch.float64)


@pytest.mark.parametrize("case", SMALL, ids=[IDS[CASES.index(c)] for c in SMALL])
def test_triton_backend(case):
    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1 (make test sets it)")
    ok, why = _status("triton")
    if not ok:
        pytest.skip(why)
    _check("triton", case)


def test_cuda_backend():
    ok, why = _status("cuda")
    if not ok:
        pytest.skip(f"CUDA backend: {why}")
    B, H, N, d, P = CASES[0]
    q, k, v, g = (t.cuda() for t in _inputs(B, H, N, d))
    ref = block_map_reference(q.double(), k.double(), v.double(), g.double(), d ** -0.5, P)
    assert_close(block_map(q, k, v, g, d ** -0.5, P, backend="cuda").cpu(), ref.cpu())


def test_dispatch_rules(monkeypatch):
    q, k, v, g = _inputs(2, 2, 9, 8)
    assert _dispatch.resolve("block_map", k.device, "torch") == "torch"
    monkeypatch.setenv("DAAM_FAST_BACKEND", "torch")
    assert _dispatch.resolve("block_map", k.device) == "torch"
    monkeypatch.setenv("DAAM_FAST_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="DAAM_FAST_BACKEND"):
        block_map(q, k, v, g, 0.3, 1)
    monkeypatch.delenv("DAAM_FAST_BACKEND")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):        # explicit request that cannot run: raises
            block_map(q, k, v, g, 0.3, 1, backend="cuda")
    expected = "cpp" if _status("cpp")[0] else "torch"
    assert _dispatch.resolve("block_map", k.device) == expected


def test_shape_checks():
    q, k, v, g = _inputs(2, 2, 9, 8)
    with pytest.raises(ValueError, match="prefix"):
        block_map(q, k, v, g, 0.3, 9)
    with pytest.raises(ValueError, match=r"\(B, H, d\)"):
        block_map(q[:, :1], k, v, g, 0.3, 1)
    with pytest.raises(ValueError, match=r"\(B, H, N, d\)"):
        block_map(q, k, v[:, :, :5], g, 0.3, 1)
