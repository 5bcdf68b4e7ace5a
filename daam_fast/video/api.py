"""Orchestration: :func:`explain_video` (decode -> explain -> render -> encode) and :func:`iter_video_maps`."""
from __future__ import annotations

import dataclasses
import math
import os
import queue
import time
from fractions import Fraction
from typing import Iterator, List, Optional, Tuple

import numpy as np
from torch import Tensor, nn

from .compose import _Composer, _resolve_blocks
from .info import VideoSummary, probe_video
from .options import OUTPUT_EXTENSIONS, VideoOptions
from .stream import _default_model, _stream
from .writer import _Writer
from ..outputs.encode import video_codec
from ..outputs.store import MapStore

__all__ = ["explain_video", "iter_video_maps"]


def iter_video_maps(src: str, model: Optional[nn.Module] = None, options: Optional[VideoOptions] = None, *,
                    bank=None, progress: bool = False, daam_options: Optional[dict] = None,
                    **fields) -> Iterator[Tuple[int, Tensor]]:
    """Explain every frame of a video and yield its maps, for users who only want tensors.

    A reader thread decodes and preprocesses ``queue_size`` batches ahead; the model runs in
    the caller's thread, ``batch_size`` frames at a time. Breaking out of the loop stops the
    reader.

    Args:
        src: a video file PyAV can read.
        model: a ViT that :class:`daam_fast.DAAM` explains (eval mode); None loads the shipped
            ``shapes_vit``. Frames are resized and normalised per
            :func:`daam_fast.preprocess.input_spec` of the model.
        options: :class:`VideoOptions` (method, batch_size, target, smoothing, queue_size,
            corrupt are used); ``**fields`` override its fields by name.
        bank: a :class:`daam_fast.MemoryBank` for a model without a head.
        progress: show a tqdm bar (frames, frames/s, ETA).
        daam_options: extra :class:`daam_fast.DAAM` keywords (``compile``, ``backend``, ...).

    Yields:
        (frame_index, maps): maps (L, h, w) float32, the accumulated maps D_1 .. D_L of the
        frame (smoothed if asked), on the model's device.

    Raises:
        VideoDecodeError: the video cannot be decoded from some frame on (raised after the
            frames before it were yielded).
    """
    opt = dataclasses.replace(options or VideoOptions(), **fields)
    opt.check_stream()                                     # eagerly, not at the first next()
    model = _default_model(model)

    def frames() -> Iterator[Tuple[int, Tensor]]:
        for start, _rgb, maps, _t, _c, _s in _stream(src, model, opt, bank, progress, daam_options):
            for i in range(maps.shape[0]):
                yield start + i, maps[i]

    return frames()


def explain_video(src: str, dst: str, model: Optional[nn.Module] = None, options: Optional[VideoOptions] = None,
                  *, bank=None, maps_out: Optional[str] = None, progress: bool = True,
                  daam_options: Optional[dict] = None, **fields) -> VideoSummary:
    """Explain every frame of ``src`` and write the overlays to ``dst`` (MP4, same frame rate and size).

    Pipeline: decode (PyAV) -> batch -> preprocess per the model's input spec -> explain ->
    render (:func:`daam_fast.render`) -> encode. A reader thread decodes ``queue_size``
    batches ahead of the model and one writer thread renders and encodes behind it (at most
    ``queue_size`` batches wait for it); nothing changes the process's thread count.

    Args:
        src: input video (any container / codec PyAV decodes).
        dst: output video, ``.mp4`` (or .m4v / .mov / .mkv); H.264 (libx264) or MPEG-4 part 2,
            with the input's sound (``audio``).
        model: a ViT that :class:`daam_fast.DAAM` explains, in eval mode; None: the shipped ``shapes_vit``.
        options: :class:`VideoOptions` (block, layout, scale, mode, batch_size, target,
            smoothing, codec, crf, preset, audio, boxes, ...); ``**fields`` override its fields
            by name. With layout "single" and the default scale, the output has exactly the
            input's size (an odd side is padded by one pixel, as yuv420p needs even sizes).
        bank: a :class:`daam_fast.MemoryBank` for a model without a head.
        maps_out: also write the maps into this folder, the layout of every run
            (:func:`daam_fast.outputs.load_maps`): ``maps.npy`` (T, L, h, w) in ``maps_dtype``,
            ``targets.npy`` (T,), ``time.npy`` (T,) seconds from the first frame, and
            ``index.json`` (fps, method, smoothing, grid, size).
        progress: tqdm bar with frames, frames/s and ETA.
        daam_options: extra :class:`daam_fast.DAAM` keywords (``compile``, ``backend``, ...).

    Returns:
        :class:`VideoSummary`.

    Raises:
        VideoDecodeError: ``src`` is unreadable from some frame on; the frames before it were
            explained and ``dst`` is a complete, playable MP4 holding exactly them (no file is
            written when frame 0 already fails).
        ValueError: a bad argument (the message says which and why).

    Example:
        >>> s = explain_video("in.mp4", "overlay.mp4", block="all", smoothing=0.5, maps_out="maps")
        >>> s.frames, s.frames_per_second
    """
    opt = dataclasses.replace(options or VideoOptions(), **fields)
    opt.check()
    if not str(dst).lower().endswith(OUTPUT_EXTENSIONS):
        raise ValueError(f"dst={dst!r}: the output must be one of {', '.join(OUTPUT_EXTENSIONS)}")
    if os.path.exists(src) and os.path.exists(dst) and os.path.samefile(src, dst):
        raise ValueError(f"dst={dst!r} is the input video itself")
    if maps_out is not None and (str(maps_out).lower().endswith((".npz", ".zarr")) or os.path.isfile(maps_out)):
        raise ValueError(f"maps_out={maps_out!r}: the maps go into a folder (index.json and one .npy per "
                         "quantity, as every run writes them)")
    model = _default_model(model)
    from ..adapters import get_adapter
    depth = get_adapter(model).depth
    blocks, single = _resolve_blocks(opt.block, depth)
    layout = opt.layout
    if layout == "auto":
        layout = "single" if single else ("grid" if opt.block == "all" else "row")
    if layout == "single" and len(blocks) != 1:
        raise ValueError(f"layout='single' shows one block, got {len(blocks)} ({blocks})")
    codec_name = video_codec(opt.codec)
    info = probe_video(src)
    fps = info.fps or Fraction(25)
    scale = opt.scale
    if scale is None:
        scale = 1.0 / math.ceil(math.sqrt(len(blocks))) if layout == "grid" else 1.0
    compose = _Composer(blocks, depth, layout, float(scale), opt.mode, info.height, info.width, boxes=opt.boxes)
    store = None
    if maps_out is not None:
        store = MapStore(maps_out, method=opt.method,
                         meta={"fps": float(fps), "smoothing": float(opt.smoothing), "size": [info.height, info.width]})
    wq: "queue.Queue" = queue.Queue(maxsize=opt.queue_size)
    writer = _Writer(dst, fps, codec_name, opt.crf, opt.preset, compose, store, np.dtype(opt.maps_dtype), wq,
                     audio_src=src if (opt.audio and info.audio) else None, threads=opt.encoder_threads)
    t0 = time.perf_counter()
    corrupt_frames: List[int] = []
    batches = None
    writer.start()
    try:
        batches = _stream(src, model, opt, bank, progress, daam_options)
        for start, rgb, maps, targets, flagged, times in batches:
            if writer.failed.is_set():
                break
            if store is not None:
                store.meta.setdefault("grid", list(maps.shape[-2:]))
            corrupt_frames += flagged
            wq.put((start, rgb, maps, targets, times))
    finally:
        if batches is not None:
            batches.close()                       # stops the reader now (an error or an early end)
        wq.put(None)
        writer.join()
        if store is not None:
            store.close()
    if writer.error is not None:
        raise RuntimeError(f"writing {dst} failed after {writer.frames} frames: "
                           f"{type(writer.error).__name__}: {writer.error}") from writer.error
    sound = writer.audio_note or ("left out (audio=False)" if info.audio and not opt.audio else "none in the input")
    return VideoSummary(frames=writer.frames, seconds=time.perf_counter() - t0, fps=fps, size=compose.size,
                        out=dst, maps_out=maps_out, codec=codec_name, corrupt_frames=corrupt_frames, audio=sound)
