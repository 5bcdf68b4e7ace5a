"""CUDA-only checks, the fast correctness pass of make gpu-check (every test here is marked cuda
and skipped without a GPU; the per-op matrices of tests/test_op_*.py follow in its long stage):

* head dims 72, 80, 96 and 128 (the CUDA kernels' channels 64-127, Triton's 128-wide head tile)
  for block_map and cls_attention on every backend, against the float64 reference;
* launches on a non-default stream (inputs written on that stream after a sleep: a kernel
  launched on another stream would read them unwritten);
* the cls_attention backward on CUDA tensors;
* DAAM's maps on the GPU against ``daam_reference`` for grad, row and direct at deit_small's
  shape and at 785 tokens: float32 to the tolerance table, bfloat16 autocast to its bfloat16 row;
* render on CUDA against the torch path: one uint8 level on at most 0.1 % of the values, exact
  elsewhere;
* the DAAM call makes no host synchronisation (``torch.cuda.set_sync_debug_mode("error")``) up
  to its one final check, and auto picks the CUDA kernels where they take the shape.
"""
import math

import pytest
import torch

from daam_fast._checks import Checks
from daam_fast.ops import _dispatch
from daam_fast.ops.block_map import block_map, block_map_reference
from daam_fast.ops.cls_attention import cls_attention, cls_attention_math
from daam_fast.ops.render import render_frames
from tolerances import assert_close

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

BACKENDS = ["cuda", "triton", "torch"]
HEAD_DIMS = [72, 80, 96, 128]


def _available(op, name):
    ok, why = _dispatch.backend_status(op, name, torch.device("cuda"))
    if not ok:
        pytest.skip(f"{op} {name}: {why}")


def _qkv(B, H, N, d, seed=0, device="cuda"):
    """Strided q, k, v views of one (B, N, 3, H, d) tensor, as timm's qkv output is read."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, N, 3, H, d, generator=g)
    qkv[:, :, 0] *= 2.0                                  # sharper softmax than a plain randn
    return qkv.to(device).permute(2, 0, 3, 1, 4).unbind(0)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("d", HEAD_DIMS, ids=[f"d{d}" for d in HEAD_DIMS])
def test_block_map_head_dims(d, name):
    """B2-H3-N77: odd N (partial token tiles), channels 64..d-1 of the CUDA kernel's lanes."""
    _available("block_map", name)
    q, k, v = _qkv(2, 3, 77, d)
    g = torch.randn(2, 3, d, generator=torch.Generator().manual_seed(1)).clamp_min(0).cuda()
    maps, terms = block_map(q[:, :, 0], k, v, g, d ** -0.5, 1, backend=name, heads=True)
    ref, ref_terms = block_map_reference(*(t.double().cpu() for t in (q[:, :, 0], k, v, g)), d ** -0.5, 1, heads=True)
    assert_close(maps, ref, name=f"block_map {name} d{d}")
    assert_close(terms, ref_terms, name=f"block_map heads {name} d{d}")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("d", HEAD_DIMS, ids=[f"d{d}" for d in HEAD_DIMS])
def test_cls_attention_head_dims(d, name):
    """B2-H3-M37-N77: several query tiles, odd N; out and the [class] row."""
    _available("cls_attention", name)
    q, k, v = _qkv(2, 3, 77, d)
    out, a = cls_attention(q[:, :, :37], k, v, backend=name)
    ref_out, ref_a = cls_attention_math(*(t.double().cpu() for t in (q[:, :, :37], k, v)), d ** -0.5)
    assert_close(out, ref_out, name=f"cls_attention out {name} d{d}")
    assert_close(a, ref_a, name=f"cls_attention a_cls {name} d{d}")


def _on_side_stream(fn, *inputs):
    """Run ``fn`` on a new stream whose inputs are NaN until a sleep on that stream ends: a kernel
    launched on any other stream would read NaN. Returns fn's result after that stream finished."""
    s = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(s):
        copies = [torch.full_like(t, float("nan")) for t in inputs]
        torch.cuda._sleep(20_000_000)                    # ~10 ms of GPU time on s
        for c, t in zip(copies, inputs):
            c.copy_(t)
        out = fn(*copies)
    s.synchronize()
    return out


@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_non_default_stream(name):
    """Every op launches on the caller's current stream, not the default one."""
    for op in ("block_map", "cls_attention", "render"):
        _available(op, name)
    q, k, v = (t.contiguous() for t in _qkv(2, 3, 50, 64))
    maps = _on_side_stream(lambda q, k, v: block_map(q[:, :, 0], k, v, v[:, :, 1], 0.125, 1, backend=name), q, k, v)
    assert_close(maps, block_map_reference(*(t.double().cpu() for t in (q[:, :, 0], k, v, v[:, :, 1])), 0.125, 1),
                 name=f"block_map {name} on a side stream")
    out, a = _on_side_stream(lambda q, k, v: cls_attention(q, k, v, backend=name), q, k, v)
    ref_out, ref_a = cls_attention_math(*(t.double().cpu() for t in (q, k, v)), 64 ** -0.5)
    assert_close(out, ref_out, name=f"cls_attention out {name} on a side stream")
    assert_close(a, ref_a, name=f"cls_attention a_cls {name} on a side stream")
    D = torch.cumsum(torch.rand(2, 3, 14, 14, generator=torch.Generator().manual_seed(2)), 1).cuda()
    frames = _on_side_stream(lambda D: render_frames(D, size=(56, 56), backend=name), D)
    ref = render_frames(D, size=(56, 56), backend="torch")
    assert (frames.int() - ref.int()).abs().max().item() <= 1


@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_cls_attention_backward(name):
    """Gradients of q, k, v through out and a_cls, against the explicit float64 softmax."""
    _available("cls_attention", name)
    B, H, M, N, d = 2, 3, 20, 45, 64
    base = torch.randn(3, B, H, N, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g_out = torch.randn(B, H, M, d, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    g_a = torch.randn(B, H, N, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def grads(fn, dtype, device):
        q, k, v = (t.to(device, dtype).requires_grad_() for t in base)
        out, a = fn(q[:, :, :M], k, v)
        ((out.double() * g_out.to(device)).sum() + (a.double() * g_a.to(device)).sum()).backward()
        return q.grad, k.grad, v.grad

    got = grads(lambda q, k, v: cls_attention(q, k, v, backend=name), torch.float32, "cuda")
    ref = grads(lambda q, k, v: cls_attention_math(q, k, v, d ** -0.5), torch.float64, "cpu")
    for n, g, r in zip("qkv", got, ref):
        assert_close(g, r, name=f"cls_attention {name} d{n}")


# DAAM end to end against the reference: deit_small's shape (197 tokens) and 785 tokens (448 x 448)
MODELS = {"deit_small-N197": 224, "deit_small-N785": 448}


def _deit_small(img_size):
    import timm
    torch.manual_seed(0)
    return timm.create_model("deit_small_patch16_224", pretrained=False, img_size=img_size).eval().cuda()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("method", ["grad", "row", "direct"])
@pytest.mark.parametrize("model_id", list(MODELS))
def test_daam_matches_reference(model_id, method, dtype):
    from daam_fast import DAAM, daam_reference
    size = MODELS[model_id]
    model = _deit_small(size)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(6)).cuda()
    ref = daam_reference(model, x, method=method)                 # float32, explicit attention
    if dtype == torch.float32:
        res = DAAM(model, method=method)(x, target=ref.targets)
    else:
        with torch.autocast("cuda", dtype=dtype):
            res = DAAM(model, method=method)(x, target=ref.targets)
    assert res.maps.is_cuda and res.maps.dtype == torch.float32
    assert_close(res.block_maps, ref.block_maps, dtype, name=f"{model_id} {method} block_maps")
    assert_close(res.maps, ref.maps, dtype, name=f"{model_id} {method} maps")


RENDER = [(2, 12, 14, 14, 224, 224), (4, 6, 28, 28, 112, 112), (3, 4, 23, 19, 97, 131)]


@pytest.mark.parametrize("pictures", ["none", "uint8"])
@pytest.mark.parametrize("mode", ["nonlinear", "linear", "raw"])
@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_render_against_torch(name, mode, pictures):
    """Each value equals the torch path's, or differs by one level (FMA contraction in torch's CUDA
    resize, float32 sums, libm exp) on at most 0.1 % of the values (>= 1e5 values a shape)."""
    _available("render", name)
    gen = torch.Generator().manual_seed(7)
    for B, L, h, w, H, W in RENDER:
        block = torch.rand(B, L, h, w, generator=gen) ** 3
        img = torch.randint(0, 256, (B, 3, H, W), generator=gen, dtype=torch.uint8).cuda() if pictures == "uint8" else None
        D = torch.cumsum(block, 1).cuda()
        ref = render_frames(D, img, mode, backend="torch", size=(H, W))
        for out in (render_frames(D, img, mode, backend=name, size=(H, W)),
                    render_frames(block.cuda(), img, mode, backend=name, size=(H, W), accumulate=True)):
            diff = (out.int() - ref.int()).abs()
            off = int((diff > 0).sum())
            assert diff.numel() >= 100_000
            assert diff.max().item() <= 1 and off <= math.floor(1e-3 * diff.numel()), (
                f"{name} {mode} {pictures} B{B}-L{L}-{h}x{w}-to-{H}x{W}: max |diff| {diff.max().item()}, "
                f"{off} of {diff.numel()} values differ")


def test_auto_picks_the_cuda_kernels():
    """Where the CUDA extension runs on this GPU, auto takes it within its limits and Triton past them."""
    cuda = torch.device("cuda")
    for op, sizes, big in (("block_map", (2, 6, 197, 64, 1), (2, 6, 197, 160, 1)),
                           ("render", (2, 12, 14, 14, 224, 224), (6000, 12, 14, 14, 224, 224))):
        name, why = _dispatch.explain(op, cuda, sizes)
        assert name == ("cuda" if _dispatch.backend_status(op, "cuda", cuda)[0] else "triton"), why
        assert _dispatch.resolve(op, cuda, sizes=big) != "cuda"


@pytest.mark.parametrize("method", ["grad", "direct"])
def test_daam_call_without_host_sync(method, monkeypatch):
    """No host synchronisation inside DAAM.__call__ (any sync raises under the debug mode) but
    the call's one final check (Checks.raise_first), which runs with the mode off."""
    import timm

    from daam_fast import DAAM
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=10).eval().cuda()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    end = Checks.raise_first

    def checked(self):
        torch.cuda.set_sync_debug_mode(0)                 # the one allowed read, at the end
        return end(self)
    with DAAM(model, method=method) as daam:
        daam(x)                                           # warm-up: lazy inits may sync once
        torch.cuda.synchronize()
        monkeypatch.setattr(Checks, "raise_first", checked)
        torch.cuda.set_sync_debug_mode("error")
        try:
            res = daam(x)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert res.maps.is_cuda and torch.isfinite(res.maps).all()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="one GPU: the other-device case needs two")
@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_tensors_on_another_device(name):
    """Tensors on cuda:1 while cuda:0 is current: the launch runs on cuda:1 (device guard)."""
    ok, why = _dispatch.backend_status("block_map", name, torch.device("cuda:1"))
    if not ok:
        pytest.skip(why)
    g = torch.Generator().manual_seed(0)
    q, k, v, c = (torch.randn(*s, generator=g) for s in ((2, 3, 32), (2, 3, 50, 32), (2, 3, 50, 32), (2, 3, 32)))
    ref = block_map_reference(q.double(), k.double(), v.double(), c.double(), 0.2, 1)
    with torch.cuda.device(0):
        out = block_map(*(t.to("cuda:1") for t in (q, k, v, c)), 0.2, 1, backend=name)
    assert out.device == torch.device("cuda:1")
    assert torch.allclose(out.double().cpu(), ref, rtol=1e-4, atol=1e-6)
