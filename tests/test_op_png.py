"""png: the C++ IDAT compressor (csrc/png.h) against a numpy Sub filter, zlib's inflate and PIL.

Tolerance table (uint8 pixels and bytes; exact unless said):

| quantity                          | reference                                              | tolerance       |
|-----------------------------------|--------------------------------------------------------|-----------------|
| inflated IDAT (zlib.decompress)   | numpy: filter byte 1, then each byte minus the byte C  | exact           |
|                                   | to its left modulo 256 (first pixel of a row kept)      |                 |
| Adler-32 at the end of the stream | zlib.adler32 of the reference rows                      | exact           |
| decoded picture (PIL)             | the input                                              | exact           |
| chunk CRCs, order                 | zlib.crc32; IHDR, IDAT, IEND                           | exact           |
| file size, rendered overlays      | the zlib Z_RLE level 1 path of png_bytes               | at most + 15 %  |

Cases: noise (stored blocks), 1 x 1, 1 x N, N x 1, 37 x 53, C = 1, 3, 4, one colour (runs longer
than 258 bytes, runs ending at the last byte), runs of 3 .. 261 bytes, a skewed histogram that
needs the 14-bit length limit, rendered overlays and a grid, a 1080 x 1920 x 3 picture.
"""
import io
import struct
import zlib

import numpy as np
import pytest
import torch

from daam_fast import _ext
from daam_fast.outputs import encode
from daam_fast.render import render

pytestmark = pytest.mark.skipif(not (_ext.has_cpp() and hasattr(_ext.ext(), "png_idat_cpu")),
                                reason="daam_fast._C is not built with png_idat_cpu")


def _ref_rows(a: np.ndarray) -> bytes:
    """Sub-filtered rows, computed pixel by pixel in int arithmetic (not as png_bytes' numpy path)."""
    H, W, C = a.shape
    d = a.astype(np.int32)
    diff = d.copy()
    diff[:, 1:] = d[:, 1:] - d[:, :-1]                       # pixel minus the pixel on its left
    rows = np.concatenate([np.ones((H, 1), np.int32), diff.reshape(H, W * C)], axis=1)
    return (rows % 256).astype(np.uint8).tobytes()


def _idat(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a, np.uint8)
    return _ext.ext().png_idat_cpu(a.ctypes.data, *a.shape)


def _chunks(data: bytes) -> list:
    """[(type, payload)] of a PNG file, every CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        n, = struct.unpack(">I", data[i:i + 4])
        kind, payload = data[i + 4:i + 8], data[i + 8:i + 8 + n]
        crc, = struct.unpack(">I", data[i + 8 + n:i + 12 + n])
        assert crc == zlib.crc32(kind + payload), kind
        out.append((kind, payload))
        i += 12 + n
    return out


def _check(a: np.ndarray) -> bytes:
    """Asserts the table's exact rows on one picture; returns its IDAT stream."""
    from PIL import Image
    a = np.ascontiguousarray(a, np.uint8)
    z = _idat(a)
    ref = _ref_rows(a)
    assert z[:2] == b"\x78\x01"
    assert zlib.decompress(z) == ref
    assert struct.unpack(">I", z[-4:])[0] == zlib.adler32(ref)
    png = encode.png_bytes(a if a.shape[2] != 1 else a[..., 0])
    chunks = _chunks(png)
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert chunks[1][1] == z                                   # png_bytes used the kernel
    back = np.asarray(Image.open(io.BytesIO(png)))
    back = back[..., None] if back.ndim == 2 else back
    np.testing.assert_array_equal(back, a)
    return z


def _btype(z: bytes) -> int:
    """BTYPE of the first deflate block (0 stored, 2 dynamic Huffman)."""
    return (z[2] >> 1) & 3


def _code_lengths(z: bytes) -> tuple:
    """(literal / length, distance, code-length) code lengths of the first block, a dynamic one,
    read from its header (RFC 1951 3.2.7)."""
    bits = np.unpackbits(np.frombuffer(z[2:], np.uint8), bitorder="little")
    pos = 0

    def read(n):
        nonlocal pos
        v = int(sum(int(b) << i for i, b in enumerate(bits[pos:pos + n])))
        pos += n
        return v

    assert read(1) == 1 and read(2) == 2
    hlit, hdist, hclen = read(5) + 257, read(5) + 1, read(4) + 4
    order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
    cl = [0] * 19
    for k in range(hclen):
        cl[order[k]] = read(3)
    codes, code = {}, 0                                      # canonical code -> symbol
    for n in range(1, 8):
        for sym in range(19):
            if cl[sym] == n:
                codes[(n, code)] = sym
                code += 1
        code <<= 1
    lens = []
    while len(lens) < hlit + hdist:
        n, c = 0, 0
        while (n, c) not in codes:                           # Huffman codes are sent MSB first
            c, n = (c << 1) | read(1), n + 1
            assert n <= 7
        sym = codes[(n, c)]
        if sym < 16:
            lens.append(sym)
        elif sym == 16:
            lens += [lens[-1]] * (3 + read(2))
        else:
            lens += [0] * ((3 + read(3)) if sym == 17 else (11 + read(7)))
    assert len(lens) == hlit + hdist
    return lens[:hlit], lens[hlit:], cl


def _kraft(lens) -> float:
    return sum(2.0 ** -n for n in lens if n)


def _overlays(L, H, W, seed=0) -> np.ndarray:
    """Rendered overlays (L, H, W, 3): random accumulated maps over a smooth random picture with
    grain (as tests/test_outputs.py draws them, plus noise like a photo's)."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(1, L, 7, 9, generator=g).cumsum(1)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g) * 255, size=(H, W), mode="bilinear",
                                          align_corners=False)
    img = (img + 6 * torch.randn(img.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)
    return render(maps, images=img)[0].numpy()


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 3), (1, 1, 4), (1, 97, 3), (97, 1, 3), (1, 300, 1), (300, 1, 1),
                                   (37, 53, 1), (37, 53, 3), (37, 53, 4), (2, 3, 4)])
def test_noise_round_trip(shape):
    """Uniform noise of every channel count and odd sizes: exact rows and pixels."""
    a = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    _check(a)


def test_noise_is_stored():
    """Noise does not compress: stored blocks (at most 65535 bytes each), not a larger Huffman block."""
    a = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    z = _check(a)
    n = 300 * (400 * 3 + 1)
    assert _btype(z) == 0 and len(z) == 2 + n + 5 * -(-n // 65535) + 4


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (17, 200, 3)])
@pytest.mark.parametrize("shape", [(1, 1000), (300, 400), (5, 87), (3, 1)])
def test_one_colour(shape, colour):
    """A picture of one colour: after the filter every row is 1, the colour, then zeros, so runs
    longer than 258 bytes, runs reaching the last byte, and runs the length of a row."""
    a = np.empty(shape + (3,), np.uint8)
    a[:] = colour
    z = _check(a)
    if shape[0] * shape[1] >= 1000:                            # (tiny ones are stored: smaller)
        assert _btype(z) == 2 and len(z) < shape[0] * shape[1] * 3 / 50
        lit, dist, cl = _code_lengths(z)                     # complete codes, two distance codes
        assert _kraft(lit) == 1.0 and dist == [1, 1] and _kraft(cl) == 1.0


@pytest.mark.parametrize("C", [1, 3, 4])
def test_runs_of_every_length(C):
    """Runs of 1 .. 261 equal bytes (every length code and its extra bits, 258 and beyond), at
    every offset in the 8-byte scan, with the next run's byte next to them."""
    rng = np.random.default_rng(C)
    rows = []
    for r in range(1, 262):
        row = np.repeat(rng.integers(0, 256, 2 + 3, dtype=np.uint8), [1, r, 1, rng.integers(1, 9), 1])
        rows.append(row)
    flat = np.concatenate(rows)
    # pixels whose filtered bytes are `flat`: running sums along each row, modulo 256
    W = 64
    flat = np.concatenate([flat, np.zeros(-len(flat) % (W * C), np.uint8)])
    d = flat.reshape(-1, W, C).astype(np.int64)
    a = (np.cumsum(d, axis=1) % 256).astype(np.uint8)
    z = _check(a)
    assert _btype(z) == 2


def test_no_runs_still_has_distance_codes():
    """Compressible rows without one run: the header still holds two distance codes of one bit
    (as zlib writes them; an empty distance code is refused by some inflaters)."""
    rng = np.random.default_rng(2)
    diffs = rng.choice(np.array([0, 5, 9], np.uint8), (40, 90), p=[0.6, 0.3, 0.1])
    diffs[:, 2::3] = 200                                      # never three equal bytes in a row
    a = (np.cumsum(diffs.astype(np.int64), axis=1) % 256).astype(np.uint8)[..., None]
    z = _check(a)
    lit, dist, cl = _code_lengths(z)
    assert _btype(z) == 2 and max(lit[257:] + [0]) == 0 and dist == [1, 1]


def test_long_codes_are_limited():
    """A histogram of Fibonacci counts, whose Huffman code would be 24 bits deep: the lengths are
    cut to 14 bits and the code stays complete (zlib's inflate refuses over-subscribed codes)."""
    fib = [1, 1]
    while len(fib) < 26:
        fib.append(fib[-1] + fib[-2])
    diffs = np.repeat(np.arange(26, dtype=np.uint8) * 7 + 5, fib)
    rng = np.random.default_rng(0)
    rng.shuffle(diffs)
    W = 512
    diffs = np.concatenate([diffs, rng.integers(0, 256, -len(diffs) % W, dtype=np.uint8)])
    a = (np.cumsum(diffs.reshape(-1, W).astype(np.int64), axis=1) % 256).astype(np.uint8)[..., None]
    z = _check(a)
    assert _btype(z) == 2
    lit, dist, cl = _code_lengths(z)
    assert max(lit) == 14 and _kraft(lit) == 1.0 and max(cl) <= 7 and _kraft(cl) == 1.0


@pytest.mark.parametrize("H,W", [(37, 52), (64, 64), (120, 160)])
def test_overlays_round_trip_and_size(H, W):
    """Rendered overlays: exact, and the file within 15 % of the zlib Z_RLE path's."""
    for f in _overlays(3, H, W, seed=H):
        z = _check(f)
        c = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
        zl = c.compress(_ref_rows(f)) + c.flush()
        assert len(z) <= 1.15 * len(zl), (len(z), len(zl))


def test_grid_round_trip_and_size():
    """A grid of overlays on white with titles (long runs between short noisy spans)."""
    frames = _overlays(6, 64, 64, seed=5)
    grid = encode.compose_grid(list(frames), [f"D_{i + 1}" for i in range(6)], suptitle="x.png: class 3 (daam)")
    z = _check(grid)
    c = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    zl = c.compress(_ref_rows(grid)) + c.flush()
    assert len(z) <= 1.15 * len(zl), (len(z), len(zl))


def test_large_picture():
    """1080 x 1920 x 3 (6.2 MB of rows, one Huffman block, counts far beyond 16 bits)."""
    a = _overlays(1, 1080, 1920, seed=7)[0]
    a[100:300, 200:900] = (255, 255, 255)                      # a flat patch: many runs of 258
    _check(a)


def test_falls_back_to_zlib(monkeypatch):
    """Without the extension, and at level 0, png_bytes goes through numpy + zlib: the same pixels."""
    from PIL import Image
    a = _overlays(1, 37, 52)[0]
    with_kernel = encode.png_bytes(a)
    stored = encode.png_bytes(a, level=0)
    assert _btype(_chunks(stored)[1][1]) == 0
    monkeypatch.setattr(_ext, "ext", lambda: None)
    without = encode.png_bytes(a)
    assert _chunks(without)[1][1] != _chunks(with_kernel)[1][1]
    for data in (with_kernel, stored, without):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), a)


@pytest.mark.parametrize("ptr,H,W,C,match", [(0, 4, 4, 3, "null pointer"), (1, 0, 4, 3, "positive"),
                                             (1, 4, -1, 3, "positive"), (1, 4, 4, 2, "C must be"),
                                             (1, 4, 4, 5, "C must be"), (1, 4, 4, 0, "C must be"),
                                             (1, 2**31, 4, 3, "2\\^31"), (1, 2**16, 2**14, 4, "4 GiB")])
def test_rejects_bad_arguments(ptr, H, W, C, match):
    """Bad pointers, sizes and channel counts raise ValueError before any byte is read."""
    buf = np.zeros(64, np.uint8)
    p = buf.ctypes.data if ptr else 0
    with pytest.raises(ValueError, match=match):
        _ext.ext().png_idat_cpu(p, H, W, C)


def test_png_bytes_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected"):
        encode.png_bytes(np.zeros((4, 4, 2), np.uint8))
