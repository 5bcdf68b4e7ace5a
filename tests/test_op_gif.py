"""gif: the C++ GIF encoder (csrc/gif.h) against a brute-force palette search and two decoders.

Tolerance table (uint8 palette indices and pixels; exact):

| quantity                      | reference                                              | tolerance |
|-------------------------------|--------------------------------------------------------|-----------|
| palette index of each pixel   | numpy: nearest entry to the 5-bit cell centre, lowest   | exact     |
|                               | index on a tie, over the whole palette                  |           |
| decoded frames (PIL, FFmpeg)  | palette[index] of every pixel                           | exact     |
| frame count, delay, loop      | the arguments                                           | exact     |
| palette (palette_cpu)         | numpy: the same greedy variance cut of the 5-bit        | exact     |
|                               | histogram, box means rounded; each cell's region        |           |
| GIF of rendered frames        | PIL's octree palette: mean error against the frames     | lower     |
|                               | nearest entries of the kernel's palette                 | +0.3 level|

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


def _ref_palette(px: np.ndarray, K: int, max_samples: int) -> tuple:
    """csrc/gif.h's palette_cpu in numpy: boxes of 5-bit cells split where the cut removes the most
    squared error between the cells' means (ties: the lower box, then axis r, g, b, then the lower
    cut), until K boxes or none can split; each box's mean colour, rounded half up. Also the
    (32768,) box of every cell of the cube: the cuts split the cube's regions as they split the
    boxes. -> (palette, cells)"""
    step = -(-len(px) // max_samples)
    s = px[::step].astype(np.int64)
    q = s >> 3
    cell = (q[:, 0] << 10) | (q[:, 1] << 5) | q[:, 2]
    ids, inv = np.unique(cell, return_inverse=True)
    w = np.bincount(inv).astype(np.int64)
    sums = np.stack([np.bincount(inv, s[:, k]) for k in range(3)], 1).astype(np.int64)
    lv = np.stack([ids >> 10, (ids >> 5) & 31, ids & 31], 1)

    def split(members):
        W, S = w[members], sums[members]
        tw, ts = W.sum(), S.sum(0)
        whole = float((ts.astype(float) ** 2).sum()) / tw
        best = (0.0, -1, 0)
        for a in range(3):
            for v in range(31):
                left = lv[members, a] <= v
                lw = W[left].sum()
                if lw == 0 or lw == tw:
                    continue
                ls = S[left].sum(0).astype(float)
                rs = (ts - S[left].sum(0)).astype(float)
                g = (ls[0] * ls[0] + ls[1] * ls[1] + ls[2] * ls[2]) / lw + \
                    (rs[0] * rs[0] + rs[1] * rs[1] + rs[2] * rs[2]) / (tw - lw) - whole
                if g > best[0]:
                    best = (g, a, v + 1)
        return best

    boxes = [np.arange(len(ids))]
    regions = [[np.zeros(3, int), np.full(3, 32)]]
    gains = [split(boxes[0])]
    while len(boxes) < K:
        cand = [i for i, g in enumerate(gains) if g[1] >= 0]
        if not cand:
            break
        i = max(cand, key=lambda j: (gains[j][0], -j))
        _, a, cut = gains[i]
        b = boxes[i]
        boxes[i], right = b[lv[b, a] < cut], b[lv[b, a] >= cut]
        boxes.append(right)
        lo, hi = regions[i]
        regions[i] = [lo.copy(), hi.copy()]
        regions[i][1][a] = cut
        regions.append([lo.copy(), hi.copy()])
        regions[-1][0][a] = cut
        gains[i] = split(boxes[i])
        gains.append(split(right))
    pal = np.array([(sums[b].sum(0) + w[b].sum() // 2) // w[b].sum() for b in boxes], np.uint8)
    cells = np.full((32, 32, 32), -1, np.int16)
    for i, (lo, hi) in enumerate(regions):
        assert (cells[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == -1).all()       # the regions do not overlap
        cells[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = i
    assert (cells >= 0).all()                                                 # and tile the cube
    return pal, cells.ravel()


def _palette(px: np.ndarray, K: int, max_samples: int = 1 << 20, cells: bool = False):
    """The kernel's palette (and with ``cells`` its (32768,) cell table, written over -7s: a cell it
    forgot would show)."""
    px = np.ascontiguousarray(px, np.uint8).reshape(-1, 3)
    out, table = np.zeros((256, 3), np.uint8), np.full(32768, -7, np.int16)
    k = _ext.ext().palette_cpu(px.ctypes.data, len(px), K, max_samples, out.ctypes.data,
                               table.ctypes.data if cells else 0)
    return (out[:k], table) if cells else out[:k]


@pytest.mark.parametrize("K,n,colours,max_samples", [(1, 500, 0, 1 << 20), (16, 3000, 0, 1 << 20),
                                                    (64, 5000, 0, 1000), (256, 4000, 40, 1 << 20),
                                                    (7, 2000, 3, 1 << 20)])
def test_palette_equals_reference(K, n, colours, max_samples):
    """The median cut equals its numpy statement: noise, clustered colours, sampling every k-th
    pixel, and fewer distinct cells than K (then every cell its own entry, its pixels' mean)."""
    rng = np.random.default_rng(K + n)
    if colours:
        pal = rng.integers(0, 256, (colours, 3))
        px = pal[rng.integers(0, colours, n)].astype(np.uint8)
    else:
        px = np.clip(rng.normal(120, 50, (n, 3)) + rng.integers(0, 2, (n, 1)) * 60, 0, 255).astype(np.uint8)
    (got, table), (want, want_table) = _palette(px, K, max_samples, cells=True), _ref_palette(px, K, max_samples)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(table, want_table)
    np.testing.assert_array_equal(_palette(px, K, max_samples), got)           # the same without the table
    if colours and colours <= K:
        cells = {tuple(c) for c in (px.astype(int) >> 3)}
        assert len(got) == len(cells) and {tuple(c) for c in px} >= {tuple(c) for c in got} - set()


def test_palette_rejects_bad_arguments():
    px = np.zeros((10, 3), np.uint8)
    out = np.zeros((256, 3), np.uint8)
    m = _ext.ext()
    for K, n, ms in [(0, 10, 10), (257, 10, 10), (4, 0, 10), (4, 10, 0), (4, 10, 1 << 24)]:
        with pytest.raises(ValueError):
            m.palette_cpu(px.ctypes.data, n, K, ms, out.ctypes.data)
    with pytest.raises(ValueError, match="null"):
        m.palette_cpu(0, 10, 4, 10, out.ctypes.data)
    frames, table = np.zeros((1, 4, 4, 3), np.uint8), np.zeros(32768, np.int16)
    table[5] = 4                                                # an entry outside a 4-colour palette
    with pytest.raises(ValueError, match="outside the palette"):
        m.gif_cpu(frames.ctypes.data, 1, 4, 4, out.ctypes.data, 4, 10, 0, table.ctypes.data)


def test_palette_beats_pil_octree_on_rendered_frames():
    """The GIF of rendered overlays (the explain command's frames) is closer to them with the
    kernel's palette than with PIL's octree palette, both mapped by the kernel."""
    import torch
    from daam_fast.render import render
    g = torch.Generator().manual_seed(5)
    maps = torch.rand(3, 6, 8, 8, generator=g).cumsum(1)
    img = torch.nn.functional.interpolate(torch.rand(3, 3, 8, 8, generator=g) * 255, size=(64, 64),
                                          mode="bilinear", align_corners=False).round().to(torch.uint8)
    frames = render(maps, images=img).numpy()
    for fr in frames:
        ours = _palette(fr, 256, encode.GIF_SAMPLE_CPP)
        pil = encode.palette_array(encode.gif_palette(fr))
        errs = [np.abs(p[_index(fr, p)].reshape(fr.shape).astype(np.int16) - fr).mean() for p in (ours, pil)]
        assert errs[0] < errs[1], errs
        got, _ = _decode_pil(encode.gif_bytes(fr))                 # the kernel's palette, pixels by cell region
        cells = _palette(fr, 256, encode.GIF_SAMPLE_CPP, cells=True)[1]
        c = fr.reshape(-1, 3).astype(np.int64) >> 3
        np.testing.assert_array_equal(got.reshape(-1, 3), ours[cells[(c[:, 0] << 10) | (c[:, 1] << 5) | c[:, 2]]])
        err = np.abs(got.astype(np.int16) - fr).mean()
        assert errs[0] <= err < min(errs[0] + 0.3, errs[1]), (err, errs)


def test_gif_bytes_default_palette_close_to_frames():
    """With the default palette (the kernel's median cut, or PIL's octree without the extension),
    the GIF is within a few levels of the rendered frames (test_outputs checks the file)."""
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
