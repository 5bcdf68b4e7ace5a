"""Reading pictures: any file Pillow reads -> RGB uint8 (3, H, W) as a viewer shows it, with clear errors.

:func:`read_image` is the one reader of ``explain``, ``eval --data DIR``, ``bank build`` and
``batch``: the EXIF orientation is applied first, palette and animated pictures are read at any
size (an animated picture is read from its first frame), HEIC/HEIF goes through the optional
``pillow-heif`` plugin (``pip install "daam-fast[heif]"``) and AVIF through Pillow itself.
"""
from __future__ import annotations

import glob
import os
from typing import Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageReadError", "read_image", "expand_inputs", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".avif", ".heic", ".heif")
# Pillow's decompression-bomb limit that the daam-fast command sets at its start (Pillow refuses
# pictures of more than twice it); read_image itself leaves PIL.Image.MAX_IMAGE_PIXELS as it is
MAX_PIXELS = 400_000_000
_ORIENTATION = 0x0112                      # the EXIF tag
# ISO base media file brands of HEIF pictures (AVIF's "avif" / "avis" are read by Pillow itself)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
# modes whose pixel values Image.reduce may average; the others (palette indices, 1-bit, 16-bit
# grey) are converted to RGB first
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F")


class ImageReadError(ValueError):
    """A file that is not a readable picture; the message says why."""


def expand_inputs(items: Iterable[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Files, directories (their image files, sorted) and glob patterns -> (paths, problems)."""
    paths: List[str] = []
    problems: List[Tuple[str, str]] = []
    for item in items:
        if any(ch in item for ch in "*?["):
            found = sorted(glob.glob(item, recursive=True))
            if not found:
                problems.append((item, "the pattern matches no file"))
            paths += [f for f in found if os.path.isfile(f)]
        elif os.path.isdir(item):
            found = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(item) for f in fs
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                problems.append((item, "the directory holds no image file"))
            paths += found
        elif os.path.exists(item):
            paths.append(item)
        else:
            problems.append((item, "no such file or directory"))
    seen, unique = set(), []
    for p in paths:
        if os.path.abspath(p) not in seen:
            seen.add(os.path.abspath(p))
            unique.append(p)
    return unique, problems


def read_image(path: str, max_side: int = 0, info: Optional[dict] = None) -> Tensor:
    """Read a picture as a viewer shows it: RGB uint8 (3, H, W).

    The EXIF orientation (all eight) is applied first, so (H, W) is the shown size. Grey-scale,
    1-bit, palette and CMYK images are converted; RGBA / LA / palette with transparency are
    composited on white; 16-bit and 32-bit integer images are scaled to 8 bits by their full
    range. An animated picture (GIF, APNG, WebP) or a multi-page TIFF is read from its first
    frame. HEIC / HEIF needs the ``heif`` extra (pillow-heif); AVIF is read by Pillow. With
    ``max_side`` > 0 a huge image is reduced while decoding (JPEG) and after conversion so that
    its longer side is at most about ``max_side`` (never below it), keeping memory bounded.
    Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is left as the caller set it.

    Args:
        path: the picture file.
        max_side: reduce pictures whose longer side exceeds ``2 * max_side`` (0: never).
        info: a dict that receives what was applied: ``"orientation"``, the EXIF orientation
            (1-8; 1: none), and ``"animated"``, True when the file holds more than one frame
            (only the first was read).

    Returns:
        (3, H, W) uint8 tensor, H x W the shown size (reduced with ``max_side``).

    Raises:
        ImageReadError: the file is missing, empty, not an image, truncated or too large, or a
            HEIC file without pillow-heif (the message names the extra to install).

    Example:
        >>> info = {}
        >>> x = read_image("photo.jpg", max_side=896, info=info)   # info == {"orientation": 6, "animated": False}
    """
    from PIL import Image, UnidentifiedImageError
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: empty file")
    try:
        oriented = None
        try:
            im = Image.open(path)
        except UnidentifiedImageError:
            if not _is_heif(path):
                raise
            im = _open_heif(path)
            oriented = int(im.info.get("original_orientation") or 1)   # libheif applied it while decoding
        with im:
            arr, orientation, animated = _shown_rgb(im, max_side, oriented)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: image too large ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, ImageReadError):
            raise ImageReadError(f"{path}: {e}") from None
        raise ImageReadError(f"{path}: cannot decode ({e})") from None
    if info is not None:
        info.update(orientation=orientation, animated=animated)
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def _shown_rgb(im, max_side: int, oriented: Optional[int] = None) -> Tuple[np.ndarray, int, bool]:
    """(H, W, 3) uint8 of frame 0 in the shown orientation, reduced; the orientation applied;
    whether there are more frames. ``oriented``: the orientation the decoder applied already
    (None: apply EXIF's)."""
    from PIL import Image, ImageOps
    animated = bool(getattr(im, "is_animated", False))     # GIF: finds a second frame (n_frames reads all)
    if animated:
        im.seek(0)
    orientation = oriented
    if orientation is None:
        orientation = int(im.getexif().get(_ORIENTATION, 1) or 1)
        orientation = orientation if 1 <= orientation <= 8 else 1
        big = max_side and max(im.size) > 2 * max_side
        if big:
            im.draft("RGB", (max_side, max_side))      # JPEG: decode at a reduced scale, the same on both axes
        im.load()
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
    im.load()
    factor = max(1, max(im.size) // max_side) if max_side and max(im.size) > 2 * max_side else 1
    if factor == 1:
        return _to_rgb_array(im), orientation, animated
    if im.mode in _REDUCIBLE:
        return _to_rgb_array(im.reduce(factor)), orientation, animated
    arr = _to_rgb_array(im)                            # palette indices cannot be averaged: convert first
    return np.asarray(Image.fromarray(arr).reduce(factor)), orientation, animated


def _is_heif(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(64)
    if head[4:8] != b"ftyp":
        return False
    size = min(int.from_bytes(head[:4], "big"), len(head))
    brands = [head[8:12]] + [head[i:i + 4] for i in range(16, size - 3, 4)]
    return any(b in _HEIF_BRANDS for b in brands)


def _open_heif(path: str):
    from ._extras import MissingExtra, require
    try:
        pillow_heif = require("pillow_heif", "HEIC/HEIF pictures")
    except MissingExtra as e:
        raise ImageReadError(str(e)) from None
    return pillow_heif.open_heif(path, convert_hdr_to_8bit=True).to_pillow()


def _to_rgb_array(im) -> np.ndarray:
    from PIL import Image
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        lo, hi = (0.0, 65535.0) if mode.startswith("I;16") else (float(a.min()), float(a.max()))
        if mode == "I" and a.max() <= 65535 and a.min() >= 0:
            lo, hi = 0.0, 65535.0 if a.max() > 255 else 255.0
        a = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1) * 255
        g = np.rint(a).astype(np.uint8)
        return np.stack([g, g, g], axis=-1)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))
