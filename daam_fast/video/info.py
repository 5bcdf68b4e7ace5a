"""What a video holds: :func:`probe_video`, :class:`VideoInfo`, and the pipeline's result and error types."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import List, Optional, Tuple

__all__ = ["VideoDecodeError", "VideoInfo", "VideoSummary", "probe_video"]


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
    from ..outputs.encode import import_av
    av = import_av()
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
