"""render: the fused kernels (C++, Triton, CUDA) against the torch path of daam_fast/render.py.

Tolerance table of the render op (uint8 outputs; the torch path is the reference):

| output                 | max abs difference | fraction of differing values |
|------------------------|--------------------|------------------------------|
| heat (B, L, H, W)      | 1 level            | 1e-3                         |
| overlay (B, L, H, W, 3)| 1 level            | 1e-3                         |

The kernels follow the torch ops operation by operation in float32 (same bilinear indices and
weights, no FMA, round half to even), so they differ only where a libm exp differs from
torch's by an ulp and moves a value across an integer boundary of floor(255 z); on these cases
they are measured bit-exact. Cases cover every mode, pictures uint8 / float / none, the cumulative
sum done in the kernel, up- and down-scaling with non-integer ratios, no resize, and degenerate
frames (all zero, constant, NaN, inf).
"""
import os

import pytest
import torch

from daam_fast import _ext, render
from daam_fast.ops import _dispatch
from daam_fast.ops.render import render_frames

# one uint8 level on at most 0.1 % of the values (at least one value on a GPU, where a shape of
# under 1000 values would otherwise allow none: FMA contraction in torch's CUDA resize, float32
# sums and libm exp may each move one value by a level), exact elsewhere
RENDER_TOL = {"heat": dict(max_abs=1, frac=1e-3), "overlay": dict(max_abs=1, frac=1e-3)}

# (B, L, h, w, H, W): what each exercises
SHAPES = [
    (2, 3, 5, 7, 20, 28),      # integer upscale (x4)
    (1, 2, 5, 7, 37, 53),      # non-integer upscale, odd sizes
    (2, 2, 16, 16, 9, 11),     # downscale
    (2, 3, 6, 6, 6, 6),        # no resize
]
SHAPE_IDS = ["B{}-L{}-{}x{}-to-{}x{}".format(*s) for s in SHAPES]
MODES = ["nonlinear", "linear", "raw"]


def _data(B, L, h, w, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    block = torch.rand(B, L, h, w, generator=g) * (torch.rand(B, L, h, w, generator=g) > 0.3)  # ReLU-like zeros
    img = torch.randint(0, 256, (B, 3, H, W), generator=g, dtype=torch.uint8)
    return block, torch.cumsum(block, dim=1), img


def assert_frames_close(out, ref, kind, name=""):
    assert out.dtype == torch.uint8 and out.shape == ref.shape, f"{name}: {out.dtype} {tuple(out.shape)}"
    d = (out.cpu().int() - ref.cpu().int()).abs()
    tol = RENDER_TOL[kind]
    worst = tuple(int(i) for i in torch.unravel_index(d.argmax(), d.shape))
    allowed = max(1 if out.is_cuda else 0, int(tol["frac"] * d.numel()))
    msg = (f"{name}: max |diff| {d.max().item()} (tol {tol['max_abs']}), {int((d > 0).sum())} of {d.numel()} "
           f"values differ (tol {allowed}), worst at {worst}: {out[worst].item()} vs {ref[worst].item()}")
    assert d.max().item() <= tol["max_abs"] and int((d > 0).sum()) <= allowed, msg


def _skip_unless(name):
    if name == "triton" and os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1 (make test sets it)")
    ok, why = _dispatch.backend_status("render", name)
    if not ok:
        pytest.skip(f"{name}: {why}")


def _compare(name, shape, mode, pictures, accumulate, device="cpu"):
    B, L, h, w, H, W = shape
    block, maps, img = (t.to(device) for t in _data(*shape))
    images = {"none": None, "uint8": img, "float": img.float() / 255}[pictures]
    ref = render_frames(maps, images, mode, size=(H, W), backend="torch")
    out = render_frames(block if accumulate else maps, images, mode, size=(H, W), backend=name,
                        accumulate=accumulate)
    assert out.device == maps.device
    assert_frames_close(out, ref, "heat" if images is None else "overlay",
                        f"{name} {shape} {mode} {pictures} acc={accumulate}")
    assert ref.float().std() > 10, "case must not be degenerate"


@pytest.mark.parametrize("accumulate", [False, True], ids=["maps", "cumsum"])
@pytest.mark.parametrize("pictures", ["none", "uint8", "float"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_cpp(shape, mode, pictures, accumulate):
    _skip_unless("cpp")
    _compare("cpp", shape, mode, pictures, accumulate)


@pytest.mark.parametrize("mode", MODES)
def test_cpp_big_uint8_blend_table(mode):
    """Calls of >= 2^18 output pixels with uint8 pictures blend through a (channel, level, value)
    table (the same float arithmetic, done once per entry): against the torch path as above, and
    bit-exact with the per-pixel path of smaller calls on the image they share."""
    _skip_unless("cpp")
    B, L, h, w, H, W = 2, 2, 14, 14, 250, 490                       # 490,000 pixels, non-integer ratios
    _, maps, img = _data(B, L, h, w, H, W, seed=3)
    assert B * L * H * W >= 1 << 18 > L * H * W                     # the whole call takes the table, one image not
    big = render_frames(maps, img, mode, backend="cpp")
    assert_frames_close(big, render_frames(maps, img, mode, backend="torch"), "overlay", f"cpp table {mode}")
    for i in range(B):
        assert torch.equal(big[i:i + 1], render_frames(maps[i:i + 1], img[i:i + 1], mode, backend="cpp"))


# the interpreter costs ~1 s per call here: every shape once, every mode at least once
TRITON_CASES = [(SHAPES[0], "nonlinear"), (SHAPES[1], "linear"), (SHAPES[2], "raw"), (SHAPES[3], "nonlinear")]


@pytest.mark.parametrize("shape,mode", TRITON_CASES, ids=[f"{SHAPE_IDS[SHAPES.index(s)]}-{m}" for s, m in TRITON_CASES])
def test_triton(shape, mode):
    _skip_unless("triton")
    _compare("triton", shape, mode, "uint8", accumulate=False)


@pytest.mark.parametrize("pictures,shape", [("none", SHAPES[2]), ("float", SHAPES[3])], ids=["heat-down", "float-same"])
def test_triton_cumsum_and_pictures(pictures, shape):
    _skip_unless("triton")
    _compare("triton", shape, "nonlinear", pictures, accumulate=True)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
@pytest.mark.parametrize("mode", MODES)
def test_on_cuda_tensors(mode, name):
    """The GPU kernels against the torch path on CUDA tensors (make gpu-check)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _skip_unless(name)
    for shape in SHAPES:
        for pictures in ("none", "uint8", "float"):
            _compare(name, shape, mode, pictures, accumulate=True, device="cuda")
    _compare(name, (1, 2, 23, 19, 30, 40), mode, "none", accumulate=False, device="cuda")


@pytest.mark.parametrize("name", ["cpp", "triton"])
def test_degenerate_frames(name):
    """All-zero image, constant frames, NaN and inf: the torch path gives 0 there, never NaN."""
    _skip_unless(name)
    D = torch.rand(3, 3, 4, 5)
    D[0] = 0.0
    D[1, 1:] = 2.0
    D[2, 0, 1, 1] = float("nan")
    D[2, 1, 2, 2] = float("inf")
    D[2, 2, 0, 0] = float("-inf")
    pics = torch.randint(0, 256, (3, 3, 8, 10), dtype=torch.uint8)
    combos = [(m, p) for m in MODES for p in (None, pics)] if name == "cpp" else [("nonlinear", None), ("linear", pics)]
    for mode, images in combos:
        ref = render_frames(D, images, mode, size=(8, 10), backend="torch")
        out = render_frames(D, images, mode, size=(8, 10), backend=name)
        assert_frames_close(out, ref, "heat" if images is None else "overlay", f"{name} degenerate {mode}")


def test_pictures_at_another_size():
    """Pictures larger than the requested size are resized (torch) before the kernel."""
    _skip_unless("cpp")
    block, maps, img = _data(2, 3, 5, 7, 40, 56)
    ref = render_frames(maps, img, size=(20, 28), backend="torch")
    assert_frames_close(render_frames(maps, img, size=(20, 28), backend="cpp"), ref, "overlay", "resized pictures")


def test_public_render_dispatch(monkeypatch):
    """render() follows DAAM_FAST_BACKEND / auto: on a CPU tensor it takes the C++ kernel when
    built, and an explicit backend that cannot run raises."""
    block, maps, img = _data(*SHAPES[0])
    expected = "cpp" if _ext.has_cpp() and hasattr(_ext.ext(), "render_cpu") else "torch"
    assert _dispatch.resolve("render", maps.device) == expected
    ref = render_frames(maps, img, backend="torch")
    assert_frames_close(render(maps, img), ref, "overlay", "render() default")
    monkeypatch.setenv("DAAM_FAST_BACKEND", "torch")
    assert torch.equal(render(maps, img), ref)
    monkeypatch.delenv("DAAM_FAST_BACKEND")
    if not torch.cuda.is_available():
        monkeypatch.setenv("DAAM_FAST_BACKEND", "cuda")      # render's backend: the process default
        with pytest.raises(RuntimeError, match="cuda"):
            render(maps, img)
        monkeypatch.delenv("DAAM_FAST_BACKEND")
    with pytest.raises(ValueError, match="mode"):
        render(maps, mode="log")
    with pytest.raises(ValueError, match="images"):
        render(maps, img[:1])
    with pytest.raises(ValueError, match=r"\(B, L, h, w\)"):
        render(maps[0])


def test_cuda_launch_without_driver_raises():
    if not _ext.has_cuda_build() or not hasattr(_ext.ext(), "render_cuda"):
        pytest.skip("daam_fast._C built without the CUDA render kernel")
    if torch.cuda.is_available():
        pytest.skip("a real GPU is present: test_cuda runs the kernel instead")
    m = _ext.ext()
    fake = 0x1000
    #      maps  img  code out   B  L  h  w  H   W  mode acc   alpha beta ws    dev stream
    args = [fake, 0, 0, fake, 2, 3, 5, 7, 20, 28, 0, False, 0.4, 0.8, fake, 0, 0]
    with pytest.raises(RuntimeError, match=r"CUDA error \d+ \(cuda\w+"):
        m.render_cuda(*args)
    bad = list(args)
    bad[10] = 5
    with pytest.raises(ValueError, match="mode"):
        m.render_cuda(*bad)
    bad = list(args)
    bad[2] = 1                                    # dtype code without a picture pointer
    with pytest.raises(ValueError, match="disagree"):
        m.render_cuda(*bad)
    bad = list(args)
    bad[15] = -1                                  # device index: checked before the first CUDA call
    with pytest.raises(ValueError, match="device index"):
        m.render_cuda(*bad)
    with pytest.raises(ValueError, match="sizes"):
        m.render_cpu(fake, 0, 0, fake, 0, 3, 5, 7, 20, 28, 0, False, 0.4, 0.8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["torch", "cpp", "triton"])
def test_half_precision_maps(name, dtype):
    """float16 / bfloat16 maps (an autocast explainer's) render as their float32 values do."""
    _skip_unless(name)
    block, maps, img = _data(*SHAPES[0])
    half = maps.to(dtype)
    ref = render_frames(half.float(), img, "nonlinear", size=(20, 28), backend="torch")
    assert_frames_close(render_frames(half, img, "nonlinear", size=(20, 28), backend=name), ref, "overlay",
                        f"{name} {dtype}")


@pytest.mark.parametrize("mode", ["nonlinear", "linear"])
def test_triton_large_maps(mode):
    """Maps over one chunk of the statistics (23 x 19 = 437 values > 256): the chunked min / max."""
    _skip_unless("triton")
    _compare("triton", (1, 2, 23, 19, 30, 40), mode, "none", accumulate=True)
