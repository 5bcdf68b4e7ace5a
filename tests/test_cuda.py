"""CUDA-only checks (make gpu-check selects them with -m cuda; skipped without a GPU): the DAAM
call makes no host synchronisation (torch.cuda.set_sync_debug_mode("error")), launches run on
their tensors' device, and auto picks the CUDA kernels. The per-op comparisons of every backend
with the reference on CUDA tensors are in tests/test_op_*.py (also marked cuda)."""
import pytest
import torch

from daam_fast.ops import _dispatch
from daam_fast.ops.block_map import block_map, block_map_reference

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _vit():
    import timm
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=10).eval().cuda()


@pytest.mark.parametrize("method", ["grad", "direct"])
def test_daam_call_without_host_sync(method):
    """No host synchronisation inside DAAM.__call__ (any sync raises under the debug mode)."""
    from daam_fast import DAAM
    model = _vit()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    with DAAM(model, method=method) as daam:
        daam(x)                                           # warm-up: lazy inits may sync once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            res = daam(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert res.maps.is_cuda and torch.isfinite(res.maps).all()


def test_auto_picks_the_cuda_kernels():
    assert _dispatch.resolve("block_map", torch.device("cuda")) in ("cuda", "triton")
    assert _dispatch.resolve("render", torch.device("cuda")) in ("cuda", "triton")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="one GPU: the other-device case needs two")
@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_tensors_on_another_device(name):
    """Tensors on cuda:1 while cuda:0 is current: the launch runs on cuda:1 (device guard)."""
    ok, why = _dispatch.backend_status("block_map", name)
    if not ok:
        pytest.skip(why)
    g = torch.Generator().manual_seed(0)
    q, k, v, c = (torch.randn(*s, generator=g) for s in ((2, 3, 32), (2, 3, 50, 32), (2, 3, 50, 32), (2, 3, 32)))
    ref = block_map_reference(q.double(), k.double(), v.double(), c.double(), 0.2, 1)
    with torch.cuda.device(0):
        out = block_map(*(t.to("cuda:1") for t in (q, k, v, c)), 0.2, 1, backend=name)
    assert out.device == torch.device("cuda:1")
    assert torch.allclose(out.double().cpu(), ref, rtol=1e-4, atol=1e-6)
