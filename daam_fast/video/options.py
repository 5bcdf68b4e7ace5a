"""The options of :func:`daam_fast.video.explain_video`, their defaults (typed once) and their checks."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .codec import X264_PRESETS
from .compose import LAYOUTS, BlockSpec

OUTPUT_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv")
CODECS = ("auto", "libx264", "mpeg4", "h264_nvenc")
CORRUPT = ("error", "keep")


def daam_methods() -> tuple:
    """The DAAM methods, read from the explainer's one method table."""
    from ..explainer import METHODS
    return tuple(METHODS)


@dataclass
class VideoOptions:
    """How a video is explained and drawn; the defaults of :func:`explain_video`,
    :func:`iter_video_maps` and ``daam-fast video`` (see :func:`explain_video` for each field).

    Example:
        >>> VideoOptions().crf, VideoOptions(block="all").block
        (18, 'all')
    """

    method: str = "grad"
    block: BlockSpec = -1
    layout: str = "auto"
    scale: Optional[float] = None
    mode: str = "nonlinear"
    batch_size: int = 16
    target: Optional[int] = None
    smoothing: float = 0.0
    maps_dtype: type = np.float32
    codec: str = "auto"
    crf: int = 18
    preset: str = "ultrafast"
    encoder_threads: int = 0
    queue_size: int = 2
    corrupt: str = "error"
    audio: bool = True
    boxes: Optional[float] = None
    overlap: Optional[bool] = None

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
        if self.overlap is not None and not isinstance(self.overlap, bool):
            raise ValueError(f"overlap must be None (threads where a core is free), True or False, got {self.overlap!r}")
        methods = daam_methods()
        if self.method not in methods:
            raise ValueError(f"method must be one of {', '.join(map(repr, methods))}, got {self.method!r}")
        if self.target is not None and (isinstance(self.target, bool) or not isinstance(self.target, int)):
            raise ValueError(f"target must be None (each frame's prediction) or one class index for all frames, "
                             f"got {self.target!r}")

    def check(self) -> None:
        """Every check of :func:`explain_video` that needs neither the video nor the model."""
        self.check_stream()
        from ..render import MODES
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}: expected one of {', '.join(MODES)}")
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


DEFAULTS = VideoOptions()
FIELDS = tuple(f.name for f in dataclasses.fields(VideoOptions))
