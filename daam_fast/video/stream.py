"""The explain loop: frames from the reader thread through :class:`daam_fast.DAAM`, in order, with the EMA."""
from __future__ import annotations

import os
import queue
import threading
from typing import Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .info import probe_video
from .reader import _POLL, _End, _Failed, _Reader
from .._threads import Ahead, TurnSwitch, free_core

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


def _stream(src: str, model: nn.Module, method: str, batch_size: int, target: Optional[int], bank,
            smoothing: float, queue_size: int, corrupt: str, progress: bool, daam_options: Optional[dict] = None,
            overlap: Optional[bool] = None, switch: Optional[TurnSwitch] = None) -> Iterator[Batch]:
    """Yield ``(start, rgb, maps, targets, corrupt, times)`` per batch, in order.

    ``rgb`` (B, 3, H, W) uint8 on the CPU (on the GPU with a CUDA model); ``maps`` (B, L, h, w)
    float32 (smoothed) on the model's device; ``targets`` (B,); ``corrupt``: indices of the frames the decoder flagged;
    ``times``: each frame's presentation time in seconds (None where the container gives none).
    ``overlap``: decode in a reader thread (None: where a core is free for it, :func:`free_core`).
    ``switch``: taking turns, the caller's :class:`~daam_fast._threads.TurnSwitch` (its probe sets
    the model's threads; once it is on, the next batch is decoded while the model runs).
    """
    from tqdm import tqdm
    from ..explainer import DAAM
    from ..preprocess import input_spec
    from ..targets import BankTarget

    info = probe_video(src)
    device = next(model.parameters()).device
    if overlap is None:
        overlap = free_core(device)
    q: "queue.Queue" = queue.Queue(maxsize=queue_size)
    stop = threading.Event()
    reader = _Reader(src, input_spec(model), batch_size, q, stop, corrupt, device=device)
    items = reader.items() if not overlap else None
    bar = tqdm(total=info.frames or None, desc=os.path.basename(src), unit="frame", disable=not progress,
               dynamic_ncols=True)
    state: Optional[Tensor] = None
    # taking turns with more than one model thread: the next batch is decoded in a helper thread
    # while the caller draws and encodes this one (the model's other cores are idle then), and
    # never while the model runs
    ahead = Ahead(items, "daam-video-turn", helper=torch.get_num_threads() > 1) if items is not None else None
    if overlap:
        reader.start()
    try:
        with DAAM(model, method=method, **(daam_options or {})) as daam:
            while True:
                if ahead is not None:
                    item = ahead.next()
                    if item is None:                 # the reader always ends with _End or _Failed
                        raise RuntimeError("the video reader stopped without a result")
                else:
                    try:
                        item = q.get(timeout=_POLL)
                    except queue.Empty:
                        if not reader.is_alive() and q.empty():
                            raise RuntimeError("the video reader thread stopped without a result") from None
                        continue
                if isinstance(item, _End):
                    break
                if isinstance(item, _Failed):
                    raise item.error
                if switch is not None:
                    if switch.on and ahead is not None:
                        ahead.request()           # decode beside the model: the writer's core
                    switch.before_model()
                start, rgb, x, flagged, times = item
                res = daam(x.to(device, non_blocking=True), target=BankTarget(bank) if bank is not None else target)
                maps, state = _ema(res.maps.detach(), state, smoothing)
                bar.update(rgb.shape[0])
                if ahead is not None:
                    ahead.request()
                yield start, rgb, maps, res.targets, flagged, times
    finally:
        stop.set()
        bar.close()
        if ahead is not None:
            ahead.close()
        if items is not None:
            items.close()
        else:
            reader.join()


def _default_model(model: Optional[nn.Module]) -> nn.Module:
    if model is None:
        from ..zoo import load_model
        return load_model("shapes_vit")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module (a ViT, see daam_fast.DAAM) or None for the shipped model, "
                         f"got {type(model).__name__}")
    return model
