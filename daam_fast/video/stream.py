"""The explain loop: frames from the reader thread through :class:`daam_fast.DAAM`, in order, with the EMA."""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .info import probe_video
from .options import VideoOptions
from .reader import _End, _Failed, _Frames
from .._threads import Ahead

Batch = Tuple[int, Tensor, Tensor, Tensor, List[int], List[Optional[float]]]


def _ema(maps: Tensor, state: Optional[Tensor], s: float) -> Tuple[Tensor, Optional[Tensor]]:
    """EMA over the frame axis of (B, L, h, w) maps, continuing from ``state`` (L, h, w)."""
    if s <= 0:
        return maps, state
    out = torch.empty_like(maps)
    for i in range(maps.shape[0]):
        state = maps[i] if state is None else (1 - s) * maps[i] + s * state
        out[i] = state
    return out, state


def _stream(src: str, model: nn.Module, opt: VideoOptions, bank, progress: bool,
            daam_options: Optional[dict] = None) -> Iterator[Batch]:
    """Yield ``(start, rgb, maps, targets, corrupt, times)`` per batch, in order, the frames decoded
    ``opt.queue_size`` batches ahead in a reader thread.

    ``rgb`` (B, 3, H, W) uint8 on the CPU (on the GPU with a CUDA model); ``maps`` (B, L, h, w)
    float32 (smoothed) on the model's device; ``targets`` (B,); ``corrupt``: indices of the frames
    the decoder flagged; ``times``: each frame's presentation time in seconds (None where the
    container gives none).
    """
    from tqdm import tqdm
    from ..explainer import DAAM
    from ..preprocess import input_spec
    from ..targets import BankTarget

    info = probe_video(src)
    device = next(model.parameters()).device
    daam = DAAM(model, method=opt.method, **(daam_options or {}))
    frames = _Frames(src, input_spec(model), opt.batch_size, opt.corrupt, device=device)
    bar = tqdm(total=info.frames or None, desc=os.path.basename(src), unit="frame", disable=not progress,
               dynamic_ncols=True)
    state: Optional[Tensor] = None
    batches = Ahead(frames.items(), "daam-video-reader", depth=opt.queue_size)
    try:
        with daam:
            for item in batches:
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failed):
                    raise item.error
                start, rgb, x, flagged, times = item
                res = daam(x.to(device, non_blocking=True), target=opt.target if bank is None else BankTarget(bank))
                maps, state = _ema(res.maps.detach(), state, opt.smoothing)
                bar.update(rgb.shape[0])
                yield start, rgb, maps, res.targets, flagged, times
        raise RuntimeError("the video reader stopped without a result")
    finally:
        batches.close()
        bar.close()


def _default_model(model: Optional[nn.Module]) -> nn.Module:
    if model is None:
        from ..zoo import load_model
        return load_model("shapes_vit")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module (a ViT, see daam_fast.DAAM) or None for the shipped model, "
                         f"got {type(model).__name__}")
    return model
