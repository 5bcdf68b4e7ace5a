"""The MP4 file of one short H.264 clip, written in Python: one video track, one chunk, the
``moov`` before the ``mdat`` (plays while it downloads), constant frame rate, no B-frames.

Used for the kept encoder's clips (:class:`daam_fast.outputs.encode._ClipEncoder`): the boxes of
a clip of 6 frames are ~700 bytes of fixed layout, and FFmpeg's muxer, opened per file through
PyAV, cost 0.4 ms per clip (more than x264 coding its 6 frames), most of it holding the GIL
(benchmarks/NOTES.md, fourth session). The layout follows ISO/IEC 14496-12 (ISO base media
file format) and 14496-15 (``avc1`` / ``avcC``), with the boxes FFmpeg's ``mp4`` muxer writes
for such a clip; tests decode the files with FFmpeg and compare them with its own.
"""
from __future__ import annotations

import struct
from typing import Sequence

__all__ = ["h264_mp4_bytes"]

_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)   # identity
_MOVIE_TIMESCALE = 1000


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def h264_mp4_bytes(samples: Sequence[bytes], avcc: bytes, width: int, height: int, fps: int,
                   keyframes: Sequence[int] = (0,)) -> bytes:
    """An MP4 file holding ``samples`` as one H.264 track at ``fps`` frames per second.

    Args:
        samples: one coded frame each, in decoding = display order (no B-frames), NAL units
            length-prefixed (4 bytes, big-endian), as ``avcc`` declares.
        avcc: the AVCDecoderConfigurationRecord (SPS / PPS), the ``avcC`` box's payload.
        width, height: the coded size in pixels (even for yuv420p).
        fps: frames per second, a positive integer (one time unit per frame).
        keyframes: indices of the samples that start a group (IDR frames); the first must be one.

    Returns:
        the file's bytes (``ftyp``, ``moov``, ``mdat``).

    Raises:
        ValueError: no samples, a bad size or rate, or a first sample that is not a key frame.
    """
    n = len(samples)
    if n == 0:
        raise ValueError("an MP4 clip needs at least one sample")
    if not (0 < width < 65536 and 0 < height < 65536) or fps <= 0 or int(fps) != fps:
        raise ValueError(f"bad clip size {width} x {height} or rate {fps}")
    keys = sorted({int(k) for k in keyframes})
    if not keys or keys[0] != 0 or keys[-1] >= n:
        raise ValueError(f"the first sample must be a key frame, and every key frame a sample; got {keys}")
    fps = int(fps)
    duration = n * _MOVIE_TIMESCALE // fps            # in the movie's time scale (ms)
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 512), b"isom", b"iso2", b"avc1", b"mp41")
    mvhd = _full(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, _MOVIE_TIMESCALE, duration),
                 struct.pack(">IH", 0x00010000, 0x0100), b"\0" * 10, _MATRIX, b"\0" * 24, struct.pack(">I", 2))
    tkhd = _full(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, 1, 0, duration), b"\0" * 8,
                 struct.pack(">hhhH", 0, 0, 0, 0), _MATRIX, struct.pack(">II", width << 16, height << 16))
    mdhd = _full(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, fps, n), struct.pack(">HH", 0x55C4, 0))   # 'und'
    hdlr = _full(b"hdlr", 0, 0, struct.pack(">I", 0), b"vide", b"\0" * 12, b"VideoHandler\0")
    vmhd = _full(b"vmhd", 0, 1, b"\0" * 8)
    dinf = _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1)))
    avc1 = _box(b"avc1", b"\0" * 6, struct.pack(">H", 1), b"\0" * 16, struct.pack(">HH", width, height),
                struct.pack(">IIIH", 0x00480000, 0x00480000, 0, 1), b"\0" * 32, struct.pack(">Hh", 0x0018, -1),
                _box(b"avcC", avcc))
    stsd = _full(b"stsd", 0, 0, struct.pack(">I", 1), avc1)
    stts = _full(b"stts", 0, 0, struct.pack(">III", 1, n, 1))
    stss = _full(b"stss", 0, 0, struct.pack(f">I{len(keys)}I", len(keys), *[k + 1 for k in keys]))
    stsc = _full(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, n, 1))
    stsz = _full(b"stsz", 0, 0, struct.pack(f">II{n}I", 0, n, *[len(s) for s in samples]))

    def moov(offset: int) -> bytes:
        stco = _full(b"stco", 0, 0, struct.pack(">II", 1, offset))
        stbl = _box(b"stbl", stsd, stts, stss, stsc, stsz, stco)
        mdia = _box(b"mdia", mdhd, hdlr, _box(b"minf", vmhd, dinf, stbl))
        return _box(b"moov", mvhd, _box(b"trak", tkhd, mdia))

    size = sum(len(s) for s in samples)
    head = len(ftyp) + len(moov(0))                   # stco's size does not depend on the offset
    if head + 8 + size >= 1 << 32:
        raise ValueError("clip too large for a 32-bit MP4 (use daam_fast.video for long videos)")
    return b"".join([ftyp, moov(head + 8), struct.pack(">I", 8 + size), b"mdat", *samples])
