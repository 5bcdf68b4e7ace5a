"""Reading pictures for the CLI: any file Pillow reads -> RGB uint8 (3, H, W), with clear errors."""
from __future__ import annotations

import glob
import os
from typing import Iterable, List, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageReadError", "read_image", "expand_inputs", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MAX_PIXELS = 400_000_000   # above this Pillow's decompression-bomb guard is a real risk of memory exhaustion


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


def read_image(path: str, max_side: int = 0) -> Tensor:
    """Read a picture as RGB uint8 (3, H, W).

    Grey-scale, palette and CMYK images are converted; RGBA / LA are composited on white;
    16-bit and 32-bit integer images are scaled to 8 bits by their full range. With
    ``max_side`` > 0 a huge image is reduced while decoding so that its longer side is at
    most about ``max_side`` (never below it), keeping memory bounded.

    Raises:
        ImageReadError: the file is missing, empty, not an image, truncated or too large.
    """
    from PIL import Image, UnidentifiedImageError
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: empty file")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as im:
            if max_side and max(im.size) > 2 * max_side:
                im.draft("RGB", (max_side, max_side))               # JPEG: decode at reduced scale
                factor = max(1, max(im.size) // max_side)
                if factor > 1:
                    im = im.reduce(factor)
            im.load()
            arr = _to_rgb_array(im)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot decode ({e})") from None
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


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
