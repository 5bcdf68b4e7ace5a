"""Explain a video end to end: decode -> batch -> preprocess -> explain -> render -> encode.

The pipeline streams: a reader thread decodes frames with PyAV, batches and preprocesses them
(:func:`daam_fast.preprocess.prepare`) and hands them over through a bounded queue; the
calling thread runs the model (:class:`daam_fast.DAAM`, ``method="grad"`` or ``"direct"``);
a writer thread renders the overlays (:func:`daam_fast.render`), encodes them (H.264, or
MPEG-4 where this FFmpeg has no libx264) into an MP4 at the input's frame rate and size,
and optionally streams the maps into a compressed ``.npz`` (or ``.zarr`` when zarr is
installed). Decoding and encoding overlap the model; at most ``queue_size`` batches wait
in each queue, so memory stays bounded whatever the video's length.

Nothing is lost: every decoded frame gives exactly one output frame, in order. A corrupt
or truncated input raises :class:`VideoDecodeError` naming the first frame that could not
be decoded; the frames before it are explained, encoded and the output MP4 is closed
properly (a valid, playable file) before the error is raised.

Temporal smoothing (``smoothing=s``, off by default) is an exponential moving average of
the accumulated maps over frames, applied before rendering and before the maps are
returned or written:

    S_0 = D_0,    S_t = (1 - s) * D_t + s * S_{t-1}     (every block, every patch)

``s`` in [0, 1) is the weight of the past; ``s = 0`` is off, and a frame's influence
halves every ``log(0.5) / log(s)`` frames (s = 0.5: every frame; s = 0.8: about 3 frames).
As the EMA is linear it commutes with the sum over blocks: smoothing D_b equals
accumulating the smoothed L_b.

Example:
    >>> from daam_fast.video import explain_video, iter_video_maps
    >>> summary = explain_video("in.mp4", "out.mp4")            # shipped model, final map overlay
    >>> for i, maps in iter_video_maps("in.mp4"):               # tensors only: (L, h, w) per frame
    ...     pass
"""
from __future__ import annotations

import math
import os
import queue
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["explain_video", "iter_video_maps", "probe_video", "VideoInfo", "VideoSummary", "VideoDecodeError",
           "add_cli"]

BlockSpec = Union[int, str, Sequence[int]]
LAYOUTS = ("auto", "single", "row", "grid")
OUTPUT_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_POLL = 0.1   # seconds between checks of the stop flag while a queue is full / empty


class VideoDecodeError(ValueError):
    """The input video could not be read from ``frame_index`` on (0: not at all).

    Attributes:
        path: the input video.
        frame_index: the first frame that could not be decoded; frames ``0 .. frame_index - 1``
            were decoded (and, in :func:`explain_video`, explained and written).
    """

    def __init__(self, path: str, frame_index: int, reason: str):
        self.path, self.frame_index, self.reason = path, frame_index, reason
        if frame_index == 0:
            msg = f"{path}: cannot decode the video (failed at frame 0): {reason}"
        else:
            msg = (f"{path}: decoding failed at frame {frame_index} (frames 0-{frame_index - 1} were read): "
                   f"{reason}")
        super().__init__(msg)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream.

    Attributes:
        width, height: frame size in pixels as shown, i.e. after the container's rotation
            (a portrait phone video stored landscape with a 90 degree display rotation has
            width < height here; frames are read upright).
        fps: average frame rate (a Fraction, e.g. 30000/1001), or None if unknown.
        frames: declared number of frames (0 if the container does not say).
        codec: the stream's codec name.
        rotation: the display rotation of the stream, degrees counter-clockwise, rounded to a
            multiple of 90 (0, 90, 180, 270); mirroring in the display matrix is ignored.
        audio: the codec of the first audio stream, or None.
    """

    width: int
    height: int
    fps: Optional[Fraction]
    frames: int
    codec: str
    rotation: int = 0
    audio: Optional[str] = None


@dataclass
class VideoSummary:
    """What :func:`explain_video` did.

    Attributes:
        frames: frames read, explained and written.
        seconds: wall time of the whole pipeline.
        fps: the output's frame rate (the input's).
        size: (H, W) of the output frames.
        out: the output video; maps_out: the maps file or None.
        codec: the encoder used; corrupt_frames: indices of frames the decoder flagged as
            corrupt (concealed) and that were kept (``corrupt="keep"``).
        audio: what happened to the input's audio: "copied aac", "re-encoded pcm_s16le to
            aac", "none in the input", "left out (audio=False)", or "failed: <reason>" (the
            video is still complete; a warning is issued).
    """

    frames: int
    seconds: float
    fps: Fraction
    size: Tuple[int, int]
    out: str
    maps_out: Optional[str] = None
    codec: str = ""
    corrupt_frames: List[int] = field(default_factory=list)
    audio: str = ""

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def probe_video(src: str) -> VideoInfo:
    """Size, frame rate, declared frame count and codec of ``src``'s first video stream.

    Raises:
        VideoDecodeError: the file cannot be opened or holds no video stream.
    """
    import av
    if not os.path.isfile(src):
        raise VideoDecodeError(src, 0, "no such file")
    try:
        with av.open(src) as c:
            if not c.streams.video:
                raise VideoDecodeError(src, 0, "the file holds no video stream")
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate
            w, h = int(s.codec_context.width), int(s.codec_context.height)
            rotation = 0
            try:                                # the display matrix travels with the frames
                first = next(iter(c.decode(s)), None)
                rotation = _quarter_turns(getattr(first, "rotation", 0) or 0) * 90 if first is not None else 0
            except av.FFmpegError:
                pass                            # the reader reports what cannot be decoded
            if rotation in (90, 270):
                w, h = h, w
            audio = _audio_codec(c.streams.audio[0]) if c.streams.audio else None
            return VideoInfo(w, h, Fraction(rate) if rate else None, int(s.frames or 0), s.codec_context.name,
                             rotation, audio)
    except av.FFmpegError as e:
        raise VideoDecodeError(src, 0, str(e)) from None


def _audio_codec(stream) -> str:
    """The codec's canonical name ("mp3", not the decoder's "mp3float")."""
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


def _quarter_turns(degrees: float) -> int:
    """Counter-clockwise display rotation in degrees -> quarter turns 0..3 (nearest)."""
    return int(round(float(degrees) / 90.0)) % 4


# ---------------------------------------------------------------------------- reader
class _End:
    def __init__(self, frames: int):
        self.frames = frames


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def _put(q: "queue.Queue", item, stop: threading.Event) -> bool:
    """Put with a bounded wait that gives up when ``stop`` is set (the consumer went away)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


class _Reader(threading.Thread):
    """Decode ``src`` and hand over batches (start, rgb uint8 (B, 3, H, W), x (B, 3, h, w), corrupt)."""

    def __init__(self, src: str, spec, batch_size: int, q: "queue.Queue", stop: threading.Event, corrupt: str):
        super().__init__(name="daam-video-reader", daemon=True)
        self.src, self.spec, self.batch_size, self.q, self.stop, self.corrupt = src, spec, batch_size, q, stop, corrupt

    def _flush(self, start: int, pics: List[np.ndarray], flagged: List[int], times: List[Optional[float]]) -> bool:
        from .preprocess import prepare
        rgb = torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2)          # (B, 3, H, W) uint8
        x, _ = prepare(rgb, self.spec)
        return _put(self.q, (start, rgb, x, flagged, list(times)), self.stop)

    def run(self) -> None:
        import av
        torch.set_num_threads(1)    # per thread: light torch work here must not oversubscribe the model's threads
        n = 0
        try:
            info = probe_video(self.src)
            turns = info.rotation // 90
            pics: List[np.ndarray] = []
            flagged: List[int] = []
            times: List[Optional[float]] = []                # presentation time of each frame, seconds
            try:
                with av.open(self.src) as c:
                    stream = c.streams.video[0]
                    for frame in c.decode(stream):
                        if getattr(frame, "is_corrupt", False):
                            if self.corrupt == "error":
                                raise VideoDecodeError(self.src, n, "the decoder flagged the frame as corrupt "
                                                                    "(pass corrupt='keep' / --keep-corrupt to keep such frames)")
                            flagged.append(n)
                        pic = frame.to_ndarray(format="rgb24")
                        if turns:                           # upright, as players show it
                            pic = np.ascontiguousarray(np.rot90(pic, turns))
                        pics.append(pic)
                        times.append(float(frame.pts * frame.time_base)
                                     if frame.pts is not None and frame.time_base else None)
                        n += 1
                        if len(pics) == self.batch_size:
                            if not self._flush(n - len(pics), pics, flagged, times):
                                return
                            pics, flagged, times = [], [], []
                        if self.stop.is_set():
                            return
            except av.FFmpegError as e:
                raise VideoDecodeError(self.src, n, str(e)) from None
            except VideoDecodeError:
                raise
            if info.frames and n < info.frames:
                raise VideoDecodeError(self.src, n, f"the stream ended after {n} of the {info.frames} frames its "
                                                    "header declares: the file is truncated")
            if n == 0:
                raise VideoDecodeError(self.src, 0, "the video stream holds no decodable frame")
            if pics and not self._flush(n - len(pics), pics, flagged, times):
                return
            _put(self.q, _End(n), self.stop)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, re-raised there
            if isinstance(e, VideoDecodeError) and n and pics:
                if not self._flush(n - len(pics), pics, flagged, times):
                    return
            _put(self.q, _Failed(e), self.stop)


# ---------------------------------------------------------------------------- core stream
def _ema(maps: Tensor, state: Optional[Tensor], s: float) -> Tuple[Tensor, Optional[Tensor]]:
    """EMA over the frame axis of (B, L, h, w) maps, continuing from ``state`` (L, h, w)."""
    if s <= 0:
        return maps, state
    out = torch.empty_like(maps)
    for i in range(maps.shape[0]):
        state = maps[i] if state is None else (1 - s) * maps[i] + s * state
        out[i] = state
    return out, state


def _check_common(batch_size: int, smoothing: float, queue_size: int, method: str, target, corrupt: str) -> None:
    if corrupt not in ("error", "keep"):
        raise ValueError(f"corrupt must be 'error' or 'keep', got {corrupt!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (0.0 <= float(smoothing) < 1.0):
        raise ValueError(f"smoothing must be in [0, 1) (the EMA weight of the past frames), got {smoothing!r}")
    if not isinstance(queue_size, int) or queue_size < 1:
        raise ValueError(f"queue_size must be a positive integer, got {queue_size!r}")
    if method not in ("grad", "direct"):
        raise ValueError(f"method must be 'grad' or 'direct', got {method!r}")
    if target is not None and (isinstance(target, bool) or not isinstance(target, int)):
        raise ValueError(f"target must be None (each frame's prediction) or one class index for all frames, "
                         f"got {target!r}")


def _stream(src: str, model: nn.Module, method: str, batch_size: int, target: Optional[int], bank,
            smoothing: float, queue_size: int, corrupt: str, progress: bool, daam_options: Optional[dict] = None
            ) -> Iterator[Tuple[int, Tensor, Tensor, Tensor, List[int]]]:
    """Yield (start, rgb (B, 3, H, W) uint8 CPU, maps (B, L, h, w), targets (B,), corrupt indices) in order."""
    from tqdm import tqdm
    from . import DAAM
    from .preprocess import input_spec

    info = probe_video(src)
    device = next(model.parameters()).device
    q: "queue.Queue" = queue.Queue(maxsize=queue_size)
    stop = threading.Event()
    reader = _Reader(src, input_spec(model), batch_size, q, stop, corrupt)
    bar = tqdm(total=info.frames or None, desc=os.path.basename(src), unit="frame", disable=not progress,
               dynamic_ncols=True)
    state: Optional[Tensor] = None
    reader.start()
    try:
        with DAAM(model, method=method, **(daam_options or {})) as daam:
            while True:
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
                start, rgb, x, flagged, times = item
                res = daam(x.to(device, non_blocking=True), target=target, bank=bank)
                maps, state = _ema(res.maps.detach(), state, smoothing)
                bar.update(rgb.shape[0])
                yield start, rgb, maps, res.targets, flagged, times
    finally:
        stop.set()
        bar.close()
        reader.join()


def _default_model(model: Optional[nn.Module]) -> nn.Module:
    if model is None:
        from .zoo import load_model
        return load_model("shapes_vit")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module (a timm ViT) or None for the shipped model, "
                         f"got {type(model).__name__}")
    return model


def iter_video_maps(src: str, model: Optional[nn.Module] = None, *, method: str = "grad", batch_size: int = 16,
                    target: Optional[int] = None, bank=None, smoothing: float = 0.0, queue_size: int = 2,
                    corrupt: str = "error", progress: bool = False,
                    daam_options: Optional[dict] = None) -> Iterator[Tuple[int, Tensor]]:
    """Explain every frame of a video and yield its maps, for users who only want tensors.

    Decoding and preprocessing run in a background thread (bounded queue); the model runs in
    the caller's thread, ``batch_size`` frames at a time. Breaking out of the loop stops the
    reader.

    Args:
        src: a video file PyAV can read.
        model: a timm ViT (eval mode); None loads the shipped ``shapes_vit``. Frames are resized
            and normalised per :func:`daam_fast.preprocess.input_spec` of the model.
        method: "grad" (exact) or "direct" (forward only), as :class:`daam_fast.DAAM`.
        batch_size: frames per model call.
        target: None (each frame's own prediction) or one class index for every frame.
        bank: a :class:`daam_fast.MemoryBank` for a model without a head.
        smoothing: EMA weight of the past frames in [0, 1), 0 = off (module docstring).
        queue_size: batches decoded ahead at most.
        corrupt: "error" (default): a frame the decoder flags as corrupt raises; "keep": explain it.
        progress: show a tqdm bar (frames, frames/s, ETA).
        daam_options: extra :class:`daam_fast.DAAM` keywords (``checkpoint``, ``compile``).

    Yields:
        (frame_index, maps): maps (L, h, w) float32, the accumulated maps D_1 .. D_L of the
        frame (smoothed if asked), on the model's device.

    Raises:
        VideoDecodeError: the video cannot be decoded from some frame on (raised after the
            frames before it were yielded).
    """
    _check_common(batch_size, smoothing, queue_size, method, target, corrupt)   # eagerly, not at the first next()
    model = _default_model(model)

    def frames() -> Iterator[Tuple[int, Tensor]]:
        for start, _rgb, maps, _t, _c, _s in _stream(src, model, method, batch_size, target, bank, smoothing,
                                                  queue_size, corrupt, progress, daam_options):
            for i in range(maps.shape[0]):
                yield start + i, maps[i]

    return frames()


# ---------------------------------------------------------------------------- composing frames
def _resolve_blocks(block: BlockSpec, depth: int) -> Tuple[List[int], bool]:
    """-> (0-based block indices, True if ``block`` was a single int)."""
    if isinstance(block, str):
        if block != "all":
            raise ValueError(f"block must be an int, a list of ints or 'all', got {block!r}")
        return list(range(depth)), False
    single = isinstance(block, (int, np.integer)) and not isinstance(block, bool)
    items = [block] if single else list(block)
    if not items:
        raise ValueError("block: the list of blocks is empty")
    out = []
    for b in items:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise ValueError(f"block indices must be integers, got {b!r}")
        if not -depth <= int(b) < depth:
            raise ValueError(f"block {int(b)} is out of range for a model with {depth} blocks "
                             f"(use 0 .. {depth - 1} or negative indices from the end)")
        out.append(int(b) % depth)
    return out, single


def _even(n: int) -> int:
    return n + n % 2


class _Composer:
    """Rendered overlays of the chosen blocks, laid out as one frame (H', W', 3) per input frame."""

    def __init__(self, blocks: List[int], depth: int, layout: str, scale: float, mode: str, H: int, W: int):
        self.blocks, self.depth, self.layout, self.mode = blocks, depth, layout, mode
        k = len(blocks)
        self.cols = 1 if layout == "single" else (k if layout == "row" else math.ceil(math.sqrt(k)))
        self.rows = 1 if layout in ("single", "row") else math.ceil(k / self.cols)
        self.ph, self.pw = max(2, int(round(H * scale))), max(2, int(round(W * scale)))
        self.size = (_even(self.rows * self.ph), _even(self.cols * self.pw))   # yuv420p needs even sizes
        # render() normalises with the last block it is given as D_L: always pass D_L last
        self.sel = blocks + ([depth - 1] if depth - 1 not in blocks else [])

    def __call__(self, rgb: Tensor, maps: Tensor) -> np.ndarray:
        from .render import render
        img = rgb.to(maps.device)
        if (self.ph, self.pw) != tuple(img.shape[-2:]):
            img = F.interpolate(img.float(), size=(self.ph, self.pw), mode="bilinear", align_corners=False,
                                antialias=True).round().clamp(0, 255).to(torch.uint8)
        idx = torch.tensor(self.sel, device=maps.device)
        frames = render(maps.index_select(1, idx), images=img, mode=self.mode)      # (B, k', ph, pw, 3)
        pos = {b: j for j, b in enumerate(self.sel)}
        B = frames.shape[0]
        out = torch.zeros(B, self.size[0], self.size[1], 3, dtype=torch.uint8, device=frames.device)
        for j, b in enumerate(self.blocks):
            r, c = divmod(j, self.cols)
            out[:, r * self.ph:(r + 1) * self.ph, c * self.pw:(c + 1) * self.pw] = frames[:, pos[b]]
        if self.size != (self.rows * self.ph, self.cols * self.pw):       # odd size: repeat the edge
            h, w = self.rows * self.ph, self.cols * self.pw
            out[:, h:, :w] = out[:, h - 1:h, :w]
            out[:, :, w:] = out[:, :, w - 1:w]
        return out.cpu().numpy()


# ---------------------------------------------------------------------------- maps files
class _NpzMaps:
    """Streams (T, L, h, w) maps into a compressed .npz without holding them in memory.

    Maps go to a temporary raw file beside the output while the video runs; at the end the
    .npz is assembled member by member (the .npy header needs the final frame count).
    """

    def __init__(self, path: str, dtype: np.dtype):
        self.path, self.dtype = path, np.dtype(dtype)
        d = os.path.dirname(os.path.abspath(path))
        self._tmp = tempfile.NamedTemporaryFile(prefix=".maps_", suffix=".raw", dir=d, delete=False)
        self._targets: List[np.ndarray] = []
        self.shape: Optional[Tuple[int, ...]] = None
        self.count = 0

    def write(self, maps: np.ndarray, targets: np.ndarray) -> None:
        self.shape = tuple(maps.shape[1:])
        self._tmp.write(np.ascontiguousarray(maps, dtype=self.dtype).tobytes())
        self._targets.append(np.asarray(targets, dtype=np.int64))
        self.count += maps.shape[0]

    def close(self, meta: dict) -> None:
        self._tmp.close()
        try:
            if self.shape is None:
                return
            arrays = dict(meta)
            arrays["targets"] = np.concatenate(self._targets)
            arrays["frame_index"] = np.arange(self.count, dtype=np.int64)
            with zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
                with zf.open("maps.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                             "fortran_order": False,
                                                             "shape": (self.count, *self.shape)})
                    with open(self._tmp.name, "rb") as raw:
                        while True:
                            chunk = raw.read(1 << 22)
                            if not chunk:
                                break
                            f.write(chunk)
                for name, value in arrays.items():
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
        finally:
            os.unlink(self._tmp.name)


class _ZarrMaps:
    """Appends (T, L, h, w) maps to a zarr array (only when zarr is installed)."""

    def __init__(self, path: str, dtype: np.dtype):
        try:
            import zarr
        except ImportError:
            raise ValueError(f"maps_out={path!r}: writing .zarr needs the zarr package (not installed); "
                             f"use a .npz file instead") from None
        self.zarr, self.path, self.dtype = zarr, path, np.dtype(dtype)
        self.root = None
        self.count = 0

    def write(self, maps: np.ndarray, targets: np.ndarray) -> None:
        if self.root is None:
            self.root = self.zarr.open_group(self.path, mode="w")
            shape = tuple(maps.shape[1:])
            self.maps = self.root.create_array("maps", shape=(0, *shape), chunks=(64, *shape), dtype=self.dtype) \
                if hasattr(self.root, "create_array") else \
                self.root.create_dataset("maps", shape=(0, *shape), chunks=(64, *shape), dtype=self.dtype)
            self.targets = self.root.create_array("targets", shape=(0,), chunks=(4096,), dtype="i8") \
                if hasattr(self.root, "create_array") else \
                self.root.create_dataset("targets", shape=(0,), chunks=(4096,), dtype="i8")
        self.maps.append(np.ascontiguousarray(maps, dtype=self.dtype))
        self.targets.append(np.asarray(targets, dtype=np.int64))
        self.count += maps.shape[0]

    def close(self, meta: dict) -> None:
        if self.root is not None:
            self.root.attrs.update({k: (v.item() if isinstance(v, np.generic) else
                                        v.tolist() if isinstance(v, np.ndarray) else v) for k, v in meta.items()})


def _maps_writer(path: Optional[str], dtype):
    if path is None:
        return None
    p = path.rstrip("/")
    if p.endswith(".npz"):
        return _NpzMaps(p, dtype)
    if p.endswith(".zarr"):
        return _ZarrMaps(p, dtype)
    raise ValueError(f"maps_out={path!r}: expected a .npz file or a .zarr directory")


# ---------------------------------------------------------------------------- writer
def _pick_codec(codec: str) -> str:
    import av
    names = ["libx264", "mpeg4"] if codec == "auto" else [codec]
    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - this FFmpeg build lacks the encoder
            continue
    raise ValueError(f"codec={codec!r}: no such video encoder in this FFmpeg build (PyAV)")


# ---------------------------------------------------------------------------- audio
# Output video time base: fine enough for any frame timing, and within MPEG-4 part 2's limit
# (time base denominators <= 65535): 30000/1001 fps is exactly 2002 ticks per frame.
OUT_TIME_BASE = Fraction(1, 60000)

# Audio codecs the MP4 muxer takes as they are; anything else (PCM, Vorbis, ...) is re-encoded to AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})


class _Audio:
    """The input's first audio stream, muxed into the output as the video is written: copied
    packet by packet when MP4 can hold the codec, else decoded and re-encoded to AAC. Times
    are taken relative to the input's first video frame, and audio past the last written
    video frame is dropped, so picture and sound stay in step."""

    def __init__(self, src: str, out, t0: Optional[float] = None):
        import av
        self.inp = av.open(src)
        self.ain = self.inp.streams.audio[0]
        v = self.inp.streams.video[0]
        if t0 is None:                                    # the first video frame's time
            t0 = float(v.start_time * v.time_base) if v.start_time is not None and v.time_base else 0.0
        self.t0 = t0
        name = _audio_codec(self.ain)
        self.copy = name in MP4_AUDIO
        if self.copy:
            self.aout = out.add_stream_from_template(self.ain)
            self.what = f"copied {name}"
        else:
            rate = self.ain.codec_context.sample_rate or 48000
            self.aout = out.add_stream("aac", rate=rate)
            self.aout.codec_context.layout = self.ain.codec_context.layout.name if self.ain.codec_context.layout else "stereo"
            self.what = f"re-encoded {name} to aac"
        self.packets = self.inp.demux(self.ain)
        self.pending = None
        self.exhausted = False

    def until(self, out, t_end: float) -> None:
        """Mux the audio whose time (from the first video frame) is below ``t_end`` seconds."""
        while not self.exhausted:
            p = self.pending if self.pending is not None else next(self.packets, None)
            self.pending = None
            if p is None:
                self.exhausted = True
                break
            if p.pts is None or p.size == 0:              # the demuxer's end-of-stream packet
                continue
            ts = float(p.pts * p.time_base) - self.t0
            if ts >= t_end:
                self.pending = p
                break
            dur = float(p.duration * p.time_base) if p.duration else 0.0
            if ts + dur < -1e-6:                          # ends before the first video frame (a packet
                continue                                  # ending right at it, e.g. AAC priming, stays)
            if self.copy:
                shift = int(round(self.t0 / p.time_base))
                p.pts -= shift
                if p.dts is not None:
                    p.dts -= shift
                p.stream = self.aout
                out.mux(p)
            else:
                for fr in p.decode():
                    rate = fr.sample_rate
                    fr.pts = int(round((float(fr.pts * fr.time_base) - self.t0) * rate)) if fr.pts is not None else None
                    fr.time_base = Fraction(1, rate)
                    if fr.pts is not None and fr.pts < 0:
                        continue
                    for q in self.aout.encode(fr):
                        out.mux(q)

    def finish(self, out) -> None:
        if not self.copy:
            for q in self.aout.encode(None):
                out.mux(q)

    def close(self) -> None:
        self.inp.close()



class _Writer(threading.Thread):
    """Renders and encodes batches from a bounded queue; opens the output on the first batch."""

    def __init__(self, dst: str, fps: Fraction, codec: str, crf: int, preset: str, compose: _Composer, maps,
                 q: "queue.Queue", audio_src: Optional[str] = None):
        super().__init__(name="daam-video-writer", daemon=True)
        self.dst, self.fps, self.codec, self.crf, self.preset = dst, fps, codec, crf, preset
        self.compose, self.maps, self.q = compose, maps, q
        self.audio_src = audio_src
        self.t_first: Optional[float] = None      # the input's first frame time: output time 0
        self.last_pts: Optional[int] = None
        self.frame_times: List[float] = []        # output time of each written frame, seconds
        self.audio: Optional[_Audio] = None
        self.audio_note = ""
        self.error: Optional[BaseException] = None
        self.frames = 0
        self.failed = threading.Event()

    def _open(self):
        import av
        out = av.open(self.dst, mode="w")
        stream = out.add_stream(self.codec, rate=self.fps)
        stream.height, stream.width = self.compose.size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = OUT_TIME_BASE          # each frame keeps its input time (VFR)
        stream.time_base = OUT_TIME_BASE
        if self.codec == "libx264":
            stream.options = {"crf": str(self.crf), "preset": self.preset}
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
        import av
        torch.set_num_threads(1)    # per thread, as in the reader
        out = stream = None
        try:
            while True:
                item = self.q.get()
                if item is None:
                    break
                if self.failed.is_set():
                    continue            # drain so the producer never blocks
                rgb, maps, targets, times = item
                if self.maps is not None:
                    self.maps.write(maps.float().cpu().numpy(), targets.cpu().numpy())
                frames = self.compose(rgb, maps)
                if self.t_first is None:
                    self.t_first = next((t for t in times if t is not None), None)
                if out is None:
                    out, stream = self._open()
                for f, t in zip(frames, times):
                    vf = av.VideoFrame.from_ndarray(f, format="rgb24")
                    vf.pts = self._pts(t)
                    vf.time_base = OUT_TIME_BASE
                    for packet in stream.encode(vf):
                        out.mux(packet)
                    self.frames += 1
                self._mux_audio(out)
        except BaseException as e:  # noqa: BLE001 - surfaced by explain_video
            self.error = e
            self.failed.set()
            while self.q.get() is not None:     # drain until the producer's sentinel
                pass
        finally:
            if out is not None:
                try:
                    for packet in stream.encode():  # flush delayed frames, then the MP4 index
                        out.mux(packet)
                    self._mux_audio(out, final=True)
                finally:
                    out.close()


def explain_video(src: str, dst: str, model: Optional[nn.Module] = None, *, method: str = "grad",
                  block: BlockSpec = -1, layout: str = "auto", scale: Optional[float] = None,
                  mode: str = "nonlinear", batch_size: int = 16, target: Optional[int] = None, bank=None,
                  smoothing: float = 0.0, maps_out: Optional[str] = None, maps_dtype=np.float32,
                  codec: str = "auto", crf: int = 18, preset: str = "veryfast", queue_size: int = 2,
                  corrupt: str = "error",
                  progress: bool = True, daam_options: Optional[dict] = None, audio: bool = True) -> VideoSummary:
    """Explain every frame of ``src`` and write the overlays to ``dst`` (MP4, same frame rate and size).

    Pipeline: decode (PyAV, reader thread) -> batch -> preprocess per the model's input spec ->
    explain (caller's thread) -> render (:func:`daam_fast.render`) -> encode (writer thread).
    The queues between them hold at most ``queue_size`` batches.

    Args:
        src: input video (any container / codec PyAV decodes).
        dst: output video, ``.mp4`` (or .m4v / .mov / .mkv); H.264 (libx264) or MPEG-4 part 2.
            Audio is not copied.
        model: a timm ViT in eval mode; None: the shipped ``shapes_vit``.
        method: "grad" (exact) or "direct" (forward-only approximation).
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
        smoothing: EMA weight of the past frames in [0, 1), 0 = off (module docstring).
        maps_out: also write the maps: ``.npz`` (compressed; ``maps`` (T, L, h, w), ``targets``
            (T,), ``frame_index`` (T,), ``time`` (T,) seconds from the first frame, ``fps``,
            ``method``, ``smoothing``, ``grid``) or ``.zarr``
            (same arrays, metadata as attributes; needs zarr installed).
        maps_dtype: dtype of the stored maps (float32 default, float16 halves the file).
        codec: "auto" (libx264, else mpeg4), "libx264" or "mpeg4".
        crf: quality, 0 (best) .. 51 (libx264's constant rate factor; mapped to MPEG-4's quantiser).
        preset: libx264 speed preset ("ultrafast" .. "veryslow"); "veryfast" by default, "ultrafast"
            costs about a third of the encoding time for files about 1.5 x larger.
        queue_size: batches in flight between the stages, at most.
        corrupt: "error" (default): a frame the decoder flags as corrupt stops the run like a
            decoding error; "keep": explain it anyway (listed in the summary).
        progress: tqdm bar with frames, frames/s and ETA.
        daam_options: extra :class:`daam_fast.DAAM` keywords (``checkpoint``, ``compile``).
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
    _check_common(batch_size, smoothing, queue_size, method, target, corrupt)
    from .render import MODES
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {', '.join(LAYOUTS)}")
    if not str(dst).lower().endswith(OUTPUT_EXTENSIONS):
        raise ValueError(f"dst={dst!r}: the output must be one of {', '.join(OUTPUT_EXTENSIONS)}")
    if os.path.exists(src) and os.path.exists(dst) and os.path.samefile(src, dst):
        raise ValueError(f"dst={dst!r} is the input video itself")
    if not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an integer in 0 .. 51, got {crf!r}")
    if preset not in X264_PRESETS:
        raise ValueError(f"preset={preset!r}: expected one of {', '.join(X264_PRESETS)}")
    if scale is not None and not (isinstance(scale, (int, float)) and 0 < scale <= 8):
        raise ValueError(f"scale must be a number in (0, 8], got {scale!r}")
    model = _default_model(model)
    from ._model import inspect_vit
    depth = inspect_vit(model).depth
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
    compose = _Composer(blocks, depth, layout, float(scale), mode, info.height, info.width)
    maps_file = _maps_writer(maps_out, maps_dtype)
    wq: "queue.Queue" = queue.Queue(maxsize=queue_size)
    writer = _Writer(dst, fps, codec_name, crf, preset, compose, maps_file, wq,
                     audio_src=src if (audio and info.audio) else None)
    t0 = time.perf_counter()
    corrupt_frames: List[int] = []
    grid = None
    writer.start()
    try:
        for start, rgb, maps, targets, flagged, times in _stream(src, model, method, batch_size, target, bank, smoothing,
                                                          queue_size, corrupt, progress, daam_options):
            if writer.failed.is_set():
                break
            grid = tuple(maps.shape[-2:])
            corrupt_frames += flagged
            wq.put((rgb, maps, targets, times))
    finally:
        wq.put(None)
        writer.join()
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


# ---------------------------------------------------------------------------- CLI
def _parse_blocks(items: Optional[List[str]]) -> BlockSpec:
    if not items:
        return -1
    if len(items) == 1 and items[0] == "all":
        return "all"
    out = []
    for it in items:
        for tok in it.split(","):
            tok = tok.strip()
            if not tok:
                continue
            try:
                out.append(int(tok))
            except ValueError:
                raise ValueError(f"--blocks: {tok!r} is not a block index (integers, 0-based, negative from "
                                 f"the end, or 'all')") from None
    return out[0] if len(out) == 1 else out


def _cmd_video(args) -> int:
    import sys
    from .cli import _bank_from_args, daam_options, model_from_args
    from .models import ModelLoadError
    if not os.path.isfile(args.input):
        print(f"daam-fast video: {args.input}: no such file", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and not args.overwrite:
        print(f"daam-fast video: {args.out} exists: pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        blocks = _parse_blocks(args.blocks)
        opts = daam_options(args)
        model = model_from_args(args)
    except (ModelLoadError, ValueError, FileNotFoundError) as e:
        print(f"daam-fast video: {e}", file=sys.stderr)
        return 2
    bank = _bank_from_args(args, model)
    try:
        s = explain_video(args.input, args.out, model, method=args.method, block=blocks, layout=args.layout,
                          scale=args.scale, mode=args.mode, batch_size=args.batch_size, target=args.target,
                          bank=bank, smoothing=args.smoothing, maps_out=args.maps,
                          maps_dtype=np.float16 if args.maps_float16 else np.float32, codec=args.codec,
                          crf=args.crf, preset=args.preset, corrupt="keep" if args.keep_corrupt else "error",
                          progress=not args.quiet, daam_options=opts, audio=not args.no_audio)
    except VideoDecodeError as e:
        kept = (f"; the {e.frame_index} frames before it are in {args.out}" if e.frame_index else "")
        print(f"daam-fast video: {e}{kept}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"daam-fast video: {e}", file=sys.stderr)
        return 2
    extra = f", maps -> {s.maps_out}" if s.maps_out else ""
    extra += f"; audio: {s.audio}"
    if s.corrupt_frames:
        extra += f"; {len(s.corrupt_frames)} corrupt frames kept: {s.corrupt_frames[:10]}"
    print(f"video: {s.frames} frames, {s.size[1]}x{s.size[0]} at {float(s.fps):.3g} fps ({s.codec}), "
          f"{s.frames_per_second:.1f} frames/s -> {s.out}{extra}")
    return 0


def add_cli(subparsers) -> None:
    """Register ``daam-fast video IN --out OUT.mp4 [--blocks ...] [--batch-size B]``."""
    from .cli import add_model_args
    p = subparsers.add_parser("video", help="explain every frame of a video -> MP4 overlay (and maps)",
                              description="Explain every frame of a video; write an MP4 at the input's frame rate "
                                          "and size (README, section Video).")
    p.add_argument("input", help="input video (any format FFmpeg/PyAV reads)")
    p.add_argument("--out", required=True, help="output video (.mp4)")
    add_model_args(p)
    p.add_argument("--blocks", nargs="+", default=None,
                   help="accumulated maps to show, 0-based (negative from the end): '-1' (default, the final map), "
                        "'0 2 -1' (side by side) or 'all' (the attention flow as a grid)")
    p.add_argument("--layout", default="auto", choices=LAYOUTS)
    p.add_argument("--scale", type=float, default=None, help="panel size relative to the frame")
    p.add_argument("--mode", default="nonlinear", choices=["nonlinear", "linear", "raw"], help="rendering")
    p.add_argument("--smoothing", type=float, default=0.0,
                   help="EMA over frames: S_t = (1-s) D_t + s S_(t-1), s in [0, 1); 0 = off")
    p.add_argument("--target", type=int, default=None, help="class to explain in every frame (default: prediction)")
    p.add_argument("--maps", default=None, help="also write the per-frame maps to this .npz (or .zarr)")
    p.add_argument("--maps-float16", action="store_true", help="store the maps as float16")
    p.add_argument("--codec", default="auto", choices=["auto", "libx264", "mpeg4"])
    p.add_argument("--crf", type=int, default=18, help="quality 0 (best) .. 51")
    p.add_argument("--preset", default="veryfast", choices=X264_PRESETS, help="libx264 speed preset")
    p.add_argument("--keep-corrupt", action="store_true", help="explain frames the decoder flags as corrupt")
    p.add_argument("--no-audio", action="store_true", help="leave out the input's sound (default: kept)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_video)
