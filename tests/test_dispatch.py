"""The backend choice (daam_fast/ops/_dispatch.py), on the CPU with availability mocked: auto
takes the first backend that is available on the tensors' device and whose kernel takes the
sizes (CUDA -> Triton -> torch), an explicit backend that cannot take them raises naming the
limit, and the CUDA kernels count as available only on a device their build can run on (arch
list, then the extension's probe)."""
import os
import re

import pytest
import torch

from daam_fast.ops import _backends, _dispatch
from daam_fast.ops.block_map import block_map
from daam_fast.ops.cls_attention import cls_attention
from daam_fast.ops.render import render_frames

CUDA = torch.device("cuda")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


@pytest.fixture
def everything_available(monkeypatch):
    """Every backend available on every device (the shape rules alone decide)."""
    monkeypatch.setattr(_dispatch, "backend_status",
                        lambda op, name, device=None: (False, "no kernel") if (op, name) in _dispatch._MISSING
                        else (True, ""))
    monkeypatch.delenv("DAAM_FAST_BACKEND", raising=False)


# (op, sizes, backend auto picks): each line crosses one limit of one kernel
AUTO = [
    ("block_map", (64, 12, 197, 64, 1), "cuda"),            # ViT-B/16, batch 64
    ("block_map", (2, 16, 785, 128, 1), "cuda"),            # head dim 128: the CUDA kernel's largest
    ("block_map", (2, 12, 197, 160, 1), "triton"),          # head dim over 128
    ("block_map", (2, 12, 197, 512, 1), "torch"),           # over Triton's 256 too
    ("block_map", (70000, 1, 197, 64, 1), "triton"),        # B over the CUDA grid's 65535
    ("block_map", (1, 5000, 50, 64, 1), "triton"),          # over 4096 heads (combine kernel's shared memory)
    ("block_map", (1, 1, 65535 * 32, 64, 0), "cuda"),       # the CUDA kernel's token tiles are on grid x
    ("block_map", (1, 1, 65535 * 32 + 1, 160, 0), "torch"), # d > 128, and Triton's token tiles over 65535
    ("cls_attention", (8, 6, 785, 785, 64), "cuda"),
    ("cls_attention", (8, 6, 197, 197, 192), "triton"),
    ("cls_attention", (1024, 64, 197, 197, 64), "triton"),  # B * H = 65536
    ("cls_attention", (1, 1, 65535 * 16 + 1, 65535 * 16 + 1, 160), "torch"),  # d > 128, Triton's query tiles
    ("render", (64, 12, 14, 14, 224, 224), "cuda"),
    ("render", (6000, 12, 14, 14, 224, 224), "torch"),     # B * L = 72000 frames: both grids refuse
]


@pytest.mark.parametrize("op,sizes,expected", AUTO, ids=[f"{o}-{'x'.join(map(str, s))}" for o, s, _ in AUTO])
def test_auto_chooses_by_shape(everything_available, op, sizes, expected):
    name, why = _dispatch.explain(op, CUDA, sizes)
    assert name == expected, why
    assert why.endswith(f"{expected}: yes")
    for skipped in ("cuda", "triton")[:("cuda", "triton", "torch").index(expected)]:
        assert f"{skipped}: no (" in why and "exceeds" in why, why
    assert _dispatch.resolve(op, CUDA, sizes=sizes) == expected


def test_auto_on_cpu_tensors(everything_available):
    assert _dispatch.resolve("block_map", torch.device("cpu"), sizes=(2, 12, 197, 512, 1)) == "cpp"
    assert _dispatch.resolve("cls_attention", torch.device("cpu"), sizes=(2, 6, 197, 197, 64)) == "torch"


@pytest.mark.parametrize("op,sizes,limit", [
    ("block_map", (2, 12, 197, 160, 1), "head dim d = 160 exceeds 128"),
    ("cls_attention", (1024, 64, 197, 197, 64), "B * H = 65536 exceeds 65535"),
    ("render", (6000, 12, 14, 14, 224, 224), "frames B * L = 72000 exceeds 65535"),
])
def test_explicit_backend_that_cannot_take_the_shape_raises(everything_available, op, sizes, limit):
    with pytest.raises(ValueError, match=re.escape(limit)):
        _dispatch.resolve(op, CUDA, "cuda", sizes)


def test_explicit_backend_through_the_env_var_is_explicit(everything_available, monkeypatch):
    monkeypatch.setenv("DAAM_FAST_BACKEND", "cuda")
    with pytest.raises(ValueError, match="DAAM_FAST_BACKEND.*head dim d = 256 exceeds 128"):
        _dispatch.resolve("block_map", CUDA, None, (1, 1, 10, 256, 1))
    assert _dispatch.explain("block_map", CUDA, (1, 1, 10, 64, 1)) == ("cuda", "cuda: requested (DAAM_FAST_BACKEND)")


def test_unavailable_backends_are_skipped_with_their_reason(monkeypatch):
    monkeypatch.delenv("DAAM_FAST_BACKEND", raising=False)
    status = {"cuda": (False, "no kernel image for sm_75"), "triton": (True, "")}
    monkeypatch.setattr(_dispatch, "backend_status", lambda op, name, device=None: status.get(name, (True, "")))
    name, why = _dispatch.explain("block_map", CUDA, (2, 12, 197, 64, 1))
    assert name == "triton" and why == "cuda: no (no kernel image for sm_75); triton: yes"
    with pytest.raises(RuntimeError, match="'cuda' requested for block_map but unavailable: no kernel image for sm_75"):
        _dispatch.resolve("block_map", CUDA, "cuda", (2, 12, 197, 64, 1))


def test_the_ops_pass_their_sizes(everything_available):
    """Each op hands its sizes to the dispatcher: an explicit backend whose kernel cannot take them
    raises ValueError before anything is launched (here on CPU tensors, availability mocked)."""
    k = torch.zeros(1, 2, 6, 300)
    with pytest.raises(ValueError, match="head dim d = 300 exceeds 256, the limit of the triton kernel of block_map"):
        block_map(k[:, :, 0], k, k, k[:, :, 0], 0.1, 1, backend="triton")
    with pytest.raises(ValueError, match="head dim d = 300 exceeds 256, the limit of the triton kernel of cls_attention"):
        cls_attention(k, k, k, backend="triton")
    with pytest.raises(ValueError, match="frames B \\* L = 65536 exceeds 65535"):
        render_frames(torch.zeros(65536, 1, 1, 1), backend="triton")


def test_cuda_limits_are_the_kernels_checks():
    """The table's CUDA limits are the checks in csrc/cuda/*.cu."""
    src = {op: open(os.path.join(ROOT, "csrc", "cuda", f"{op}.cu")).read() for op in ("block_map", "cls_attention", "render")}
    lim = {(op, what): limit for (op, b), rows in _dispatch.LIMITS.items() if b == "cuda" for what, _, limit in rows}
    for op in ("block_map", "cls_attention"):
        chan = int(re.search(r"constexpr int kMaxChan = (\d+);", src[op]).group(1))
        assert f"a.D <= 32 * kMaxChan" in src[op] and lim[(op, "head dim d")] == 32 * chan
    assert "a.H <= 4096" in src["block_map"] and lim[("block_map", "heads H")] == 4096
    assert "a.B <= 65535" in src["block_map"] and lim[("block_map", "batch B")] == 65535
    assert "a.B * a.H <= 65535" in src["cls_attention"] and lim[("cls_attention", "B * H")] == 65535
    assert "a.B * a.L <= 65535" in src["render"] and lim[("render", "frames B * L")] == 65535


class _FakeExt:
    """daam_fast._C as built for sm_80 and sm_90, on a machine whose GPU is mocked."""

    def __init__(self, probe_error=None):
        self.probe_error = probe_error
        self.probed = []

    def has_cuda(self):
        return True

    def cuda_archs(self):
        return [800, 900]

    def cuda_probe(self, index):
        self.probed.append(index)
        if self.probe_error:
            raise RuntimeError(self.probe_error)
        return (90, 90)

    def __getattr__(self, name):            # block_map_cuda, render_cuda, ...: present
        return lambda *a: None


@pytest.fixture
def gpu(monkeypatch):
    """A mocked GPU: set ``gpu.capability`` and ``gpu.ext`` before resolving."""
    class G:
        capability = (9, 0)
        ext = _FakeExt()
        asked = []
    monkeypatch.setattr(_backends, "_IMAGE_STATUS", {})
    monkeypatch.setattr(_backends, "ext", lambda: G.ext)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: G.asked.append(i) or G.capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "Mocked GPU")
    monkeypatch.delenv("DAAM_FAST_BACKEND", raising=False)
    return G


def test_cuda_kernels_on_a_device_they_were_built_for(gpu):
    gpu.capability = (8, 6)                     # sm_80 binary runs on sm_86
    assert _dispatch.backend_status("block_map", "cuda", CUDA) == (True, "")
    assert gpu.ext.probed == [0]
    assert _dispatch.resolve("render", torch.device("cuda:1"), sizes=(1, 2, 3, 3, 6, 6)) == "cuda"
    assert gpu.ext.probed == [0, 1] and 1 in gpu.asked        # cuda:1 is probed on its own
    _dispatch.resolve("cls_attention", CUDA, "cuda", (1, 2, 5, 5, 8))
    assert gpu.ext.probed == [0, 1]                           # once per device


def test_older_gpu_than_every_arch_goes_to_triton(gpu):
    pytest.importorskip("triton")
    gpu.capability = (7, 5)                                   # a T4: sm_80 / sm_90 images cannot run
    ok, why = _dispatch.backend_status("block_map", "cuda", CUDA)
    assert not ok and "Mocked GPU (cuda:0, sm_75)" in why and "built for sm_80, sm_90" in why
    assert "DAAM_FAST_CUDA_ARCHS=75" in why and gpu.ext.probed == []
    name, expl = _dispatch.explain("block_map", CUDA, (2, 12, 197, 64, 1))
    assert name == "triton" and expl.startswith("cuda: no (no kernel image for Mocked GPU")
    with pytest.raises(RuntimeError, match="no kernel image"):
        _dispatch.resolve("block_map", CUDA, "cuda", (2, 12, 197, 64, 1))


def test_gpu_older_than_triton_goes_to_torch(gpu):
    pytest.importorskip("triton")
    gpu.capability = (6, 1)
    name, why = _dispatch.explain("cls_attention", CUDA, (2, 6, 197, 197, 64))
    assert name == "torch", why
    assert "triton: no (Triton needs compute capability >= 7.0, this device has 6.1)" in why


def test_probe_failure_is_a_reason_not_a_crash(gpu):
    """A newer GPU may still run the sm_90 PTX; the probe decides. A driver older than the static
    runtime (error 35) or a missing image makes the CUDA kernels unavailable, with the error."""
    gpu.capability = (12, 0)
    gpu.ext = _FakeExt("daam_fast._C: CUDA error 35 (cudaErrorInsufficientDriver: ...) at cudaGetDevice(&prev_)")
    ok, why = _dispatch.backend_status("render", "cuda", CUDA)
    assert not ok and "error 35" in why and "sm_120" in why and "DAAM_FAST_CUDA_ARCHS=120" in why
    assert _dispatch.resolve("render", CUDA, sizes=(1, 2, 3, 3, 6, 6)) in ("triton", "torch")


def test_cuda_backend_refuses_cpu_tensors(gpu):
    with pytest.raises(RuntimeError, match="CUDA tensors only"):
        _dispatch.resolve("block_map", torch.device("cpu"), "cuda", (1, 1, 4, 8, 1))
    ok, why = _dispatch.backend_status("block_map", "cuda", torch.device("cpu"))
    assert not ok and "CUDA tensors" in why


def test_old_extension_without_the_probe_is_unavailable(gpu):
    class Old:                                  # built before cuda_probe existed
        def has_cuda(self):
            return True

        def block_map_cuda_workspace(self, B, H, N):
            return 0
    gpu.ext = Old()
    ok, why = _dispatch.backend_status("block_map", "cuda", CUDA)
    assert not ok and "no cuda_probe: rebuild the extension" in why


def test_the_docs_list_every_limit():
    """docs/backends.md's table of size limits is the dispatcher's table."""
    doc = open(os.path.join(ROOT, "docs", "backends.md")).read()
    for (op, backend), rows in _dispatch.LIMITS.items():
        line = re.search(rf"^\| {op} \| {backend} \| (.*) \|$", doc, re.M)
        assert line, f"docs/backends.md has no limits row for {op} / {backend}"
        got = re.findall(r"<= ([0-9^ -]+?)(?:;|$)", line.group(1))
        want = ["2^31 - 1" if limit == 2**31 - 1 else str(limit) for _, _, limit in rows]
        assert sorted(g.strip() for g in got) == sorted(want), (op, backend, got, want)


def test_probe_without_a_driver_reports_the_cuda_error():
    """daam_fast._C's arch list and device probe; here (no driver) the probe raises the CUDA error."""
    from daam_fast import _ext
    if not _ext.has_cuda_build():
        pytest.skip("daam_fast._C was built without CUDA")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/test_cuda.py runs the kernels")
    m = _ext.ext()
    if not hasattr(m, "cuda_probe"):
        pytest.skip("daam_fast._C predates cuda_probe: rebuild the extension")
    assert m.cuda_archs() and all(a % 10 == 0 and a >= 500 for a in m.cuda_archs())
    with pytest.raises(RuntimeError, match=r"CUDA error \d+ \(cuda\w+"):
        m.cuda_probe(0)
