"""Codecs and sound: the video encoder, the output time base, and the input's audio muxed along."""
from __future__ import annotations

from fractions import Fraction
from typing import Optional

from .info import _audio_codec

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# NVENC's presets p1 (fastest) .. p7 (best) for the x264 names (the same speed order).
NVENC_PRESETS = dict(zip(X264_PRESETS, ("p1", "p1", "p2", "p3", "p4", "p4", "p5", "p6", "p7")))


def encoder_options(codec: str, crf: int, preset: str) -> dict:
    """FFmpeg options of the video encoder for a quality ``crf`` (0 best .. 51) and an x264 preset
    name: libx264 takes them as they are; h264_nvenc gets constant quality ``cq`` and the
    matching p1 .. p7 preset. (MPEG-4 part 2 is set through its quantiser, in the writer.)"""
    if codec == "libx264":
        return {"crf": str(crf), "preset": preset}
    if codec.endswith("_nvenc"):
        return {"rc": "vbr", "cq": str(max(1, crf)), "preset": NVENC_PRESETS.get(preset, "p1"), "tune": "hq"}
    return {}


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
        from ..outputs.encode import import_av
        av = import_av()
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
