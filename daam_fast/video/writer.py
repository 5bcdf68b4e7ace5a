"""The writer: render and encode batches into the output MP4, in its own thread behind a bounded
queue (the frames of a video are encoded in order: one thread)."""
from __future__ import annotations

import queue
import threading
from fractions import Fraction
from typing import List, Optional

import numpy as np

from .codec import OUT_TIME_BASE, _Audio, encoder_options
from .compose import _Composer
from ..outputs.encode import import_av


class _Writer(threading.Thread):
    """Renders and encodes batches ``(start, rgb, maps, targets, times)`` from a bounded queue
    until None; writes the maps into ``store`` (a :class:`~daam_fast.outputs.store.MapStore`, or
    None); opens the output on the first batch and closes it at the end."""

    def __init__(self, dst: str, fps: Fraction, codec: str, crf: int, preset: str, compose: _Composer, store,
                 maps_dtype: np.dtype, q: "queue.Queue", audio_src: Optional[str] = None, threads: int = 0):
        super().__init__(name="daam-video-writer", daemon=True)
        self.threads = threads                    # encoder threads, 0: FFmpeg's choice
        self.dst, self.fps, self.codec, self.crf, self.preset = dst, fps, codec, crf, preset
        self.compose, self.store, self.maps_dtype, self.q = compose, store, maps_dtype, q
        self.audio_src = audio_src
        self.t_first: Optional[float] = None      # the input's first frame time: output time 0
        self.last_pts: Optional[int] = None
        self.frame_times: List[float] = []        # output time of each written frame, seconds
        self.audio: Optional[_Audio] = None
        self.audio_note = ""
        self.error: Optional[BaseException] = None
        self.frames = 0
        self.failed = threading.Event()
        self._out = self._stream = None           # the output container and its video stream, once opened

    def _open(self):
        av = import_av()
        out = av.open(self.dst, mode="w")
        stream = out.add_stream(self.codec, rate=self.fps)
        stream.height, stream.width = self.compose.size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = OUT_TIME_BASE          # each frame keeps its input time (VFR)
        stream.time_base = OUT_TIME_BASE
        if self.threads:
            stream.thread_count = self.threads
        if self.codec != "mpeg4":
            stream.options = encoder_options(self.codec, self.crf, self.preset)
        else:   # MPEG-4 part 2: constant quantiser, 2 (best) .. 31; map crf 0..51 onto it
            q = max(2, min(31, round(2 + self.crf * 29 / 51)))
            stream.codec_context.qscale = True                   # AV_CODEC_FLAG_QSCALE
            stream.codec_context.global_quality = q * 118        # FF_QP2LAMBDA, as ffmpeg -q:v
        if self.audio_src is not None:
            try:
                self.audio = _Audio(self.audio_src, out, self.t_first)
            except Exception as e:  # noqa: BLE001 - the video goes on without sound, said in the summary
                self._audio_failed(e)
        return out, stream

    def _pts(self, t: Optional[float]) -> int:
        """Output pts (in OUT_TIME_BASE) of a frame shown at input time ``t``: the input's
        timing is kept (variable frame rates included), strictly increasing; a frame without
        a time follows the previous one by 1 / fps."""
        step = max(1, round(OUT_TIME_BASE.denominator / float(self.fps)))
        if t is not None and self.t_first is not None:
            pts = round((t - self.t_first) * OUT_TIME_BASE.denominator)
        else:
            pts = 0 if self.last_pts is None else self.last_pts + step
        if self.last_pts is not None:
            pts = max(pts, self.last_pts + 1)
        pts = max(pts, 0)
        self.last_pts = pts
        self.frame_times.append(pts / OUT_TIME_BASE.denominator)
        return pts

    def _audio_failed(self, e: BaseException) -> None:
        import warnings
        self.audio_note = f"failed: {type(e).__name__}: {e}"
        warnings.warn(f"{self.dst}: the audio was left out ({self.audio_note}); the video is complete",
                      RuntimeWarning, stacklevel=2)
        if self.audio is not None:
            try:
                self.audio.close()
            except Exception:  # noqa: BLE001
                pass
        self.audio = None

    def _mux_audio(self, out, final: bool = False) -> None:
        if self.audio is None:
            return
        try:
            end = (self.frame_times[-1] if self.frame_times else 0.0) + 1.0 / float(self.fps)
            self.audio.until(out, end)
            if final:
                self.audio.finish(out)
                self.audio_note = self.audio.what
                self.audio.close()
                self.audio = None
        except Exception as e:  # noqa: BLE001
            self._audio_failed(e)

    def run(self) -> None:
        try:
            while True:
                item = self.q.get()
                if item is None:
                    break
                self.write(item)    # after a failure: drained, so the producer never blocks
        except BaseException as e:  # noqa: BLE001 - surfaced by explain_video
            self.error = self.error or e
            self.failed.set()
            while self.q.get() is not None:     # drain until the producer's sentinel
                pass
        finally:
            self.finish()

    def write(self, item) -> None:
        """Render, encode and mux one batch ``(start, rgb, maps, targets, times)``. An error is kept
        in :attr:`error`, :attr:`failed` set, and later batches are dropped."""
        av = import_av()
        if self.failed.is_set():
            return
        try:
            start, rgb, maps, targets, times = item
            frames = self.compose(rgb, maps)
            if self.t_first is None:
                self.t_first = next((t for t in times if t is not None), None)
            if self._out is None:
                self._out, self._stream = self._open()
            for f, t in zip(frames, times):
                vf = av.VideoFrame.from_ndarray(f, format="rgb24")
                vf.pts = self._pts(t)
                vf.time_base = OUT_TIME_BASE
                for packet in self._stream.encode(vf):
                    self._out.mux(packet)
                self.frames += 1
            if self.store is not None:
                self.store.write(range(start, start + len(frames)),
                                 {"maps": maps.float().cpu().numpy().astype(self.maps_dtype),
                                  "targets": targets.cpu().numpy().astype(np.int64),
                                  "time": np.array(self.frame_times[-len(frames):], dtype=np.float64)})
            self._mux_audio(self._out)
        except Exception as e:  # noqa: BLE001 - surfaced by explain_video
            self.error = e
            self.failed.set()

    def finish(self) -> None:
        """Flush the encoder's delayed frames, the sound and the MP4 index; close the file."""
        out, self._out = self._out, None
        if out is None:
            return
        try:
            try:
                for packet in self._stream.encode():
                    out.mux(packet)
                self._mux_audio(out, final=True)
            finally:
                out.close()
        except Exception as e:  # noqa: BLE001 - surfaced by explain_video
            self.error = self.error or e
            self.failed.set()
