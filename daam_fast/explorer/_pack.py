"""Checking and packing a run for the explorer page: maps as scaled float16, images as base64.

The page carries, per method and per row, the accumulated maps D_b, the per-block maps L_b
and (when given) the per-head terms, each divided by its row's largest magnitude and stored
as little-endian float16 (relative error <= 2^-11 of that magnitude). Every rendering mode
of docs/method.md §5 is invariant to scaling one image's maps by a positive constant, so the
page multiplies the scale back only for the value under the pointer.
"""
from __future__ import annotations

import base64
import io
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..result import DAAMResult

ImagesLike = Union[None, Tensor, np.ndarray, Sequence[Any]]

METHOD_LABELS = {
    "grad": "DAAM (grad)", "direct": "DAAM (direct)", "row": "DAAM (row)", "reference": "DAAM (reference)",
    "rollout": "rollout", "grad_rollout": "gradient rollout", "attention": "last-block attention",
    "gradcam": "Grad-CAM", "random": "random",
}


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _f16(x: Tensor) -> Tuple[str, List[float]]:
    """(B, ...) float32 -> (base64 of little-endian float16 of x / s, scales s (B,) as float32 values)."""
    x = x.detach().float().cpu()
    s = x.flatten(1).abs().amax(1)
    s = torch.where(s > 0, s, torch.ones_like(s))
    q = (x / s.view(-1, *([1] * (x.dim() - 1)))).numpy().astype("<f2")
    return _b64(q), [float(v) for v in s.numpy().astype(np.float32)]


def decode_f16(data: str, scales: Sequence[float], shape: Sequence[int]) -> Tensor:
    """The page's decoding of one packed array: float32 (B, ...) = float16 value * row scale."""
    q = np.frombuffer(base64.b64decode(data), dtype="<f2").astype(np.float32).reshape(tuple(shape))
    s = torch.tensor(np.asarray(scales, dtype=np.float32))
    return torch.from_numpy(q.copy()) * s.view(-1, *([1] * (len(shape) - 1)))


def check_result(res: Any, name: str) -> None:
    """Raise ValueError unless ``res`` is a DAAMResult with consistent shapes and finite maps."""
    if not isinstance(res, DAAMResult):
        raise TypeError(f"{name}: expected a DAAMResult, got {type(res).__name__}")
    if res.maps.dim() != 4 or tuple(res.block_maps.shape) != tuple(res.maps.shape):
        raise ValueError(f"{name}: maps and block_maps must both be (B, L, h, w); got "
                         f"{tuple(res.maps.shape)} and {tuple(res.block_maps.shape)}")
    B, L, h, w = res.maps.shape
    if B == 0 or L == 0 or h == 0 or w == 0:
        raise ValueError(f"{name}: empty maps {tuple(res.maps.shape)}")
    if res.head_maps is not None:
        hm = res.head_maps
        if hm.dim() != 5 or (hm.shape[0], hm.shape[1], hm.shape[3], hm.shape[4]) != (B, L, h, w):
            raise ValueError(f"{name}: head_maps must be (B, L, H, h, w) = ({B}, {L}, H, {h}, {w}), "
                             f"got {tuple(hm.shape)}")
    if res.topk < 1 or B % res.topk:
        raise ValueError(f"{name}: {B} rows are not a whole number of images of topk={res.topk} rows")
    if res.targets is None or res.targets.numel() != B:
        raise ValueError(f"{name}: targets must hold one class per row ({B}), got "
                         f"{None if res.targets is None else tuple(res.targets.shape)}")
    for field in ("maps", "block_maps", "head_maps"):
        t = getattr(res, field)
        if t is not None and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: {field} holds NaN or inf; the page would show a wrong map")


def pack_method(key: str, res: DAAMResult) -> Dict[str, Any]:
    """The JSON record of one method: grid, sizes, packed maps, classes and probabilities."""
    B, L, h, w = res.maps.shape
    rec: Dict[str, Any] = {"key": key, "label": METHOD_LABELS.get(key, key), "method": res.method,
                           "grid": [int(h), int(w)], "L": int(L), "H": 0}
    rec["maps"], rec["maps_scale"] = _f16(res.maps)
    rec["block"], rec["block_scale"] = _f16(res.block_maps)
    if res.head_maps is not None:
        rec["H"] = int(res.head_maps.shape[2])
        rec["heads"], rec["heads_scale"] = _f16(res.head_maps)
    rec["targets"] = [int(t) for t in res.targets.detach().cpu().reshape(-1).tolist()]
    rec["probs"] = None
    if res.logits is not None and res.logits.dim() == 2 and res.logits.shape[0] == B:
        p = res.logits.detach().float().cpu().softmax(-1)
        rec["probs"] = [float(p[i, t]) if 0 <= t < p.shape[1] else None for i, t in enumerate(rec["targets"])]
    return rec


def _to_hwc_uint8(img: Any, i: int) -> np.ndarray:
    """One picture -> (H, W, 3) uint8; float pictures must lie in [0, 1]."""
    try:
        from PIL import Image
        if isinstance(img, Image.Image):
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ImportError:  # pragma: no cover - pillow is a dependency
        pass
    if isinstance(img, Tensor):                                  # tensors are channels-first, as in render
        a = img.detach().cpu().numpy()
        if a.ndim == 3:
            a = np.moveaxis(a, 0, -1)
    else:                                                        # arrays: (H, W, 3), or (3, H, W)
        a = np.asarray(img)
        if a.ndim == 3 and a.shape[-1] not in (1, 3) and a.shape[0] in (1, 3):
            a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"image {i}: expected (3, H, W) or (H, W, 3) RGB, got shape {tuple(a.shape)}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    a = a.astype(np.float32)
    if not np.isfinite(a).all() or a.min() < -1e-6 or a.max() > 1 + 1e-6:
        raise ValueError(f"image {i}: float pictures must be RGB in [0, 1] (got [{a.min():.3g}, {a.max():.3g}]); "
                         "pass the picture, not the normalised model input")
    return np.ascontiguousarray(np.floor(a.clip(0, 1) * 255 + 0.5).astype(np.uint8))


def split_images(images: ImagesLike, n: int) -> Optional[List[np.ndarray]]:
    """``images`` (N, 3, H, W) tensor, (N, H, W, 3) array or a list of pictures -> N (H, W, 3) uint8."""
    if images is None:
        return None
    if isinstance(images, (Tensor, np.ndarray)):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, 3, H, W) or (N, H, W, 3), got shape {tuple(images.shape)}")
        items = [images[i] for i in range(images.shape[0])]
    else:
        items = list(images)
    if len(items) != n:
        raise ValueError(f"got {len(items)} images for {n} explained images (rows / topk); "
                         "pass one picture per image")
    return [_to_hwc_uint8(im, i) for i, im in enumerate(items)]


def encode_image(a: np.ndarray, fmt: str, quality: int, max_side: int) -> Tuple[str, int, int]:
    """(H, W, 3) uint8 -> (data URL, width, height), shrunk (bicubic) so its longer side <= max_side."""
    from PIL import Image
    im = Image.fromarray(a, "RGB")
    if max(im.size) > max_side:
        r = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * r)), max(1, round(im.height * r))), Image.BICUBIC)
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        im.save(buf, format="JPEG", quality=int(quality), subsampling=0 if quality >= 95 else 2)
        mime = "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii"), im.width, im.height


def heat_size(grid: Tuple[int, int], side: int) -> Tuple[int, int]:
    """(W, H) of the canvas without images: the grid scaled so its longer side is ``side``."""
    h, w = grid
    r = side / max(h, w)
    return max(1, int(round(w * r))), max(1, int(round(h * r)))


def colour_tables() -> Dict[str, str]:
    """256-entry uint8 RGB tables (base64) of viridis and inferno (:mod:`daam_fast._colour_tables`)."""
    from .._colour_tables import COLOUR_TABLES
    return dict(COLOUR_TABLES)


def class_name(class_names: Optional[Union[Sequence[str], Mapping[int, str]]], t: int) -> str:
    if t < 0:
        return "label-free" if t == -1 else str(t)
    if class_names is None:
        return f"class {t}"
    try:
        return str(class_names[t])
    except (IndexError, KeyError):
        return f"class {t}"


def finite_or_none(x: Optional[float]) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else x
