"""The compiled extension: built, complete, and its CUDA launch path fails cleanly without a driver."""
import shutil

import pytest
import torch

from daam_fast import _ext

needs_ext = pytest.mark.skipif(not _ext.has_cpp(), reason=f"C++ extension not built: {_ext.ext_error()}")


@needs_ext
def test_extension_functions():
    m = _ext.ext()
    assert hasattr(m, "block_map_cpu") and hasattr(m, "has_cuda")


@needs_ext
def test_cuda_compiled_when_nvcc_present():
    if shutil.which("nvcc") is None and not shutil.os.path.exists("/usr/local/cuda/bin/nvcc"):
        pytest.skip("nvcc not on this machine: CUDA kernels not expected")
    assert _ext.has_cuda_build(), "nvcc is present but the CUDA kernels were not compiled in"


@needs_ext
def test_cuda_launch_reports_driver_error():
    """Exercise the CUDA launch code as far as a machine without a driver allows: argument
    checks, then the first CUDA call, whose error must come back as a RuntimeError naming it."""
    if not _ext.has_cuda_build():
        pytest.skip("built without CUDA")
    if torch.cuda.is_available():
        pytest.skip("a real GPU is present: tests/test_op_block_map.py runs the kernel instead")
    m = _ext.ext()
    with pytest.raises(RuntimeError, match=r"CUDA error \d+ \(cuda\w+"):
        m.cuda_device_count()
    fake = 0x1000  # never dereferenced: the device guard's first CUDA call fails before any launch
    ws = m.block_map_cuda_workspace(2, 3, 17)
    #      q     sb sh k     sb sh sn v     sb sh sn g     sb sh out   heads B  H  N   D  P  scale dt ws    numel dev stream
    args = [fake, 1, 1, fake, 1, 1, 1, fake, 1, 1, 1, fake, 1, 1, fake, 0, 2, 3, 17, 8, 1, 0.35, 0, fake, ws, 0, 0]
    with pytest.raises(RuntimeError, match=r"CUDA error \d+"):
        m.block_map_cuda(*args)
    bad = list(args)
    bad[0] = 0
    with pytest.raises(ValueError, match="null pointer"):
        m.block_map_cuda(*bad)
    bad = list(args)
    bad[20] = 17  # prefix == N
    with pytest.raises(ValueError, match="prefix"):
        m.block_map_cuda(*bad)
    bad = list(args)
    bad[22] = 7   # dtype code: checked before the first CUDA call, so its own message comes back
    with pytest.raises(ValueError, match="unsupported dtype code"):
        m.block_map_cuda(*bad)
    bad = list(args)
    bad[24] = ws - 1
    with pytest.raises(ValueError, match="workspace too small"):
        m.block_map_cuda(*bad)
    bad = list(args)
    bad[19] = 256  # head dim beyond the kernel
    with pytest.raises(ValueError, match="head_dim"):
        m.block_map_cuda(*bad)
    bad = list(args)
    bad[25] = -1  # device index
    with pytest.raises(ValueError, match="device index"):
        m.block_map_cuda(*bad)


@needs_ext
def test_cpu_entry_point_checks():
    m = _ext.ext()
    with pytest.raises(ValueError, match="sizes must be positive"):
        m.block_map_cpu(8, 1, 1, 8, 1, 1, 1, 8, 1, 1, 1, 8, 1, 1, 8, 0, 0, 1, 1, 1, 0, 1.0, 0)
    with pytest.raises(ValueError, match="float32"):
        m.block_map_cpu(8, 1, 1, 8, 1, 1, 1, 8, 1, 1, 1, 8, 1, 1, 8, 0, 1, 1, 2, 1, 0, 1.0, 5)


def test_no_ext_switch(monkeypatch):
    """DAAM_FAST_NO_EXT=1 gives the pure-PyTorch path (checked in a subprocess: import-time state)."""
    import subprocess
    import sys
    code = ("import warnings; warnings.simplefilter('ignore'); from daam_fast import _ext; "
            "from daam_fast.ops import _dispatch; import torch; "
            "print(_ext.has_cpp(), _dispatch.resolve('block_map', torch.device('cpu')))")
    out = subprocess.run([sys.executable, "-c", code], env={**__import__('os').environ, "DAAM_FAST_NO_EXT": "1"},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "torch"]


class _FakeTensor:
    def __init__(self, device):
        self.device = torch.device(device)


def test_device_guard_logic(monkeypatch):
    """Launches run on their tensors' device, whatever device is current: the CUDA entry points
    get the tensor's device index (the C++ DeviceGuard sets and restores it) and that device's
    stream; Triton launches run inside torch.cuda.device(t.device). Checked without a GPU."""
    from daam_fast.ops import _backends
    asked = []

    class _Stream:
        cuda_stream = 1234

    monkeypatch.setattr(torch.cuda, "current_stream", lambda index=None: asked.append(index) or _Stream())
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert _backends.cuda_device_and_stream(_FakeTensor("cuda:1")) == (1, 1234)
    assert asked == [1], "the stream must be the tensor's device's, not the current device's"
    assert _backends.cuda_device_and_stream(_FakeTensor("cuda")) == (0, 1234)
    with pytest.raises(ValueError, match="CUDA tensor"):
        _backends.cuda_device_and_stream(_FakeTensor("cpu"))
    guard = _backends.device_guard(_FakeTensor("cuda:1"))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(_backends.device_guard(_FakeTensor("cpu")), torch.cuda.device)
    with pytest.raises(ValueError, match="65535"):
        _backends.grid_dim(70000, "frames")


@pytest.mark.parametrize("op", ["block_map", "cls_attention", "render"])
def test_cuda_launchers_pass_the_device(monkeypatch, op):
    """Each CUDA launcher hands the extension the (device, stream) of its tensors."""
    import importlib
    mod = importlib.import_module(f"daam_fast.ops.{op}.cuda")
    calls = {}

    class _FakeExt:
        def block_map_cuda_workspace(self, B, H, N):
            return 1

        def __getattr__(self, name):
            return lambda *a: calls.setdefault(name, a)

    seen = []
    monkeypatch.setattr(mod, "cuda_device_and_stream", lambda t: seen.append(t) or (3, 777))
    monkeypatch.setattr(mod, "ext", lambda: _FakeExt())
    monkeypatch.setattr(mod, "available", lambda device=None: (True, ""))
    if op == "block_map":
        q, k, g = torch.randn(1, 2, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 8)
        mod.block_map_cuda(q, k, k, g, 0.3, 1)
        args = calls["block_map_cuda"]
    elif op == "cls_attention":
        q = torch.randn(1, 2, 5, 8)
        mod.cls_attention_cuda(q, q, q, 0.3)
        args = calls["cls_attention_cuda"]
    else:
        mod.render_cuda(torch.rand(1, 2, 3, 3), None, "nonlinear", (6, 6))
        args = calls["render_cuda"]
    assert seen, "the launcher must ask for its tensors' device"
    assert tuple(args[-2:]) == (3, 777), f"{op}: device index and stream must be the last two arguments"
