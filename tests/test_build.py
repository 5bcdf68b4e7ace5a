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
