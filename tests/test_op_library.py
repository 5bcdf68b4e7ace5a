"""The fused ops as PyTorch ops (daam_fast/ops/_library.py): ``torch.library.opcheck`` on each
(schema, fake kernel, autograd registration, AOT dispatch), on the CPU backends and on Triton
under the interpreter; Dynamo keeps them in one graph (fullgraph compile, no graph break)."""
import os

import pytest
import torch
import torch._dynamo

from daam_fast.ops import _dispatch, _library
from daam_fast.ops.block_map import block_map
from daam_fast.ops.cls_attention import cls_attention
from daam_fast.ops.render import render_frames

pytestmark = pytest.mark.skipif(not _library.HAS_CUSTOM_OP, reason="torch without torch.library.custom_op")


def _available(op, name):
    if name == "triton" and os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1")
    ok, why = _dispatch.backend_status(op, name)
    if not ok:
        pytest.skip(f"{name}: {why}")


def _bm_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 13, 3, 3, 16, generator=g, dtype=dtype).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return q[:, :, 0].contiguous(), k, v, torch.rand(2, 3, 16, generator=g, dtype=dtype)


@pytest.mark.parametrize("heads", [False, True])
@pytest.mark.parametrize("name", ["torch", "cpp", "triton"])
def test_opcheck_block_map(name, heads):
    _available("block_map", name)
    q, k, v, g = _bm_inputs()
    torch.library.opcheck(torch.ops.daam_fast.block_map.default, (q, k, v, g, 0.25, 1, name, heads))


def test_opcheck_block_map_float64_cpp():
    _available("block_map", "cpp")
    q, k, v, g = _bm_inputs(torch.float64)
    torch.library.opcheck(torch.ops.daam_fast.block_map.default, (q, k, v, g, 0.25, 1, "cpp", True))


@pytest.mark.parametrize("name", ["torch", "triton"])
def test_opcheck_cls_attention(name):
    _available("cls_attention", name)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 16, generator=g, requires_grad=True) for _ in range(3))
    torch.library.opcheck(torch.ops.daam_fast.cls_attention.default, (q, k, v, 0.25, name))
    torch.library.opcheck(torch.ops.daam_fast.cls_attention.default, (q[:, :, :3], k, v, 0.25, name))


@pytest.mark.parametrize("pictures", [False, True])
@pytest.mark.parametrize("name", ["torch", "cpp", "triton"])
def test_opcheck_render(name, pictures):
    _available("render", name)
    maps = torch.rand(2, 3, 4, 5).cumsum(1)
    images = torch.randint(0, 256, (2, 3, 8, 10), dtype=torch.uint8) if pictures else None
    torch.library.opcheck(torch.ops.daam_fast.render.default,
                          (maps, images, "nonlinear", 8, 10, 0.4, 0.8, False, name),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_public_functions_go_through_the_ops(monkeypatch):
    """block_map / cls_attention / render_frames call the registered ops (what Dynamo sees)."""
    seen = []
    for op in ("block_map", "cls_attention", "render"):
        mod = __import__(f"daam_fast.ops.{op}", fromlist=["_op"])
        orig = mod._op
        monkeypatch.setattr(mod, "_op", lambda *a, _o=orig, _n=op: seen.append(_n) or _o(*a))
    q, k, v, g = _bm_inputs()
    block_map(q, k, v, g, 0.25, 1)
    cls_attention(torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8))
    render_frames(torch.rand(1, 2, 3, 3), size=(6, 6))
    assert seen == ["block_map", "cls_attention", "render"]


def test_fullgraph_compile_no_graph_break():
    """Each op is one node for Dynamo: a function using all three compiles with fullgraph=True
    (a graph break would raise) and gives the eager results."""
    q, k, v, g = _bm_inputs()
    maps4 = torch.rand(2, 3, 4, 5)

    def f(q, k, v, g, maps4):
        m, ht = block_map(q, k, v, g, 0.25, 1, heads=True)
        out, a = cls_attention(k, k, v)
        frames = render_frames(maps4, size=(8, 10), backend="torch")
        return m, ht, out, a, frames

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="eager")
    got, ref = compiled(q, k, v, g, maps4), f(q, k, v, g, maps4)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
def test_opcheck_on_cuda(name):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _available("block_map", name)
    q, k, v, g = (t.cuda() for t in _bm_inputs())
    torch.library.opcheck(torch.ops.daam_fast.block_map.default, (q, k, v, g, 0.25, 1, name, True))
    qq = torch.randn(2, 2, 9, 16, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.daam_fast.cls_attention.default, (qq, qq.detach(), qq.detach(), 0.25, name))
    maps = torch.rand(2, 3, 4, 5, device="cuda")
    torch.library.opcheck(torch.ops.daam_fast.render.default, (maps, None, "nonlinear", 8, 10, 0.4, 0.8, True, name),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


_TRITON_OP_SCRIPT = r"""
import contextlib, torch
from torch._subclasses.fake_tensor import FakeTensorMode
import daam_fast.ops.block_map as bm, daam_fast.ops.cls_attention as ca, daam_fast.ops.render as rd
from daam_fast.ops.block_map import triton as bt
from daam_fast.ops.cls_attention import triton as ct
from daam_fast.ops.render import triton as rt
for mod in (bt, ct, rt):                        # no GPU here: pretend the device is usable
    mod.available = lambda device=None: (True, "")
    mod.device_guard = lambda t: contextlib.nullcontext()
from daam_fast.ops import _library
assert _library.use_triton_op("triton", torch.empty(1)) is False
with FakeTensorMode():
    k = torch.empty(2, 13, 3, 3, 40, device="cuda").permute(2, 0, 3, 1, 4)[1]
    q, g = torch.empty(2, 3, 40, device="cuda"), torch.empty(2, 3, 40, device="cuda")
    assert _library.use_triton_op("triton", k)
    m, h = torch.ops.daam_fast.block_map_triton(q, k, k, g, 0.2, 1, True)
    assert m.shape == (2, 12) and h.shape == (2, 3, 12) and m.dtype == torch.float32 and m.is_cuda
    qq = torch.empty(2, 3, 5, 40, device="cuda", dtype=torch.bfloat16)
    out, a = torch.ops.daam_fast.cls_attention_triton(qq, k.bfloat16(), k.bfloat16(), 0.2)
    assert out.shape == (2, 3, 5, 40) and out.dtype == torch.bfloat16 and a.shape == (2, 3, 13) and a.dtype == torch.float32
    fr = torch.ops.daam_fast.render_triton(torch.empty(2, 4, 5, 7, device="cuda"), None, "nonlinear", 20, 28, 0.4, 0.8, True)
    assert fr.shape == (2, 4, 20, 28) and fr.dtype == torch.uint8
print("ok")
"""


@pytest.mark.skipif(not _library.HAS_TRITON_OP, reason="torch without torch.library.triton_op")
def test_triton_ops_trace_without_a_gpu():
    """daam_fast::<op>_triton (triton_op + wrap_triton): each one runs its launch plan on fake CUDA
    tensors (what torch.compile / export do) and gives the right output shapes and dtypes. In a
    child without TRITON_INTERPRET (the interpreter's kernels cannot be wrapped)."""
    pytest.importorskip("triton")
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", _TRITON_OP_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]
