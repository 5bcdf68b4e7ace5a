"""cls_attention: every available backend against the explicit float64 softmax (the oracle),
forward (out and the [class] row a_cls) and backward (gradients of q, k, v through both).

Inputs are strided views of a qkv tensor laid out like timm's (``qkv.reshape(B, N, 3, H, d)
.permute(2, 0, 3, 1, 4)``), as the explainer would pass them. Outputs are checked for NaN so an
element a kernel forgot fails (every op output also starts as NaN: tests/conftest.py). Backends:
torch (SDPA + the O(N d) row: the CPU implementation; there is no C++ kernel, and asking for
"cpp" raises saying so), triton (TRITON_INTERPRET=1, small shapes), cuda (needs a GPU: skipped
here; tests/test_build.py checks its launch code fails cleanly without a driver).
"""
import os

import pytest
import torch

from daam_fast import _ext
from daam_fast.ops import _dispatch
from daam_fast.ops.cls_attention import cls_attention, cls_attention_math
from tolerances import assert_close

# (B, H, M, N, d): M query rows (M < N: the explainer's reduced last block)
CASES = [
    (2, 3, 37, 37, 32),    # odd N, head dim 32, several query tiles (BLOCK_M 16/64)
    (1, 2, 65, 65, 64),    # odd N > one key tile (64), head dim 64
    (2, 2, 1, 50, 64),     # one query row: the reduced last block, [class] row only
    (1, 3, 4, 33, 32),     # 4 rows (1 [class] + 3 registers), odd N
    (2, 1, 17, 17, 40),    # head dim 40: padded to 64 inside the kernels
]
IDS = [f"B{b}-H{h}-M{m}-N{n}-d{d}" for b, h, m, n, d in CASES]


def _inputs(B, H, M, N, d, seed=0, dtype=torch.float32, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, N, 3, H, d, generator=g).to(dtype)   # same values whatever the dtype
    qkv[:, :, 0] *= 2.0                                  # sharper softmax than a plain randn
    qkv.requires_grad_(requires_grad)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return q[:, :, :M], k, v, qkv


def _skip_unless(name):
    if name == "triton" and os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1 (make test sets it)")
    ok, why = _dispatch.backend_status("cls_attention", name)
    if not ok:
        pytest.skip(f"{name}: {why}")


def _check_forward(name, case, device="cpu"):
    B, H, M, N, d = case
    q, k, v, _ = _inputs(*case)
    q, k, v = (t.to(device) for t in (q, k, v))
    out, a = cls_attention(q, k, v, backend=name)
    ref_out, ref_a = cls_attention_math(q.double().cpu(), k.double().cpu(), v.double().cpu(), d ** -0.5)
    assert out.shape == (B, H, M, d) and out.dtype == q.dtype and out.device == q.device
    assert a.shape == (B, H, N) and a.dtype == torch.float32
    assert not torch.isnan(out).any() and not torch.isnan(a).any(), "NaN in an output: an element was not written"
    assert_close(out, ref_out, name=f"{name} out {case}")
    assert_close(a, ref_a, name=f"{name} a_cls {case}")
    assert torch.allclose(a.sum(-1).double().cpu(), torch.ones(B, H, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_backend(case):
    _check_forward("torch", case)


def test_no_cpp_backend_named_for_what_it_is():
    """cls_attention has no C++ kernel: an explicit "cpp" raises with the reason, auto on the CPU
    resolves to "torch" (SDPA + row), never to a "cpp" that is the torch code again."""
    q, k, v, _ = _inputs(1, 2, 5, 11, 16)
    ok, why = _dispatch.backend_status("cls_attention", "cpp")
    assert not ok and "SDPA" in why and "'torch'" in why
    with pytest.raises(RuntimeError, match="no C\\+\\+ kernel"):
        cls_attention(q, k, v, backend="cpp")
    assert _dispatch.resolve("cls_attention", q.device) == "torch"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_triton_backend(case):
    _skip_unless("triton")
    _check_forward("triton", case)


@pytest.mark.parametrize("d", [72, 80, 96, 128, 256], ids=["d72", "d80", "d96", "d128", "d256"])
def test_triton_head_dims(d):
    """Head dims past 64: the 128-wide head tile (BLOCK_M 16 in float32), masked channels for 72,
    80, 96, and 256 (16-key tiles in float32); two query tiles, odd N. The same cases on a GPU
    are in tests/test_cuda.py."""
    _skip_unless("triton")
    _check_forward("triton", (1, 2, 20, 45, d))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["torch", "triton"])
def test_half_precision(name, dtype):
    """float16 / bfloat16 inputs (dots in half precision, tensor cores on a GPU, float32
    accumulation) against the float64 oracle of the same rounded inputs, with the dtype's row
    of tests/tolerances.py; out keeps q's dtype, a_cls is float32. The CPU runs both."""
    _skip_unless(name)
    if name == "triton" and dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("Triton's CPU interpreter gets bfloat16 tl.dot wrong (a 16x16 bf16 dot is off by 1e10 "
                    "there); runs on GPUs (make gpu-check)")
    q, k, v, _ = _inputs(2, 2, 17, 17, 32, dtype=dtype)
    out, a = cls_attention(q, k, v, backend=name)
    ref_out, ref_a = cls_attention_math(q.double(), k.double(), v.double(), 32 ** -0.5)
    assert out.dtype == dtype and a.dtype == torch.float32
    assert_close(out.float(), ref_out, dtype, name=f"{name} {dtype} out")
    assert_close(a, ref_a, dtype, name=f"{name} {dtype} a_cls")


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton", "torch"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_on_cuda_tensors(case, name):
    """Every backend on CUDA tensors against the float64 oracle (GPU machines: make gpu-check)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _skip_unless(name)
    _check_forward(name, case, device="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["cuda", "triton", "torch"])
def test_half_precision_on_cuda_tensors(name, dtype):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _skip_unless(name)
    for case in CASES:
        q, k, v, _ = (t.cuda() if t is not None else t for t in _inputs(*case, dtype=dtype))
        out, a = cls_attention(q, k, v, backend=name)
        ref_out, ref_a = cls_attention_math(q.double().cpu(), k.double().cpu(), v.double().cpu(), case[-1] ** -0.5)
        assert_close(out.float(), ref_out, dtype, name=f"{name} {dtype} out {case}")
        assert_close(a, ref_a, dtype, name=f"{name} {dtype} a_cls {case}")


@pytest.mark.parametrize("name", ["torch", "triton"])
def test_backward_matches_reference(name):
    """Gradients of q, k, v (through the qkv tensor, as in the explainer) from both outputs."""
    _skip_unless(name)
    case = (2, 2, 9, 13, 32)                       # M < N: rows 9..12 are keys only
    gen = torch.Generator().manual_seed(1)
    w_out = torch.randn(2, 2, 9, 32, generator=gen, dtype=torch.float64)
    w_a = torch.randn(2, 2, 13, generator=gen, dtype=torch.float64)
    grads = {}
    for which in ("fast", "oracle"):
        q, k, v, qkv = _inputs(*case, dtype=torch.float64 if which == "oracle" else torch.float32,
                               requires_grad=True)
        if which == "fast":
            out, a = cls_attention(q, k, v, backend=name)
        else:
            out, a = cls_attention_math(q, k, v, 32 ** -0.5)
        loss = (out.double() * w_out).sum() + (a.double() * w_a).sum()
        grads[which], = torch.autograd.grad(loss, qkv)
    assert_close(grads["fast"], grads["oracle"], name=f"{name} d qkv")
    assert grads["oracle"][:, 9:, 0].abs().max() == 0, "rows >= M of q get no gradient"


def test_backward_out_only_and_values_only():
    """Only out used (a_cls detached, as the explainer's grad mode does); only v needs a gradient."""
    q, k, v, _ = _inputs(1, 2, 5, 11, 32)
    v = v.detach().clone().requires_grad_(True)
    out, a = cls_attention(q, k, v)
    assert not a.requires_grad or a.grad_fn is not None
    gv, = torch.autograd.grad(out.sum(), v)
    vv = v.detach().double().requires_grad_(True)
    ref, _ = cls_attention_math(q.double(), k.double(), vv, 32 ** -0.5)
    gref, = torch.autograd.grad(ref.sum(), vv)
    assert_close(gv, gref, name="dv")


def test_dispatch_and_errors(monkeypatch):
    q, k, v, _ = _inputs(1, 2, 5, 11, 16)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            cls_attention(q, k, v, backend="cuda")
    monkeypatch.setenv("DAAM_FAST_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="DAAM_FAST_BACKEND"):
        cls_attention(q, k, v)
    monkeypatch.delenv("DAAM_FAST_BACKEND")
    assert _dispatch.resolve("cls_attention", q.device) == "torch"
    with pytest.raises(ValueError, match=r"\(B, H, M, d\)"):
        cls_attention(q[0], k, v)
    with pytest.raises(ValueError, match="does not match"):
        cls_attention(q[..., :8], k, v)
    with pytest.raises(ValueError, match="rows"):
        cls_attention(torch.randn(1, 2, 12, 16), k, v)


def test_cuda_launch_without_driver_raises():
    """The CUDA kernel's host code as far as a machine without a driver goes: argument checks
    (ValueError), then the first CUDA call, whose error must come back as a RuntimeError
    naming it (never a crash)."""
    if not _ext.has_cuda_build():
        pytest.skip("daam_fast._C built without CUDA")
    if torch.cuda.is_available():
        pytest.skip("a real GPU is present: test_cuda_backend runs the kernel instead")
    m = _ext.ext()
    fake = 0x1000  # never dereferenced: cudaGetDevice fails before any launch
    #      q     sb  sh sm  k     sb  sh sn  v     sb  sh sn  out   a     B  H  M  N   D   scale dtype dev stream
    args = [fake, 96, 32, 1, fake, 96, 32, 1, fake, 96, 32, 1, fake, fake, 2, 3, 5, 17, 32, 0.18, 0, 0, 0]
    with pytest.raises(RuntimeError, match=r"CUDA error \d+ \(cuda\w+"):
        m.cls_attention_cuda(*args)
    bad = list(args)
    bad[13] = 0                                   # null a_cls
    with pytest.raises(ValueError, match="null pointer"):
        m.cls_attention_cuda(*bad)
    bad = list(args)
    bad[16] = 18                                  # M > N
    with pytest.raises(ValueError, match="at most N rows"):
        m.cls_attention_cuda(*bad)
    bad = list(args)
    bad[18] = 256                                 # head dim beyond the kernel
    with pytest.raises(ValueError, match="head_dim"):
        m.cls_attention_cuda(*bad)
    bad = list(args)
    bad[20] = 9                                   # dtype code: checked before the first CUDA call
    with pytest.raises(ValueError, match="unsupported dtype code"):
        m.cls_attention_cuda(*bad)
    bad = list(args)
    bad[21] = -1                                  # device index
    with pytest.raises(ValueError, match="device index"):
        m.cls_attention_cuda(*bad)
