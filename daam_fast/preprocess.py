"""Turning pictures into model inputs, batched torch ops (shared by the CLI, video and eval)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["InputSpec", "input_spec", "prepare", "normalise"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: input size (H, W), mean and std (RGB, for [0, 1] inputs)."""

    size: Tuple[int, int]
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"


def input_spec(model: nn.Module) -> InputSpec:
    """Read the input size / mean / std from a timm model's pretrained config (or defaults)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {})
    size = cfg.get("input_size")
    if size is None:
        pe = getattr(model, "patch_embed", None)
        img = getattr(pe, "img_size", None) if pe is not None else None
        size = (3, *img) if img is not None else (3, 224, 224)
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    interp = cfg.get("interpolation", "bicubic")
    if interp not in ("bilinear", "bicubic", "nearest"):
        interp = "bicubic"
    return InputSpec(size=(int(size[-2]), int(size[-1])), mean=mean, std=std, interpolation=interp)


def normalise(rgb: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(rgb - mean) / std per channel.

    Args:
        rgb: (B, 3, H, W) float in [0, 1], or uint8 (scaled by 1 / 255 first).
        mean, std: 3 values each (RGB).

    Returns:
        (B, 3, H, W) float32 model input.
    """
    x = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def prepare(pictures: Union[Tensor, Sequence[Tensor]], model_or_spec: Union[nn.Module, InputSpec],
            device=None) -> Tuple[Tensor, Tensor]:
    """Resize and normalise RGB pictures for the model.

    The resize is the spec's interpolation with antialiasing (bicubic for timm's ViTs). uint8
    pictures reduced on the CPU are resized in uint8 (rounded, as PIL does in timm's own
    transforms; within one level of the float resize, 19x faster on 1080p frames); other
    pictures in float.

    Args:
        pictures: (B, 3, H, W) or (3, H, W) uint8 or float in [0, 1], or a list of
            (3, H_i, W_i) of any sizes.
        model_or_spec: the model (its size, mean and std are read with :func:`input_spec`)
            or an :class:`InputSpec`.
        device: where to put the result (default: the pictures' device).

    Returns:
        (x, rgb): x (B, 3, h, w) float32 normalised model input at the spec's size, and
        rgb (B, 3, h, w) uint8, the resized pictures (for overlays).

    Example:
        >>> x, rgb = prepare(pictures, model)          # then DAAM(model)(x), render(res.maps, images=rgb)
    """
    if isinstance(model_or_spec, InputSpec):
        spec = model_or_spec
    elif isinstance(model_or_spec, nn.Module):
        spec = input_spec(model_or_spec)
    else:
        raise TypeError(f"prepare: model_or_spec must be a model (nn.Module) or an InputSpec, "
                        f"got {type(model_or_spec).__name__}")
    images = pictures
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = images[None]
        items = list(images)
    else:
        items = list(images)
    outs = []
    for im in items:
        if im.dim() != 3 or im.shape[0] != 3:
            raise ValueError(f"expected RGB pictures (3, H, W), got {tuple(im.shape)}")
        if device is not None:
            im = im.to(device)
        mode = spec.interpolation
        if tuple(im.shape[-2:]) == tuple(spec.size):
            x = im.float() / 255.0 if im.dtype == torch.uint8 else im.float()
        elif (im.dtype == torch.uint8 and im.device.type == "cpu" and mode != "nearest"
              and im.shape[-2] >= spec.size[0] and im.shape[-1] >= spec.size[1]):
            # uint8 pictures reduced on the CPU: torch's vectorised uint8 path (channels-last,
            # fixed-point weights, rounded to uint8 like PIL's resize in timm's transforms): a
            # 1920 x 1080 frame 21 -> 1.1 ms, within one level of the float path (enlarging
            # differs by more: float path; benchmarks/NOTES.md, 2026-11-30)
            r = F.interpolate(im[None].contiguous(memory_format=torch.channels_last), size=spec.size, mode=mode,
                              antialias=True, align_corners=False)
            x = r[0].float() / 255.0
        else:
            x = im.float() / 255.0 if im.dtype == torch.uint8 else im.float()
            kw = {} if mode == "nearest" else {"align_corners": False}
            x = F.interpolate(x[None], size=spec.size, mode=mode, antialias=mode != "nearest", **kw)[0]
        outs.append(x.clamp(0, 1))
    rgb01 = torch.stack(outs)
    return normalise(rgb01, spec.mean, spec.std), (rgb01 * 255).round().to(torch.uint8)
