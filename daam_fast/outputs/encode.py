"""Encoders of the pictures ``daam-fast explain`` writes, each through a well-kept library:

=======  =========================================================  ============================
format   library                                                    cost (640 x 480, one thread)
=======  =========================================================  ============================
JPEG     libjpeg-turbo, ``torchvision.io.encode_jpeg`` (nvjpeg on   2.3 ms, 78 KiB (q90)
         CUDA tensors, a batch per call; releases the GIL)
PNG      libpng level 1, ``torchvision.io.encode_png``              25 ms, 505 KiB
WebP     Pillow                                                     10 ms, 60 KiB
GIF      Pillow, one palette per clip (octree of a 1/16 mosaic)     35 ms (12 frames of 480 x 360)
MP4      PyAV: libx264 ``ultrafast`` (MPEG-4 without it), its muxer 42 ms (12 frames of 480 x 360)
=======  =========================================================  ============================

(Measured 2026-12-07 on a 2-core AMD EPYC, median of 20.) An overlay is a picture for people:
the exact maps are in ``maps/*.npy``, so JPEG is the default. The frames come drawn by the
render kernel (:func:`daam_fast.render.render`) as uint8.
"""
from __future__ import annotations

import functools
import io
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["IMAGE_FORMATS", "display_size", "panel_size", "image_bytes", "save_image", "gif_bytes", "save_gif",
           "save_mp4", "video_codec", "import_av", "compose_grid", "save_grid"]

IMAGE_FORMATS = ("jpg", "png", "webp")
MAX_SIDE = 640        # longer side of the drawn pictures (overlay, GIF, MP4), at most
MIN_SIDE = 0          # shorter side of small pictures is scaled up to this (0: never scaled up)
PANEL_SIDE = 192      # longer side of one grid panel, at most
ANIM_SIDE = 480       # longer side of the GIF / MP4 frames, at most
QUALITY = 90          # JPEG and WebP quality
PNG_LEVEL = 1         # libpng's compression level: 6 costs about 3x more for files 10 % smaller
MP4_PRESET = "ultrafast"
GIF_MOSAIC = 4        # the palette is made from every 4th pixel each way (1/16 of them)


def import_av():
    """PyAV, or an ImportError of one line that names the extra to install (``video``)."""
    from .._extras import require
    return require("av", "video files")


def _np(frames) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(frames, dtype=np.uint8))


def display_size(h: int, w: int, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> Tuple[int, int]:
    """The drawn picture's (H, W) for an image of (h, w): scaled up so its shorter side is at least
    ``min_side`` (0: the image's own size), then down so its longer side is at most ``max_side``
    (aspect ratio kept; ``max_side=0``: no upper bound)."""
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


def image_bytes(images, fmt: str = "jpg", quality: int = QUALITY) -> List[bytes]:
    """Encode pictures as files.

    Args:
        images: (B, H, W, 3) uint8, a tensor (CPU or CUDA) or an array, or a list of (H, W, 3).
            JPEGs of CUDA tensors are encoded on the GPU (nvjpeg), in one call for the batch,
            and only their bytes come to the host.
        fmt: "jpg", "png" or "webp".
        quality: JPEG / WebP quality, 1 .. 100 (PNG is lossless).

    Returns:
        the file bytes of each picture.
    """
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format {fmt!r}: expected one of {', '.join(IMAGE_FORMATS)}")
    items = list(images)
    if not items:
        return []
    if fmt == "webp":
        from PIL import Image
        out = []
        for t in items:
            buf = io.BytesIO()
            Image.fromarray(_np(t)).save(buf, format="WEBP", quality=quality, method=0)
            out.append(buf.getvalue())
        return out
    from torchvision.io import encode_jpeg, encode_png
    items = [t if isinstance(t, torch.Tensor) else torch.from_numpy(np.array(t, dtype=np.uint8)) for t in items]
    chw = [t.permute(2, 0, 1).contiguous() for t in items]
    if fmt == "png":
        return [encode_png(t.cpu(), compression_level=PNG_LEVEL).numpy().tobytes() for t in chw]
    data = encode_jpeg(chw, quality=quality)
    sizes = [d.numel() for d in data]
    flat = torch.cat(data).cpu().numpy()                    # one copy to the host for the batch
    ends = np.cumsum(sizes)
    return [flat[e - n:e].tobytes() for e, n in zip(ends, sizes)]


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def save_image(image, path: str, quality: int = QUALITY) -> None:
    """Write (H, W, 3) uint8 as the format of ``path``'s extension (.jpg / .jpeg, .png, .webp)."""
    ext = path.rsplit(".", 1)[-1].lower()
    _write(path, image_bytes([image], "jpg" if ext == "jpeg" else ext, quality)[0])


def gif_bytes(frames, duration_ms: int = 700) -> bytes:
    """(L, H, W, 3) uint8 -> a looping animated GIF, one palette for the clip (Pillow's fast
    octree on a mosaic of every :data:`GIF_MOSAIC`-th pixel of every frame, each frame mapped to
    it without dithering). Pillow merges a frame identical to the one before it into that one
    (the clip's time is kept)."""
    from PIL import Image
    arr = _np(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"expected (L, H, W, 3) uint8 frames, got {arr.shape}")
    mosaic = arr[:, ::GIF_MOSAIC, ::GIF_MOSAIC]
    palette = Image.fromarray(np.ascontiguousarray(mosaic.reshape(-1, mosaic.shape[2], 3))).quantize(
        256, method=Image.Quantize.FASTOCTREE)
    ims = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in arr]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=duration_ms, loop=0)
    return buf.getvalue()


def save_gif(frames, path: str, duration_ms: int = 700) -> None:
    """(L, H, W, 3) uint8 -> looping animated GIF file (:func:`gif_bytes`)."""
    _write(path, gif_bytes(frames, duration_ms))


@functools.lru_cache(maxsize=None)
def video_codec(codec: str = "auto") -> str:
    """The encoder this FFmpeg has for ``codec``: "auto" is libx264, else MPEG-4 part 2.

    Raises:
        ValueError: no such encoder in this FFmpeg build.
    """
    av = import_av()
    for name in (["libx264", "mpeg4"] if codec == "auto" else [codec]):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - this FFmpeg build lacks the encoder
            continue
    raise ValueError(f"codec={codec!r}: no such video encoder in this FFmpeg build (PyAV)")


def save_mp4(frames, path: str, fps: int = 1, preset: str = MP4_PRESET, crf: int = 20) -> None:
    """(L, H, W, 3) uint8 -> MP4 through PyAV's muxer: H.264 (libx264 ``preset``, ``crf``), or
    MPEG-4 part 2 where this FFmpeg has no libx264; ``fps`` frames per second. Odd sides are
    padded by one pixel (yuv420p)."""
    av = import_av()
    arr = _np(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"expected (L, H, W, 3) uint8 frames, got {arr.shape}")
    L, H, W, _ = arr.shape
    if H % 2 or W % 2:
        arr = np.pad(arr, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    codec = video_codec()
    with av.open(path, mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = arr.shape[2], arr.shape[1], "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": preset, "crf": str(crf)}
        stream.thread_count = 1                     # a clip of a few frames: threads cost more than they give
        for f in arr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@functools.lru_cache(maxsize=None)
def _font():
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=12)
    except TypeError:                               # Pillow < 10.1: the bitmap font
        return ImageFont.load_default()


@functools.lru_cache(maxsize=64)
def _titled_canvas(H: int, W: int, h: int, w: int, cols: int, pad: int, th: int, top: int,
                   titles: Tuple[str, ...]) -> np.ndarray:
    """A grid's white canvas with the panels' titles drawn (the same for every grid of a layout:
    drawn once). Read-only: copy it."""
    from PIL import Image, ImageDraw
    im = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for j, t in enumerate(titles):
        r, c = divmod(j, cols)
        draw.text((pad + c * (w + pad) + 2, top + r * (th + h + pad) + pad), t, fill=(0, 0, 0), font=_font())
    canvas = np.asarray(im).copy()
    canvas.flags.writeable = False
    return canvas


def compose_grid(panels: Sequence, titles: Sequence[str] = (), suptitle: str = "", cols: int = 0,
                 pad: int = 4) -> np.ndarray:
    """Tile same-size pictures (each (h, w, 3) uint8) on white with a title above each and an
    optional title above all (``ImageDraw.text``); returns the (H, W, 3) uint8 picture."""
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
    if suptitle:
        W = max(W, int(_font().getlength(suptitle)) + 2 * pad + 4)      # room for the whole title
    canvas = _titled_canvas(H, W, h, w, cols, pad, th, top, tuple(str(t) for t in list(titles)[:n])).copy()
    for j, p in enumerate(ps):
        r, c = divmod(j, cols)
        y, x = top + r * (th + h + pad) + th + pad, pad + c * (w + pad)
        canvas[y:y + h, x:x + w] = p
    if suptitle:
        from PIL import Image, ImageDraw
        im = Image.fromarray(canvas)
        ImageDraw.Draw(im).text((pad + 2, 4), suptitle, fill=(0, 0, 0), font=_font())
        canvas = np.asarray(im)
    return canvas


def save_grid(frames, path: str, titles: Optional[Sequence[str]] = None, suptitle: str = "", image=None,
              cols: int = 0, quality: int = QUALITY) -> None:
    """Grid of all blocks' frames (L, H, W, 3), titled, optionally with the input picture first
    (same size as the frames), written as the format of ``path``'s extension."""
    arr = _np(frames)
    panels = ([_np(image)] if image is not None else []) + list(arr)
    names = (["input"] if image is not None else []) + list(titles or [f"block {i + 1}" for i in range(len(arr))])
    save_image(compose_grid(panels, names, suptitle, cols), path, quality)
