"""Encoders for the per-image outputs of ``daam-fast explain``: PNG, GIF, MP4, grid.

Every function takes uint8 frames already drawn by the render kernel (``daam_fast.render``)
and spends most of its time in C code that releases the GIL (zlib, PIL's quantiser, the GIF
kernel of ``daam_fast._C``, x264), so a few writer threads share the work; PyAV's per-frame and
per-file calls hold the GIL (64 x 64 MP4s gain nothing from a second thread). The costs
measured for each are in docs/cli.md and benchmarks/NOTES.md.
"""
from __future__ import annotations

import functools
import math
import struct
import threading
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .mp4 import h264_mp4_bytes

__all__ = ["display_size", "panel_size", "png_bytes", "save_png", "gif_palette", "palette_array", "gif_bytes",
           "save_gif", "save_mp4", "compose_grid", "save_grid"]

MAX_SIDE = 640        # longer side of the drawn pictures (overlay, GIF, MP4), at most
MIN_SIDE = 0          # shorter side of small pictures is scaled up to this (0: never scaled up)
PANEL_SIDE = 192      # longer side of one grid panel, at most
ANIM_SIDE = 480       # longer side of the GIF / MP4 frames, at most (LZW and x264 cost grows with the pixels)
MP4_PRESET = "ultrafast"   # 12 frames at 640 x 480: ultrafast 62 ms, veryfast 244 ms, medium 622 ms (NOTES)


def _np(frames) -> np.ndarray:
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(frames, dtype=np.uint8))


def display_size(h: int, w: int, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> Tuple[int, int]:
    """The drawn picture's (H, W) for an image of (h, w): scaled up so its shorter side is at least
    ``min_side`` (default 0: the image's own size), then down so its longer side is at most
    ``max_side`` (aspect ratio kept; ``max_side=0``: no upper bound).

    The cost of every output grows with the pixels drawn: a 64 x 64 picture drawn at 256 x 256
    costs about 15x more to encode as PNG for no information (benchmarks/NOTES.md, 2026-11-30).
    """
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {(h, w)}")
    s = max(1.0, min_side / min(h, w)) if min_side else 1.0
    if max_side and max(h, w) * s > max_side:
        s = max_side / max(h, w)
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def panel_size(h: int, w: int, side: int = PANEL_SIDE) -> Tuple[int, int]:
    """(H, W) of one grid panel: the longer side at most ``side`` (never scaled up), aspect ratio kept."""
    s = min(1.0, side / max(h, w))
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


# ---------------------------------------------------------------------------------------- PNG
def _chunk(kind: bytes, data: bytes) -> Tuple[bytes, ...]:
    """A PNG chunk as its pieces (length, type, data, CRC), for one join: ``+`` copied the IDAT
    five times (0.05 ms at 640 x 480, 0.4 ms at 1920 x 1080)."""
    return struct.pack(">I", len(data)), kind, data, struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def png_bytes(image, level: int = 1) -> bytes:
    """(H, W, 3), (H, W, 4) or (H, W) uint8 -> PNG file bytes.

    Every row gets the "Sub" filter (the difference to the pixel on the left), then the rows are
    deflated. With the compiled extension (and ``level`` >= 1) one C++ call filters and codes
    them (csrc/png.h): one dynamic-Huffman block of literals and runs of a byte, the symbols
    zlib's run-length strategy finds, 3.5-8x faster than numpy + zlib for files at most 0.7 %
    larger. IDAT stream, one thread, median of 30-400 calls (rendered overlays of benchmarks/
    bench_cli.py's photos; the grid of a 64 x 64 shapes image and its 6 frames):

    ==============================  ===================  ===================
    picture                         numpy + zlib Z_RLE   kernel
    ==============================  ===================  ===================
    grid, 108 x 480                 0.65 ms,    78495 B  0.11 ms,    79047 B
    overlay, 64 x 64                0.057 ms,    9766 B  0.016 ms,    9765 B
    overlay, 640 x 480              5.7 ms,    547431 B  0.70 ms,   549127 B
    overlay, 1920 x 1080            37.6 ms,  3721924 B  4.8 ms,   3745878 B
    ==============================  ===================  ===================

    The whole file (CRC-32 of the chunks, one join) costs 0.12, 0.019, 0.77 and 5.5 ms.
    Without the extension (or with ``level`` 0: stored), numpy filters the rows and zlib deflates
    them with its run-length strategy. PIL's encoder tries five filters per row and costs 3-6x
    more than that for a file about as large; on rendered overlays the run-length strategy is
    1.5-2x faster than level 1 and gives 2-10 % smaller files (after the Sub filter most of the
    gain is Huffman coding of small differences; benchmarks/NOTES.md).
    """
    from .._ext import ext
    a = _np(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) uint8 picture, got {a.shape}")
    H, W, C = a.shape
    m = ext() if level >= 1 else None
    if m is not None and hasattr(m, "png_idat_cpu"):
        data = m.png_idat_cpu(a.ctypes.data, H, W, C)
    else:
        flat = a.reshape(H, W * C)
        raw = np.empty((H, W * C + 1), dtype=np.uint8)
        raw[:, 0] = 1                                              # filter type 1: Sub
        raw[:, 1:C + 1] = flat[:, :C]
        np.subtract(flat[:, C:], flat[:, :-C], out=raw[:, C + 1:])  # wraps modulo 256, as PNG wants
        z = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
        data = z.compress(raw) + z.flush()
    colour = {1: 0, 3: 2, 4: 6}[C]
    head = struct.pack(">IIBBBBB", W, H, 8, colour, 0, 0, 0)
    return b"".join((b"\x89PNG\r\n\x1a\n",) + _chunk(b"IHDR", head) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))


def save_png(image, path: str, level: int = 1) -> None:
    """Write (H, W, 3) or (H, W) uint8 as PNG (:func:`png_bytes`)."""
    data = png_bytes(image, level)
    with open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------- GIF
def gif_palette(frames, colours: int = 256, step: int = 0):
    """One palette for all frames: PIL's fast octree quantiser on every ``step``-th pixel (each
    way) of every frame; ``step=0``: about :data:`GIF_SAMPLE` pixels in all. Returns the PIL "P" image holding
    it (for ``Image.quantize(palette=...)``)."""
    from PIL import Image
    arr = _np(frames)
    step = step or max(1, int((arr[..., 0].size / GIF_SAMPLE) ** 0.5))
    sub = arr[:, ::step, ::step]                                  # (L, h', w', 3) -> frames stacked vertically
    sample = np.ascontiguousarray(sub.reshape(-1, sub.shape[2], 3))
    return Image.fromarray(sample).quantize(colours, method=Image.Quantize.FASTOCTREE)


GIF_SAMPLE = 100_000   # pixels sampled for PIL's palette, at most (250 k: a photo's palette 4.3 ms, 100 k: 1.4 ms,
                       # mean error of its GIF the same within 0.02 level; NOTES.md)
GIF_SAMPLE_CPP = 10_000   # pixels sampled for the kernel's palette (csrc/gif.h, palette_cpu), at most: mean error
                          # of a shapes GIF 5.7 levels (PIL's octree: 6.5) in 0.24 ms (PIL 0.27, holding the GIL)


def gif_frames(frames, palette=None) -> List["object"]:
    """(L, H, W, 3) uint8 -> L PIL "P" images sharing one palette (no dithering).

    (PIL's octree over the stacked frames maps every pixel in the same pass, 7x faster on
    6 x 64 x 64 frames, but to its leaf's colour rather than the nearest one: mean error 8-13
    levels instead of 4-8; not used, NOTES.md.)
    """
    from PIL import Image
    arr = _np(frames)
    pal = palette if palette is not None else gif_palette(arr)
    return [Image.fromarray(f).quantize(palette=pal, dither=Image.Dither.NONE) for f in arr]


def palette_array(palette) -> np.ndarray:
    """(K, 3) uint8 colours of a PIL "P" image's palette (:func:`gif_palette`)."""
    pal = np.asarray(palette.getpalette() or [0, 0, 0], dtype=np.uint8)
    return np.ascontiguousarray(pal[:len(pal) // 3 * 3].reshape(-1, 3)[:256])


def gif_bytes(frames, duration_ms: int = 700, palette=None) -> bytes:
    """(L, H, W, 3) uint8 -> the bytes of a looping animated GIF, one frame per block, one palette
    for all frames (:func:`gif_palette`, or ``palette`` (K, 3) uint8).

    With the compiled extension one C++ call makes the palette (variance-based median cut of the
    5-bit histogram of at most :data:`GIF_SAMPLE_CPP` pixels; each 5-bit colour cell takes the
    entry of the cut's region it lies in), and another maps every pixel through its cell and
    LZW-codes the frames (csrc/gif.h): 0.6 ms for 6 frames of 64 x 64, against 2.8 ms through
    PIL, whose palette cache costs ~1.7 ms to fill for every new palette; neither call holds the
    GIL. With ``palette`` given, each pixel takes the entry nearest its cell's centre.
    Without it, PIL makes the palette and maps the frames (:func:`gif_frames`) and writes the file.
    """
    from .._ext import ext
    arr = _np(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected (L, H, W, 3) uint8 frames, got {arr.shape}")
    m = ext()
    if m is None or not hasattr(m, "gif_cpu"):
        import io
        pal_im = gif_palette(arr) if palette is None else _palette_image(palette)
        ims = gif_frames(arr, pal_im)
        buf = io.BytesIO()
        ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=duration_ms, loop=0,
                    optimize=False)
        return buf.getvalue()
    L, H, W, _ = arr.shape
    cells = None
    if palette is not None:
        pal = np.ascontiguousarray(palette, dtype=np.uint8)
    elif hasattr(m, "palette_cpu"):
        pal, cells = np.empty((256, 3), np.uint8), np.empty(32768, np.int16)
        pal = pal[:m.palette_cpu(arr.ctypes.data, L * H * W, 256, GIF_SAMPLE_CPP, pal.ctypes.data, cells.ctypes.data)]
    else:
        pal = palette_array(gif_palette(arr))
    return m.gif_cpu(arr.ctypes.data, L, H, W, pal.ctypes.data, len(pal), int(round(duration_ms / 10)), 0,
                     cells.ctypes.data if cells is not None else 0)


def _palette_image(palette):
    from PIL import Image
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    im = Image.new("P", (1, 1))
    im.putpalette(pal.ravel().tolist())
    return im


def save_gif(frames, path: str, duration_ms: int = 700) -> None:
    """(L, H, W, 3) uint8 -> looping animated GIF file (:func:`gif_bytes`; one shared palette,
    not a median cut per frame: 1.4 s -> about 50 ms at 12 x 640 x 480 through PIL)."""
    data = gif_bytes(frames, duration_ms)
    with open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------- MP4
@functools.lru_cache(maxsize=None)
def _h264() -> str:
    import av
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - this FFmpeg build has no H.264 encoder
        return "mpeg4"


def save_mp4(frames, path: str, fps: int = 1, preset: str = MP4_PRESET, crf: int = 20) -> None:
    """(L, H, W, 3) uint8 -> MP4, H.264 (libx264 ``preset``, ``crf``) or MPEG-4 where this FFmpeg
    has no H.264; ``fps`` frames per second (1: the authors' demo). Odd sides are padded by one
    pixel (yuv420p).

    From the second clip of a size on, the clip is coded by an H.264 encoder kept open for that
    size in this thread (:class:`_ClipEncoder`), and :func:`.mp4.h264_mp4_bytes` writes the file:
    opening x264 costs 1.3 ms and FFmpeg's muxer 0.4 ms, more than coding 6 frames of 64 x 64
    (2.0 -> 0.3 ms per clip; NOTES.md).
    """
    arr = _np(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"expected (L, H, W, 3) uint8 frames, got {arr.shape}")
    L, H, W, _ = arr.shape
    H2, W2 = H + H % 2, W + W % 2
    if (H2, W2) != (H, W):
        arr = np.pad(arr, ((0, 0), (0, H2 - H), (0, W2 - W), (0, 0)), mode="edge")
    codec = _h264()
    if codec == "libx264" and _ClipEncoder.broken is None:
        key = (W2, H2, L, int(fps), preset, int(crf))
        try:
            enc = _ClipEncoder.get(key)
            if enc is not None:
                enc.write(arr, path)
                return
        except _ClipError:                          # out of step: a new encoder next time; this clip alone
            _ClipEncoder.drop(key)
        except OSError:                             # the file (disk full, no permission): this image fails
            raise
        except Exception as e:  # noqa: BLE001 - e.g. a PyAV that cannot set the encoder's options: never again
            _ClipEncoder.drop(key)
            _ClipEncoder.broken = f"{type(e).__name__}: {e}"
    import av
    with av.open(path, mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = W2, H2, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": preset, "crf": str(crf)}
        stream.thread_count = 1                     # tiny clips: threads cost more than they give
        for f in arr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


class _ClipError(RuntimeError):
    """The kept encoder did not give one packet per frame, an IDR first: the clip is coded alone."""


def _nal_units(data: bytes) -> List[bytes]:
    """The NAL units of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01 removed). NAL
    payloads never hold 00 00 01 (emulation prevention) nor end with 00."""
    out, starts, i = [], [], data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i)
        i = data.find(b"\x00\x00\x01", i + 3)
    for j, st in enumerate(starts):
        end = starts[j + 1] if j + 1 < len(starts) else len(data)
        while end > st + 3 and data[end - 1] == 0 and j + 1 < len(starts):
            end -= 1                                # the leading 00 of a 4-byte start code
        out.append(data[st + 3:end])
    return out


def _length_prefixed(data: bytes) -> bytes:
    """Annex B -> the MP4 sample form: each NAL unit behind its 4-byte big-endian length."""
    return b"".join(struct.pack(">I", len(n)) + n for n in _nal_units(data))


class _ClipEncoder:
    """A libx264 encoder kept open for clips of one size and length ``L`` in one thread.

    It puts an IDR frame every ``L`` frames (``keyint=min-keyint=L``, no scene cuts) and hands back
    each frame's packet at once (``tune=zerolatency``: no lookahead, no B-frames), so every clip
    is a closed run of frames that starts with an IDR and decodes alone. The SPS / PPS are kept
    out of band (global header) and go into each file's ``avcC``; :func:`.mp4.h264_mp4_bytes`
    writes the file (FFmpeg's muxer through PyAV cost 0.4 ms per file, holding the GIL).
    """

    _local = threading.local()
    broken: Optional[str] = None                    # why kept encoders are off in this process, if they are
    _seen: Dict[tuple, int] = {}
    _lock = threading.Lock()
    MAX_OPEN = 4                                    # encoders kept per thread (the most recent sizes)

    @classmethod
    def get(cls, key: tuple) -> Optional["_ClipEncoder"]:
        """This thread's encoder for ``key`` = (W, H, L, fps, preset, crf), or None the first time a
        key is seen in the process (one clip of a size is coded alone: no encoder kept for it)."""
        with cls._lock:
            n = cls._seen.get(key, 0)
            cls._seen[key] = n + 1
        if n == 0:
            return None
        cache = cls._local.__dict__.setdefault("encoders", {})
        enc = cache.pop(key, None)
        if enc is None:
            enc = cls(*key)
        cache[key] = enc                            # most recent last
        while len(cache) > cls.MAX_OPEN:
            cache.pop(next(iter(cache)))
        return enc

    @classmethod
    def drop(cls, key: tuple) -> None:
        cls._local.__dict__.setdefault("encoders", {}).pop(key, None)

    def __init__(self, W: int, H: int, L: int, fps: int, preset: str, crf: int):
        import av
        from fractions import Fraction
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt = W, H, "yuv420p"
        cc.time_base, cc.framerate = Fraction(1, fps), Fraction(fps)
        cc.options = {"preset": preset, "crf": str(crf), "tune": "zerolatency",
                      "x264-params": f"keyint={L}:min-keyint={L}:scenecut=0"}
        cc.flags |= av.codec.context.Flags.global_header
        cc.thread_count = 1
        cc.open()
        units = _nal_units(bytes(cc.extradata or b""))
        sps = [n for n in units if n[0] & 0x1F == 7]
        pps = [n for n in units if n[0] & 0x1F == 8]
        if len(sps) != 1 or len(pps) != 1:
            raise _ClipError("libx264 gave no SPS / PPS in its global header")
        s, p = sps[0], pps[0]
        # AVCDecoderConfigurationRecord (ISO/IEC 14496-15): version 1, profile, compatibility, level,
        # 4-byte lengths, one SPS, one PPS (yuv420p 8-bit: no High-profile extension needed)
        self.avcc = bytes([1, s[1], s[2], s[3], 0xFF, 0xE1]) + struct.pack(">H", len(s)) + s + \
            bytes([1]) + struct.pack(">H", len(p)) + p
        self.cc, self.W, self.H, self.L, self.fps, self.frames = cc, W, H, L, fps, 0

    def write(self, arr: np.ndarray, path: str) -> None:
        """Code the clip ``arr`` (L, H, W, 3) uint8 and write its MP4 file at ``path``."""
        import av
        packets = []
        for f in arr:
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = self.frames
            self.frames += 1
            packets += self.cc.encode(vf)
        if len(packets) != self.L or not packets[0].is_keyframe or any(p.is_keyframe for p in packets[1:]):
            raise _ClipError(f"expected {self.L} packets, an IDR first; got {len(packets)}")
        data = h264_mp4_bytes([_length_prefixed(bytes(p)) for p in packets], self.avcc, self.W, self.H, self.fps)
        with open(path, "wb") as f:
            f.write(data)


# ---------------------------------------------------------------------------------------- grid
@functools.lru_cache(maxsize=None)
def _font():
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=12)
    except TypeError:                               # Pillow < 10.1: the bitmap font
        return ImageFont.load_default()


def _text_patch(text: str) -> np.ndarray:
    """``text`` drawn by PIL in black on white with the grid's font: (h, w) uint8 grey levels."""
    from PIL import Image, ImageDraw
    font = _font()
    x0, y0, x1, y1 = font.getbbox(text)
    im = Image.new("L", (max(1, x1 + 1), max(1, y1 + 1)), 255)
    ImageDraw.Draw(im).text((0, 0), text, fill=0, font=font)
    return np.asarray(im)


_cached_text_patch = functools.lru_cache(maxsize=1024)(_text_patch)


@functools.lru_cache(maxsize=None)
def _glyph(c: str) -> Tuple[np.ndarray, int, int, float]:
    """One character of the grid's font: (its patch, 255 - coverage, as uint16; x and y offset
    from the pen; advance in pixels)."""
    from PIL import Image
    font = _font()
    mask, (ox, oy) = font.getmask2(c, mode="L")
    a = np.asarray(Image.Image()._new(mask)) if mask.size[0] and mask.size[1] else np.zeros((0, 0), np.uint8)
    return (255 - a).astype(np.uint16), ox, oy, font.getlength(c)


@functools.lru_cache(maxsize=4096)
def _kerning(a: str, b: str) -> float:
    return _font().getlength(a + b) - _glyph(a)[3] - _glyph(b)[3]


def _glyph_text(text: str) -> Optional[Tuple[np.ndarray, float]]:
    """``text`` as :func:`_text_patch` draws it, composed from cached glyphs (the same pixels:
    PIL's basic layout places each glyph at the rounded pen position, kerning included, and lays
    overlapping glyphs one over the other; test), and its advance (``font.getlength(text)``: the
    advances are 1/64 pixel steps, summed exactly). None where that does not hold: a font that
    is not FreeType with the basic layout, or text beyond printable ASCII (shaping)."""
    from PIL import ImageFont
    font = _font()
    if not (isinstance(font, ImageFont.FreeTypeFont) and font.layout_engine == ImageFont.Layout.BASIC
            and text.isascii() and text.isprintable()):
        return None
    pen, prev, items, x1, y1 = 0.0, None, [], 0, 0
    for c in text:
        if prev is not None:
            pen += _kerning(prev, c)
        patch, ox, oy, adv = _glyph(c)
        x = math.floor(pen + 0.5) + ox
        items.append((patch, x, oy))
        x1, y1 = max(x1, x + patch.shape[1]), max(y1, oy + patch.shape[0])
        pen += adv
        prev = c
    out = np.full((y1 + 1, max(x1, math.floor(pen + 0.5)) + 1), 255, np.uint16)
    right = 0                                                # columns left of this are untouched
    for patch, x, y in items:
        if x < 0:
            patch, x = patch[:, -x:], 0
        if patch.size:
            region = out[y:y + patch.shape[0], x:x + patch.shape[1]]
            if x >= right:                                   # on white: the glyph as it is
                region[...] = patch
            else:                                            # coverage a over b: 1 - (1 - a)(1 - b)
                region *= patch
                region += 127
                region //= 255
            right = max(right, x + patch.shape[1])
    return out.astype(np.uint8), pen


def _put_text(canvas: np.ndarray, text: str, x: int, y: int, patch: Optional[np.ndarray] = None) -> None:
    """Black ``text`` at (x, y) of a (H, W, 3) uint8 canvas, as ``ImageDraw.text`` puts it on white
    (the darker of the two where it is not white). ``patch``: the text already drawn (the grid's
    title, composed from cached glyphs: :func:`_glyph_text`, 0.29 -> 0.03 ms a title); else it is
    drawn by PIL and cached (the panel titles repeat from image to image: 8 titles 0.38 -> 0.03 ms)."""
    if patch is None:
        patch = _cached_text_patch(text)
    h = min(patch.shape[0], canvas.shape[0] - y)
    w = min(patch.shape[1], canvas.shape[1] - x)
    if h > 0 and w > 0:
        region = canvas[y:y + h, x:x + w]
        np.minimum(region, patch[:h, :w, None], out=region)


@functools.lru_cache(maxsize=64)
def _titled_canvas(H: int, W: int, h: int, w: int, cols: int, pad: int, th: int, top: int,
                   titles: Tuple[str, ...]) -> np.ndarray:
    """A grid's white canvas with the panels' titles drawn (the same for every grid of a run:
    drawn once; 0.07 ms a grid). Read-only: copy it."""
    canvas = np.full((H, W, 3), 255, dtype=np.uint8)
    for j, t in enumerate(titles):
        r, c = divmod(j, cols)
        _put_text(canvas, t, pad + c * (w + pad) + 2, top + r * (th + h + pad) + pad)
    canvas.flags.writeable = False
    return canvas


def compose_grid(panels: Sequence, titles: Sequence[str] = (), suptitle: str = "", cols: int = 0,
                 pad: int = 4) -> np.ndarray:
    """Tile same-size pictures (each (h, w, 3) uint8) on white with a title above each and an
    optional title above all; returns the (H, W, 3) uint8 picture. PIL draws the text."""
    ps = [_np(p) for p in panels]
    if not ps:
        raise ValueError("compose_grid needs at least one panel")
    h, w = ps[0].shape[:2]
    if any(p.shape != ps[0].shape for p in ps):
        raise ValueError("grid panels must all have the same size")
    n = len(ps)
    cols = cols or min(n, 7)
    rows = (n + cols - 1) // cols
    th = 16 if titles else 0
    top = 20 if suptitle else 0
    H, W = top + rows * (th + h + pad) + pad, cols * (w + pad) + pad
    if suptitle:                                     # each grid's own title: from cached glyphs where they hold
        sup_patch, sup_w = _glyph_text(suptitle) or (_text_patch(suptitle), _font().getlength(suptitle))
        W = max(W, int(sup_w) + 2 * pad + 4)                             # room for the whole title
    canvas = _titled_canvas(H, W, h, w, cols, pad, th, top, tuple(str(t) for t in list(titles)[:n])).copy()
    for j, p in enumerate(ps):
        r, c = divmod(j, cols)
        y, x = top + r * (th + h + pad) + th + pad, pad + c * (w + pad)
        canvas[y:y + h, x:x + w] = p
    if suptitle:
        _put_text(canvas, suptitle, pad + 2, 4, patch=sup_patch)
    return canvas


def save_grid(frames, path: str, titles: Optional[Sequence[str]] = None, suptitle: str = "", image=None,
              cols: int = 0) -> None:
    """Grid of all blocks' frames (L, H, W, 3), titled, optionally with the input picture first
    (same size as the frames), written as PNG. No matplotlib figure (about 0.9 s per image)."""
    arr = _np(frames)
    panels = ([_np(image)] if image is not None else []) + list(arr)
    names = (["input"] if image is not None else []) + list(titles or [f"block {i + 1}" for i in range(len(arr))])
    save_png(compose_grid(panels, names, suptitle, cols), path)
