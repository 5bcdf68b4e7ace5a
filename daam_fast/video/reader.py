"""The reader: decode with PyAV, batch, preprocess; iterated one batch ahead of the model in a
thread of its own (:class:`daam_fast._threads.Ahead`)."""
from __future__ import annotations

from typing import Iterator, List, Optional

import numpy as np
import torch

from .info import VideoDecodeError, probe_video
from ..outputs.encode import import_av


class _End:
    def __init__(self, frames: int):
        self.frames = frames


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class _Frames:
    """Decode ``src`` into batches ``(start, rgb, x, corrupt, times)``: rgb (B, 3, H, W) uint8, x
    (B, 3, h, w) the model input, corrupt the flagged frame indices, times the frames'
    presentation times in seconds (None where unknown); then :class:`_End` or :class:`_Failed`."""

    def __init__(self, src: str, spec, batch_size: int, corrupt: str, device=None):
        self.src, self.spec, self.batch_size, self.corrupt = src, spec, batch_size, corrupt
        # on a GPU, the uint8 frames are copied once and prepared there; the writer renders from the same copy
        self.gpu = torch.device(device) if device is not None and torch.device(device).type == "cuda" else None

    def _batch(self, start: int, pics: List[np.ndarray], flagged: List[int], times: List[Optional[float]]):
        from ..preprocess import prepare
        rgb = torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2)          # (B, 3, H, W) uint8
        if self.gpu is not None:
            rgb = rgb.pin_memory().to(self.gpu, non_blocking=True)
        x, _ = prepare(rgb, self.spec)
        return start, rgb, x, flagged, list(times)

    def items(self) -> Iterator[object]:
        """The batches, then :class:`_End` or :class:`_Failed` (after the batch of the frames decoded
        before a decoding error)."""
        av = import_av()
        from av.video.reformatter import VideoReformatter
        # one reformatter for the whole stream keeps its swscale context: to_ndarray() makes a new
        # one per frame (256 x 256: 0.35 -> 0.09 ms a frame, 1080p 2.05 -> 1.78; the same pixels)
        to_rgb = VideoReformatter()
        n = 0
        pics: List[np.ndarray] = []
        flagged: List[int] = []
        times: List[Optional[float]] = []                # presentation time of each frame, seconds
        try:
            info = probe_video(self.src)
            turns = info.rotation // 90
            try:
                with av.open(self.src) as c:
                    stream = c.streams.video[0]
                    # slice threads only (PyAV's default): frame threads decode 1080p in 2.8 ms instead
                    # of 3.2, but then FFmpeg drops its corrupt flag on a concealed frame in about 40 %
                    # of runs, and such a frame would be explained silently (benchmarks/NOTES.md)
                    stream.thread_type = "SLICE"
                    for frame in c.decode(stream):
                        if getattr(frame, "is_corrupt", False):
                            if self.corrupt == "error":
                                raise VideoDecodeError(self.src, n, "the decoder flagged the frame as corrupt "
                                                                    "(pass corrupt='keep' / --keep-corrupt to keep such frames)")
                            flagged.append(n)
                        pic = to_rgb.reformat(frame, format="rgb24").to_ndarray()
                        if turns:                           # upright, as players show it
                            pic = np.ascontiguousarray(np.rot90(pic, turns))
                        pics.append(pic)
                        times.append(float(frame.pts * frame.time_base)
                                     if frame.pts is not None and frame.time_base else None)
                        n += 1
                        if len(pics) == self.batch_size:
                            yield self._batch(n - len(pics), pics, flagged, times)
                            pics, flagged, times = [], [], []
            except av.FFmpegError as e:
                raise VideoDecodeError(self.src, n, str(e)) from None
            except VideoDecodeError:
                raise
            if info.frames and n < info.frames:
                raise VideoDecodeError(self.src, n, f"the stream ended after {n} of the {info.frames} frames its "
                                                    "header declares: the file is truncated")
            if n == 0:
                raise VideoDecodeError(self.src, 0, "the video stream holds no decodable frame")
            if pics:
                yield self._batch(n - len(pics), pics, flagged, times)
            yield _End(n)
        except GeneratorExit:
            raise
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, re-raised there
            if isinstance(e, VideoDecodeError) and n and pics:
                yield self._batch(n - len(pics), pics, flagged, times)
            yield _Failed(e)
