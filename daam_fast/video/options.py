"""The options of :func:`daam_fast.video.explain_video` and ``daam-fast video``: their defaults
(written once, here) and their checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .codec import X264_PRESETS
from .compose import LAYOUTS, BlockSpec

OUTPUT_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv")
CODECS = ("auto", "libx264", "mpeg4", "h264_nvenc")
CORRUPT = ("error", "keep")
MAPS_DTYPES = ("float32", "float16")


def daam_methods() -> tuple:
    """The DAAM methods, read from the explainer's one method table."""
    from ..explainer import METHODS
    return tuple(METHODS)


def _modes() -> tuple:
    from ..render import MODES
    return tuple(MODES)


@dataclass
class VideoOptions:
    """How a video is explained, drawn and encoded: the defaults of :func:`explain_video`,
    :func:`iter_video_maps` and ``daam-fast video``.

    Attributes:
        method: a DAAM method: "grad" (exact), "direct" (forward only), ...
        block: which accumulated map(s) D_b to show, 0-based, negative from the end: an int
            (default -1: the final map D_L), a list of ints, or "all" (the attention flow).
        layout: "auto" (an int -> "single", a list -> "row", "all" -> "grid"), "single", "row"
            (side by side) or "grid" (tiled, about square).
        scale: size of each panel relative to the input frame; None: 1 for "single" and "row",
            1 / columns for "grid" (the grid is then as wide as the input).
        mode: rendering, "nonlinear", "linear" or "raw" (:func:`daam_fast.render`).
        batch_size: frames per model call.
        target: None (each frame's prediction), one class index for every frame, or a target
            (a callable of the model's output, :class:`daam_fast.DAAM`).
        smoothing: EMA weight of the past frames in [0, 1), 0 = off (:mod:`daam_fast.video`).
        maps_dtype: dtype of the stored maps, "float32" or "float16".
        codec: "auto" (libx264, else mpeg4), "libx264", "mpeg4", or "h264_nvenc" (NVIDIA's
            hardware encoder).
        crf: quality, 0 (best) .. 51 (libx264's constant rate factor; mapped to MPEG-4's quantiser).
        preset: libx264 speed preset (for h264_nvenc mapped onto p1 .. p7). "ultrafast": per
            1080p frame about 21 ms of CPU against 71 for "veryfast", files about 1.7x larger.
        encoder_threads: encoder threads; 0: FFmpeg's choice.
        queue_size: batches decoded ahead of the model, and batches waiting for the writer, at most.
        corrupt: "error": a frame the decoder flags as corrupt stops the run like a decoding
            error; "keep": explain it anyway (listed in the summary).
        audio: keep the input's first audio stream: copied when MP4 can hold its codec, else
            re-encoded to AAC; aligned to the first video frame and cut at the last one.
        boxes: None, or draw on each panel the box of its map's salient region, this fraction
            of the map's maximum as the threshold (:func:`daam_fast.boxes.boxes_from_maps`).

    Example:
        >>> VideoOptions().crf, VideoOptions(block="all").block
        (18, 'all')
    """

    method: str = field(default="grad", metadata={"cli": False})
    block: BlockSpec = field(default=-1, metadata={"cli": False})
    layout: str = field(default="auto", metadata={"choices": LAYOUTS, "help": "panel layout (default %(default)s)"})
    scale: Optional[float] = field(default=None, metadata={"help": "panel size relative to the frame"})
    mode: str = field(default="nonlinear", metadata={"choices": _modes, "help": "rendering (default %(default)s)"})
    batch_size: int = field(default=16, metadata={"cli": False})
    target: Optional[int] = field(default=None, metadata={
        "help": "class to explain in every frame (default: prediction)"})
    smoothing: float = field(default=0.0, metadata={
        "help": "EMA over frames: S_t = (1-s) D_t + s S_(t-1), s in [0, 1); 0 = off"})
    maps_dtype: str = field(default="float32", metadata={"choices": MAPS_DTYPES, "help": "dtype of the stored maps"})
    codec: str = field(default="auto", metadata={"choices": CODECS, "help": "video encoder (default %(default)s)"})
    crf: int = field(default=18, metadata={"help": "quality 0 (best) .. 51 (default %(default)s)"})
    preset: str = field(default="ultrafast", metadata={"choices": X264_PRESETS,
                                                       "help": "libx264 speed preset (default %(default)s)"})
    encoder_threads: int = field(default=0, metadata={"help": "encoder threads (0: FFmpeg's choice)"})
    queue_size: int = field(default=2, metadata={"help": "batches decoded ahead, and waiting for the writer, at most"})
    corrupt: str = field(default="error", metadata={"cli": False})
    audio: bool = field(default=True, metadata={"help": "leave out the input's sound (default: kept)"})
    boxes: Optional[float] = field(default=None, metadata={
        "metavar": "THRESHOLD", "help": "draw on each panel the box of its map's salient region (threshold: a "
                                        "fraction of the map's maximum, e.g. 0.5)"})

    def check_stream(self) -> None:
        """The checks of the explain loop (what :func:`iter_video_maps` uses), raising ``ValueError``."""
        if self.corrupt not in CORRUPT:
            raise ValueError(f"corrupt must be 'error' or 'keep', got {self.corrupt!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not (0.0 <= float(self.smoothing) < 1.0):
            raise ValueError(f"smoothing must be in [0, 1) (the EMA weight of the past frames), got {self.smoothing!r}")
        if not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise ValueError(f"queue_size must be a positive integer, got {self.queue_size!r}")
        methods = daam_methods()
        if self.method not in methods:
            raise ValueError(f"method must be one of {', '.join(map(repr, methods))}, got {self.method!r}")
        if self.target is not None and not callable(self.target) and \
                (isinstance(self.target, bool) or not isinstance(self.target, int)):
            raise ValueError(f"target must be None (each frame's prediction), one class index for all frames or "
                             f"a target (a callable of the model's output), "
                             f"got {self.target!r}")

    def check(self) -> None:
        """Every check of :func:`explain_video` that needs neither the video nor the model."""
        self.check_stream()
        if self.mode not in _modes():
            raise ValueError(f"mode={self.mode!r}: expected one of {', '.join(_modes())}")
        if np.dtype(self.maps_dtype).name not in MAPS_DTYPES:
            raise ValueError(f"maps_dtype={self.maps_dtype!r}: expected one of {', '.join(MAPS_DTYPES)}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout={self.layout!r}: expected one of {', '.join(LAYOUTS)}")
        if not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be an integer in 0 .. 51, got {self.crf!r}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset={self.preset!r}: expected one of {', '.join(X264_PRESETS)}")
        if isinstance(self.encoder_threads, bool) or not isinstance(self.encoder_threads, int) \
                or self.encoder_threads < 0:
            raise ValueError(f"encoder_threads must be an integer >= 0 (0: FFmpeg's choice), got {self.encoder_threads!r}")
        if self.boxes is not None and (isinstance(self.boxes, bool) or not isinstance(self.boxes, (int, float))
                                       or not 0.0 <= self.boxes <= 1.0):
            raise ValueError(f"boxes: the threshold is a fraction of the map's maximum in [0, 1], got {self.boxes!r}")
        if self.scale is not None and not (isinstance(self.scale, (int, float)) and 0 < self.scale <= 8):
            raise ValueError(f"scale must be a number in (0, 8], got {self.scale!r}")

