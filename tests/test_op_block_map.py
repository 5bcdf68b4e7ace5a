"""block_map: every available backend against the float64 reference.

Cases use strided k / v exactly like the explainer passes them (views of timm's qkv output,
``qkv.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)``). Every op output starts as NaN (the
poisoning fixture of tests/conftest.py), so an element a kernel forgot fails. Backends: torch (reference op), cpp (C++ extension),
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
    (1, 2, 197, 64, 1),   # batch 1, 4 token tiles of 64 (Triton) / 13 of 16 (CUDA): the partial merges
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


def _check(backend, case, layout="qkv", dtype=torch.float32, device="cpu"):
    B, H, N, d, P = case
    q, k, v, g = (t.to(device) for t in _inputs(B, H, N, d, layout=layout, dtype=dtype))
    ref, ref_heads = block_map_reference(q.double().cpu(), k.double().cpu(), v.double().cpu(), g.double().cpu(),
                                         d ** -0.5, P, heads=True)
    out = block_map(q, k, v, g, d ** -0.5, P, backend=backend)
    assert out.shape == (B, N - P) and out.device == k.device
    assert not torch.isnan(out).any(), "NaN in the output: an element was not written"
    assert (ref > 0).float().mean() > 0.1 and (ref == 0).any(), "case must exercise both sides of the ReLU"
    tol = torch.float64 if dtype == torch.float64 else torch.float32 if dtype == torch.float32 else dtype
    assert_close(out, ref, tol, name=f"{backend} {case}")
    # per-head terms, same pass: each head's term vs the reference, and relu(sum) == the map
    maps, heads = block_map(q, k, v, g, d ** -0.5, P, backend=backend, heads=True)
    assert heads.shape == (B, H, N - P) and heads.dtype == maps.dtype and heads.device == k.device
    assert not torch.isnan(heads).any(), "NaN in the head terms: an element was not written"
    assert torch.equal(maps, out), "heads=True must not change the map"
    assert_close(heads, ref_heads, tol, name=f"{backend} {case} head terms")
    assert_close(heads.double().sum(1).clamp_min(0), maps.double(), torch.float32 if tol == torch.float64 else tol,
                 name=f"{backend} relu(sum of heads) vs map")
    assert (ref_heads < 0).any() and (ref_heads > 0).any(), "head terms before the ReLU take both signs"


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


@pytest.mark.parametrize("d", [72, 80, 96, 128, 256], ids=["d72", "d80", "d96", "d128", "d256"])
def test_triton_head_dims(d):
    """Head dims past 64: Triton's 128-wide head tile with 32-token tiles (BLOCK_D > 64), masked
    channels for 72, 80, 96, and 256 (the dispatcher's Triton limit); the same cases on a GPU are
    in tests/test_cuda.py."""
    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1 (make test sets it)")
    ok, why = _status("triton")
    if not ok:
        pytest.skip(why)
    _check("triton", (1, 2, 45, d, 1))


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton", "torch"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_on_cuda_tensors(case, name):
    """Every backend on CUDA tensors against the float64 reference (GPU machines: make gpu-check)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ok, why = _status(name)
    if not ok:
        pytest.skip(f"{name}: {why}")
    _check(name, case, device="cuda")


def test_heads_reference_known_answer():
    """One image, two heads, hand-computable: uniform attention (q = 0) over N = 3 tokens."""
    q = torch.zeros(1, 2, 2)
    k = torch.randn(1, 2, 3, 2)
    v = torch.tensor([[[[1., 0.], [0., 1.], [2., 2.]], [[-3., 0.], [0., -3.], [1., 1.]]]])
    g = torch.tensor([[[1., 1.], [1., 0.]]])
    maps, heads = block_map_reference(q, k, v, g, 1.0, 1, heads=True)
    # head 0: <g, v_n> = 1, 4 for tokens 1, 2; head 1: 0, 1; a = 1/3 everywhere
    assert torch.allclose(heads, torch.tensor([[[1 / 3, 4 / 3], [0.0, 1 / 3]]]))
    assert torch.allclose(maps, torch.tensor([[1 / 3, 5 / 3]]))
    maps, heads = block_map_reference(q, k, -v, g, 1.0, 1, heads=True)
    assert (maps == 0).all() and (heads < 0).any(), "the ReLU is after the head sum"


def test_outputs_are_poisoned_before_the_kernel_runs():
    """The conftest fixture is on: a fresh op output is NaN (uint8: 0xA5) until a kernel writes it."""
    from daam_fast.ops import _alloc
    assert _alloc.poisoning()
    assert torch.isnan(_alloc.empty((3,), torch.float32, torch.device("cpu"))).all()
    assert (_alloc.empty((3,), torch.uint8, torch.device("cpu")) == _alloc.UINT8_POISON).all()


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


HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF, ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["torch", "cpp", "triton"])
def test_half_precision(name, dtype):
    """float16 / bfloat16 inputs on every backend against the float64 reference of the same
    (rounded) inputs, with the dtype's row of tests/tolerances.py (the CPU runs both)."""
    if name == "triton" and os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1")
    ok, why = _status(name)
    if not ok:
        pytest.skip(f"{name}: {why}")
    _check(name, (2, 3, 50, 40, 2), dtype=dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", HALF, ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["cuda", "triton", "torch"])
def test_half_precision_on_cuda_tensors(name, dtype):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ok, why = _status(name)
    if not ok:
        pytest.skip(f"{name}: {why}")
    for case in (CASES[0], CASES[2]):
        _check(name, case, dtype=dtype, device="cuda")


def test_cuda_kernel_algorithm_transcribed():
    """csrc/cuda/block_map.cu cannot run here: its algorithm, transcribed step by step in float32
    (tiles of 16 tokens, 8 warps with 2 tokens each and an online max / sum per warp, the block's
    merge of the warp partials, then the merge of the tile partials per head and the head sum),
    must equal the reference. A slip in the partial-softmax merges shows here; the CUDA code
    itself is checked on a GPU (make gpu-check: test_on_cuda_tensors)."""
    B, H, N, d, P = 2, 3, 50, 40, 2
    q, k, v, g = _inputs(B, H, N, d)
    ref, ref_heads = block_map_reference(q.double(), k.double(), v.double(), g.double(), d ** -0.5, P, heads=True)
    TOK, WARPS = 16, 8
    tiles = (N + TOK - 1) // TOK
    s = torch.einsum("bhd,bhnd->bhn", q * d ** -0.5, k)            # lane sums: logit, <g, v_n>
    w = torch.einsum("bhd,bhnd->bhn", g, v)
    pm = torch.full((B, H, tiles), float("-inf"))
    pl = torch.zeros(B, H, tiles)
    for t in range(tiles):
        wm, wl = [], []
        for warp in range(WARPS):
            m, l = torch.full((B, H), float("-inf")), torch.zeros(B, H)
            for i in range(TOK // WARPS):
                n = t * TOK + i * WARPS + warp
                if n >= N:
                    break
                m_new = torch.maximum(m, s[:, :, n])
                l = l * torch.exp(m - m_new) + torch.exp(s[:, :, n] - m_new)
                m = m_new
            wm.append(m)
            wl.append(l)
        mt = torch.stack(wm).amax(0)
        pm[:, :, t] = mt
        pl[:, :, t] = sum(torch.where(li > 0, li * torch.exp(mi - mt), torch.zeros_like(li)) for mi, li in zip(wm, wl))
    mx = pm.amax(-1, keepdim=True)
    inv = 1.0 / (pl * torch.exp(pm - mx)).sum(-1, keepdim=True)
    terms = (torch.exp(s - mx) * inv * w)[:, :, P:]
    assert_close(terms, ref_heads, name="transcribed CUDA head terms")
    assert_close(terms.sum(1).clamp_min(0), ref, name="transcribed CUDA map")
