"""gif: the C++ GIF encoder (csrc/gif.h) against a brute-force palette search and two decoders.

Tolerance table (uint8 palette indices and pixels; exact):

| quantity                      | reference                                              | tolerance |
|-------------------------------|--------------------------------------------------------|-----------|
| palette index of each pixel   | numpy: nearest entry to the 5-bit cell centre, lowest   | exact     |
|                               | index on a tie, over the whole palette                  |           |
| decoded frames (PIL, FFmpeg)  | palette[index] of every pixel                           | exact     |
| frame count, delay, loop      | the arguments                                           | exact     |

Cases: palettes of 1, 2, 3, 5, 17 and 256 colours (min code sizes 2 .. 8), duplicated entries
(ties), 1 x 1 and odd sizes, one and many frames, and noise large enough to fill the 12-bit
LZW table many times (clear codes).
"""
import io

import numpy as np
import pytest

from daam_fast import _ext
from daam_fast.outputs import encode

pytestmark = pytest.mark.skipif(not _ext.has_cpp(), reason="daam_fast._C is not built")


def _ref_index(px: np.ndarray, pal: np.ndarray) -> np.ndarray:
    c = ((px.reshape(-1, 3).astype(np.int64) >> 3) << 3) + 4
    d = ((c[:, None, :] - pal[None].astype(np.int64)) ** 2).sum(-1)
    return d.argmin(1).astype(np.uint8)                      # argmin: the first (lowest) index on a tie


def _index(px: np.ndarray, pal: np.ndarray) -> np.ndarray:
    """The kernel's indices; run on outputs pre-filled with 0 and with 255, which must agree (an
    element the kernel forgot cannot match both)."""
    px, pal = np.ascontiguousarray(px, np.uint8), np.ascontiguousarray(pal, np.uint8)
    outs = []
    for fill in (0, 255):
        out = np.full(px.size // 3, fill, np.uint8)
        _ext.ext().palette_index_cpu(px.ctypes.data, px.size // 3, pal.ctypes.data, len(pal), out.ctypes.data)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    return outs[0]


def _decode_pil(data: bytes) -> tuple:
    from PIL import Image
    im = Image.open(io.BytesIO(data))
    frames = []
    for i in range(im.n_frames):
        im.seek(i)
        frames.append(np.asarray(im.convert("RGB")))
    return np.stack(frames), im.info


def _decode_ffmpeg(data: bytes) -> np.ndarray:
    import av
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


@pytest.mark.parametrize("K", [1, 2, 3, 17, 256])
def test_palette_index_equals_brute_force(K):
    rng = np.random.default_rng(K)
    pal = rng.integers(0, 256, (K, 3), dtype=np.uint8)
    if K > 3:
        pal[K // 2] = pal[1]                                 # a duplicated entry: ties go to the lower index
    px = rng.integers(0, 256, (5000, 3), dtype=np.uint8)
    px[:1000] = pal[rng.integers(0, K, 1000)]                # pixels on the palette's own colours
    np.testing.assert_array_equal(_index(px, pal), _ref_index(px, pal))


def test_palette_index_clustered_palette():
    """A palette crowded in one corner of the colour cube (as an overlay's is): many entries share
    a coarse box, so the search's bounds, not the box, decide."""
    rng = np.random.default_rng(1)
    pal = np.clip(rng.normal(90, 12, (256, 3)), 0, 255).astype(np.uint8)
    px = np.clip(rng.normal(90, 30, (20000, 3)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(_index(px, pal), _ref_index(px, pal))


@pytest.mark.parametrize("L,H,W,K", [(1, 1, 1, 1), (3, 37, 53, 2), (2, 9, 11, 5), (6, 64, 64, 256), (1, 300, 301, 256),
                                     (4, 33, 20, 17)],
                         ids=["1x1-K1", "odd-K2", "K5", "shapes-K256", "noise-resets", "K17"])
def test_gif_decodes_to_palette_colours(L, H, W, K):
    rng = np.random.default_rng(L * 1000 + K)
    pal = rng.integers(0, 256, (K, 3), dtype=np.uint8)
    frames = rng.integers(0, 256, (L, H, W, 3), dtype=np.uint8)
    if H == 64:                                              # smooth frames: long LZW runs
        frames = np.cumsum(rng.integers(0, 3, (L, H, W, 3)), axis=2).clip(0, 255).astype(np.uint8)
    data = encode.gif_bytes(frames, duration_ms=250, palette=pal)
    want = pal[_ref_index(frames, pal)].reshape(L, H, W, 3)
    got, info = _decode_pil(data)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_decode_ffmpeg(data), want)
    assert info["duration"] == 250 and info["loop"] == 0


def test_gif_bytes_default_palette_close_to_frames():
    """With the palette of :func:`gif_palette` (PIL's octree on a sample), the GIF is within a few
    levels of the rendered frames, as PIL's own mapping is (test_outputs checks the file)."""
    rng = np.random.default_rng(3)
    base = np.cumsum(rng.integers(-3, 4, (64, 80, 3)), axis=1) + 128
    frames = np.stack([np.clip(base + 9 * i, 0, 255) for i in range(5)]).astype(np.uint8)
    got, _ = _decode_pil(encode.gif_bytes(frames))
    err = np.abs(got.astype(np.int16) - frames)
    assert got.shape == frames.shape and err.mean() < 6 and err.max() < 40


def test_gif_falls_back_to_pil(monkeypatch):
    """Without the extension the same call goes through PIL and decodes to the same size and timing."""
    frames = np.random.default_rng(4).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    monkeypatch.setattr(_ext, "ext", lambda: None)
    got, info = _decode_pil(encode.gif_bytes(frames, duration_ms=300))
    assert got.shape == frames.shape and info["duration"] == 300 and info["loop"] == 0


@pytest.mark.parametrize("K", [0, 257])
def test_gif_rejects_bad_palette(K):
    frames = np.zeros((1, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="palette"):
        encode.gif_bytes(frames, palette=np.zeros((K, 3), np.uint8))
