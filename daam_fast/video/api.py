"""Orchestration: :func:`explain_video` (decode -> explain -> render -> encode) and :func:`iter_video_maps`."""
from __future__ import annotations

import math
import os
import queue
import time
from fractions import Fraction
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .codec import _pick_codec
from .compose import BlockSpec, _Composer, _resolve_blocks
from .info import VideoSummary, probe_video
from .maps import _maps_writer
from .options import DEFAULTS as _D
from .options import OUTPUT_EXTENSIONS, VideoOptions
from .stream import _default_model, _stream
from .writer import _Writer
from .._threads import TurnSwitch, free_core

__all__ = ["explain_video", "iter_video_maps"]


def iter_video_maps(src: str, model: Optional[nn.Module] = None, *, method: str = _D.method,
                    batch_size: int = _D.batch_size, target: Optional[int] = _D.target, bank=None,
                    smoothing: float = _D.smoothing, queue_size: int = _D.queue_size, corrupt: str = _D.corrupt,
                    progress: bool = False, daam_options: Optional[dict] = None,
                    overlap: Optional[bool] = _D.overlap) -> Iterator[Tuple[int, Tensor]]:
    """Explain every frame of a video and yield its maps, for users who only want tensors.

    Decoding and preprocessing run in a background thread (bounded queue) where a core is free
    for it (``overlap``, as :func:`explain_video`), else in turns in the caller's thread; the
    model runs in the caller's thread, ``batch_size`` frames at a time. Breaking out of the loop
    stops the reader.

    Args:
        src: a video file PyAV can read.
        model: a ViT that :class:`daam_fast.DAAM` explains (eval mode); None loads the shipped ``shapes_vit``. Frames are resized
            and normalised per :func:`daam_fast.preprocess.input_spec` of the model.
        method: a DAAM method ("grad", exact; "direct", forward only; ...), as :class:`daam_fast.DAAM`.
        batch_size: frames per model call.
        target: None (each frame's own prediction) or one class index for every frame.
        bank: a :class:`daam_fast.MemoryBank` for a model without a head.
        smoothing: EMA weight of the past frames in [0, 1), 0 = off (package docstring).
        queue_size: batches decoded ahead at most.
        corrupt: "error" (default): a frame the decoder flags as corrupt raises; "keep": explain it.
        progress: show a tqdm bar (frames, frames/s, ETA).
        daam_options: extra :class:`daam_fast.DAAM` keywords (``activation_checkpointing``, ``compile``).
        overlap: decode in a reader thread; None: where a core is free for it.

    Yields:
        (frame_index, maps): maps (L, h, w) float32, the accumulated maps D_1 .. D_L of the
        frame (smoothed if asked), on the model's device.

    Raises:
        VideoDecodeError: the video cannot be decoded from some frame on (raised after the
            frames before it were yielded).
    """
    VideoOptions(method=method, batch_size=batch_size, target=target, smoothing=smoothing, queue_size=queue_size,
                 corrupt=corrupt, overlap=overlap).check_stream()     # eagerly, not at the first next()
    model = _default_model(model)

    def frames() -> Iterator[Tuple[int, Tensor]]:
        for start, _rgb, maps, _t, _c, _s in _stream(src, model, method, batch_size, target, bank, smoothing,
                                                  queue_size, corrupt, progress, daam_options, overlap):
            for i in range(maps.shape[0]):
                yield start + i, maps[i]

    return frames()



def explain_video(src: str, dst: str, model: Optional[nn.Module] = None, *, method: str = _D.method,
                  block: BlockSpec = _D.block, layout: str = _D.layout, scale: Optional[float] = _D.scale,
                  mode: str = _D.mode, batch_size: int = _D.batch_size, target: Optional[int] = _D.target,
                  bank=None, smoothing: float = _D.smoothing, maps_out: Optional[str] = None,
                  maps_dtype=_D.maps_dtype, codec: str = _D.codec, crf: int = _D.crf, preset: str = _D.preset,
                  queue_size: int = _D.queue_size, corrupt: str = _D.corrupt, progress: bool = True,
                  daam_options: Optional[dict] = None, audio: bool = _D.audio,
                  encoder_threads: int = _D.encoder_threads, boxes: Optional[float] = _D.boxes,
                  overlap: Optional[bool] = _D.overlap) -> VideoSummary:
    """Explain every frame of ``src`` and write the overlays to ``dst`` (MP4, same frame rate and size).

    Pipeline: decode (PyAV) -> batch -> preprocess per the model's input spec -> explain ->
    render (:func:`daam_fast.render`) -> encode. With ``overlap``, decoding and encoding run in
    their own threads, the queues between the stages holding at most ``queue_size`` batches;
    without, the stages take turns in the caller's thread.

    Args:
        src: input video (any container / codec PyAV decodes).
        dst: output video, ``.mp4`` (or .m4v / .mov / .mkv); H.264 (libx264) or MPEG-4 part 2,
            with the input's sound (see ``audio``).
        model: a ViT that :class:`daam_fast.DAAM` explains, in eval mode; None: the shipped ``shapes_vit``.
        method: a DAAM method: "grad" (exact), "direct" (forward-only approximation), ...
            (the explainer's method table).
        block: which accumulated map(s) D_b to show, 0-based, negative from the end: an int
            (default -1: the final map D_L), a list of ints, or "all" (the attention flow).
        layout: "auto" (an int -> "single", a list -> "row", "all" -> "grid"), "single" (one
            block only), "row" (side by side) or "grid" (tiled, about square).
        scale: size of each panel relative to the input frame. Default: 1 for "single" and
            "row", 1 / columns for "grid" (the grid is then as wide as the input). With
            "single" and the default, the output has exactly the input's size (an odd side is
            padded by one pixel, as yuv420p needs even sizes).
        mode: rendering, "nonlinear" (default), "linear" or "raw" (:func:`daam_fast.render`).
        batch_size: frames per model call.
        target: None (each frame's prediction) or one class index for every frame.
        bank: a :class:`daam_fast.MemoryBank` for a model without a head.
        smoothing: EMA weight of the past frames in [0, 1), 0 = off (package docstring).
        maps_out: also write the maps: ``.npz`` (compressed; ``maps`` (T, L, h, w), ``targets``
            (T,), ``frame_index`` (T,), ``time`` (T,) seconds from the first frame, ``fps``,
            ``method``, ``smoothing``, ``grid``) or ``.zarr``
            (same arrays, metadata as attributes; needs zarr installed).
        maps_dtype: dtype of the stored maps (float32 default, float16 halves the file).
        codec: "auto" (libx264, else mpeg4), "libx264", "mpeg4", or "h264_nvenc" (NVIDIA's
            hardware encoder: needs an NVIDIA GPU and driver; the PyAV wheels' FFmpeg has it).
        crf: quality, 0 (best) .. 51 (libx264's constant rate factor; mapped to MPEG-4's quantiser).
        preset: libx264 speed preset ("ultrafast" .. "veryslow"; for h264_nvenc mapped onto p1 .. p7).
            "ultrafast" by default: per 1080p frame about 21 ms of CPU against 71 for "veryfast"
            (30 ms vs 9 at 720p), for files about 1.7 x larger at the same crf (benchmarks/NOTES.md).
        encoder_threads: encoder threads; 0 (default): FFmpeg's choice.
        boxes: None (default), or draw on each panel the box of its map's salient region, this
            fraction of the map's maximum as the threshold (:func:`daam_fast.boxes.boxes_from_maps`).
        queue_size: batches in flight between the stages, at most.
        overlap: run the reader and the writer in their own threads. None (default): where they
            have a core of their own (the model runs on a GPU or uses fewer threads than the
            cores), else take turns with the model in the caller's thread: on a CPU whose cores
            all run the model, a third busy thread stalls it (1080p: 0.77 -> 0.82 of explain-only;
            benchmarks/NOTES.md). Taking turns with more than one model thread, the next batch is
            decoded in a helper thread while this one is drawn and encoded, never while the model
            runs (256 x 256 with the shipped model: 1.16 -> 1.02 s for 400 frames).
        corrupt: "error" (default): a frame the decoder flags as corrupt stops the run like a
            decoding error; "keep": explain it anyway (listed in the summary).
        progress: tqdm bar with frames, frames/s and ETA.
        daam_options: extra :class:`daam_fast.DAAM` keywords (``activation_checkpointing``, ``compile``).
        audio: keep the input's first audio stream (default): copied when MP4 can hold its
            codec, else re-encoded to AAC; aligned to the first video frame and cut at the
            last written one. ``VideoSummary.audio`` says what happened.

    Returns:
        :class:`VideoSummary`.

    Raises:
        VideoDecodeError: ``src`` is unreadable from some frame on; the frames before it were
            explained and ``dst`` is a complete, playable MP4 holding exactly them (no file is
            written when frame 0 already fails).
        ValueError: a bad argument (the message says which and why).

    Example:
        >>> s = explain_video("in.mp4", "flow.mp4", block="all", smoothing=0.5, maps_out="maps.npz")
        >>> s.frames, s.frames_per_second
    """
    VideoOptions(method=method, block=block, layout=layout, scale=scale, mode=mode, batch_size=batch_size,
                 target=target, smoothing=smoothing, maps_dtype=maps_dtype, codec=codec, crf=crf, preset=preset,
                 queue_size=queue_size, corrupt=corrupt, audio=audio, encoder_threads=encoder_threads, boxes=boxes,
                 overlap=overlap).check()
    if not str(dst).lower().endswith(OUTPUT_EXTENSIONS):
        raise ValueError(f"dst={dst!r}: the output must be one of {', '.join(OUTPUT_EXTENSIONS)}")
    if os.path.exists(src) and os.path.exists(dst) and os.path.samefile(src, dst):
        raise ValueError(f"dst={dst!r} is the input video itself")
    model = _default_model(model)
    from ..adapters import get_adapter
    depth = get_adapter(model).depth
    blocks, single = _resolve_blocks(block, depth)
    if layout == "auto":
        layout = "single" if single else ("grid" if block == "all" else "row")
    if layout == "single" and len(blocks) != 1:
        raise ValueError(f"layout='single' shows one block, got {len(blocks)} ({blocks})")
    codec_name = _pick_codec(codec)
    info = probe_video(src)
    fps = info.fps or Fraction(25)
    if scale is None:
        scale = 1.0 / math.ceil(math.sqrt(len(blocks))) if layout == "grid" else 1.0
    compose = _Composer(blocks, depth, layout, float(scale), mode, info.height, info.width, boxes=boxes)
    maps_file = _maps_writer(maps_out, maps_dtype)
    wq: "queue.Queue" = queue.Queue(maxsize=queue_size)
    writer = _Writer(dst, fps, codec_name, crf, preset, compose, maps_file, wq,
                     audio_src=src if (audio and info.audio) else None, threads=encoder_threads)
    device = next(model.parameters()).device
    auto = overlap is None
    if overlap is None:
        overlap = free_core(device)
    threads = torch.get_num_threads()
    # taking turns by choice: a video whose frames cost more to draw and encode than a model thread
    # fewer costs switches to one model thread fewer and the writer in its own thread (TurnSwitch)
    frames_hint = info.frames or 0
    switch = TurnSwitch(auto and not overlap and device.type == "cpu"
                        and frames_hint > (TurnSwitch.AFTER + TurnSwitch.PROBES + 1) * batch_size, threads)
    t0 = time.perf_counter()
    corrupt_frames: List[int] = []
    grid = None
    threaded = overlap
    batches = None
    if overlap:
        writer.start()
    try:
        batches = _stream(src, model, method, batch_size, target, bank, smoothing, queue_size, corrupt, progress,
                          daam_options, overlap, switch)
        while True:
            t_model = time.perf_counter()
            item = next(batches, None)
            if item is None:
                break
            start, rgb, maps, targets, flagged, times = item
            if writer.failed.is_set():
                break
            grid = tuple(maps.shape[-2:])
            corrupt_frames += flagged
            if threaded:
                wq.put((rgb, maps, targets, times))
            else:
                t_write = time.perf_counter()
                writer.write((rgb, maps, targets, times))
                if switch.measure(t_write - t_model, time.perf_counter() - t_write):
                    writer.start()                # from now on the writer runs beside the model
                    threaded = True
    finally:
        if batches is not None:
            batches.close()                       # stops the reader now (an error or an early end)
        if threaded:
            wq.put(None)
            writer.join()
        else:
            writer.finish()
        torch.set_num_threads(threads)
        if maps_file is not None:
            maps_file.close(dict(fps=np.float64(float(fps)), method=np.str_(method),
                                 smoothing=np.float64(smoothing), grid=np.array(grid or (0, 0)),
                                 size=np.array([info.height, info.width]),
                                 time=np.array(writer.frame_times, dtype=np.float64)))
    if writer.error is not None:
        raise RuntimeError(f"writing {dst} failed after {writer.frames} frames: "
                           f"{type(writer.error).__name__}: {writer.error}") from writer.error
    sound = writer.audio_note or ("left out (audio=False)" if info.audio and not audio else "none in the input")
    return VideoSummary(frames=writer.frames, seconds=time.perf_counter() - t0, fps=fps, size=compose.size,
                        out=dst, maps_out=maps_out, codec=codec_name, corrupt_frames=corrupt_frames, audio=sound)
