"""daam_fast.outputs.mp4: the MP4 boxes we write for a clip, against FFmpeg's own file of the
same coded frames (PyAV decodes both), and against the layout of ISO/IEC 14496-12."""
from __future__ import annotations

import struct

import numpy as np
import pytest

av = pytest.importorskip("av")

from daam_fast.outputs import encode  # noqa: E402
from daam_fast.outputs.mp4 import h264_mp4_bytes  # noqa: E402


def _boxes(data: bytes, start: int = 0, end: int = None) -> list:
    """[(kind, offset of the payload, end)] of the boxes laid end to end in data[start:end]."""
    end = len(data) if end is None else end
    out, i = [], start
    while i < end:
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        assert size >= 8 and i + size <= end, (kind, size, i, end)
        out.append((kind.decode(), i + 8, i + size))
        i += size
    assert i == end                                           # the boxes tile the range exactly
    return out


def _find(data: bytes, path: str) -> tuple:
    """(payload offset, end) of the box at 'moov/trak/...' (containers only on the way)."""
    start, end = 0, len(data)
    for part in path.split("/"):
        boxes = {k: (s, e) for k, s, e in _boxes(data, start, end)}
        assert part in boxes, (part, list(boxes))
        start, end = boxes[part]
        if part == "stsd":
            start += 8                                        # version/flags + entry count
        elif part == "avc1":
            start += 78                                       # the VisualSampleEntry's fixed fields
        elif part in ("dref",):
            start += 8
    return start, end


def _ffmpeg_clip(path, frames, fps):
    """A clip coded and muxed by FFmpeg alone: -> (its packets as stored, avcC, the file's frames)."""
    L, H, W, _ = frames.shape
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = W, H, "yuv420p"
        st.options = {"preset": "ultrafast", "crf": "20"}
        for f in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        avcc = bytes(s.codec_context.extradata)
        packets = [p for p in c.demux(s) if p.size]
        assert all(p.pts == p.dts for p in packets)               # ultrafast: no B-frames
        samples = [bytes(p) for p in packets]
        keys = [i for i, p in enumerate(packets) if p.is_keyframe]
    return samples, avcc, keys


def _decode(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(f.to_ndarray(format="rgb24"), f.key_frame, float(f.pts * f.time_base)) for f in c.decode(s)]
        return frames, s.average_rate, float(c.duration) / 1e6, s.frames, bytes(s.codec_context.extradata)


@pytest.mark.parametrize("L,H,W,fps", [(6, 64, 64, 1), (9, 38, 54, 3), (1, 16, 32, 25)])
def test_our_file_decodes_as_ffmpegs(tmp_path, L, H, W, fps):
    """The same coded frames in our MP4 and in FFmpeg's decode to the same pictures, at the same
    rate and duration, with the same key frames and the same avcC."""
    g = np.random.default_rng(L)
    frames = np.clip(g.normal(128, 40, (L, H, W, 3)).cumsum(0) / np.arange(1, L + 1)[:, None, None, None],
                     0, 255).astype(np.uint8)
    samples, avcc, keys = _ffmpeg_clip(tmp_path / "ff.mp4", frames, fps)
    (tmp_path / "ours.mp4").write_bytes(h264_mp4_bytes(samples, avcc, W, H, fps, keys))
    ff, ours = _decode(tmp_path / "ff.mp4"), _decode(tmp_path / "ours.mp4")
    assert len(ours[0]) == len(ff[0]) == L
    for (a, ka, pa), (b, kb, pb) in zip(ours[0], ff[0]):
        assert np.array_equal(a, b) and ka == kb and pa == pytest.approx(pb)
    assert ours[1] == ff[1] == fps and ours[2] == pytest.approx(ff[2]) and ours[2] == pytest.approx(L / fps)
    assert ours[3] == L and ours[4] == avcc


def test_layout():
    """ftyp, moov before mdat; the one chunk's offset is the first sample; sizes and key frames as given."""
    samples = [b"\x00\x00\x00\x03\x65\x88\x80", b"\x00\x00\x00\x02\x41\x9a", b"\x00\x00\x00\x02\x41\x9b"]
    avcc = bytes([1, 66, 192, 10, 0xFF, 0xE1, 0, 4, 0x67, 66, 192, 10, 1, 0, 2, 0x68, 0xCE])
    data = h264_mp4_bytes(samples, avcc, 48, 32, 5)
    top = _boxes(data)
    assert [k for k, _, _ in top] == ["ftyp", "moov", "mdat"]
    mdat = top[2]
    assert data[mdat[1]:mdat[2]] == b"".join(samples)
    stbl = "moov/trak/mdia/minf/stbl"
    s, e = _find(data, stbl + "/stco")
    assert struct.unpack(">III", data[s:e]) == (0, 1, mdat[1])
    s, e = _find(data, stbl + "/stsz")
    assert struct.unpack(">IIIIII", data[s:e]) == (0, 0, 3, 7, 6, 6)
    s, e = _find(data, stbl + "/stss")
    assert struct.unpack(">III", data[s:e]) == (0, 1, 1)
    s, e = _find(data, stbl + "/stts")
    assert struct.unpack(">IIII", data[s:e]) == (0, 1, 3, 1)
    s, e = _find(data, "moov/trak/mdia/mdhd")
    assert struct.unpack(">IIIII", data[s:s + 20])[3:] == (5, 3)          # time scale = fps, 3 frames
    s, e = _find(data, "moov/trak/tkhd")
    assert struct.unpack(">II", data[e - 8:e]) == (48 << 16, 32 << 16)
    s, e = _find(data, stbl + "/stsd/avc1/avcC")
    assert data[s:e] == avcc


@pytest.mark.parametrize("kw,match", [(dict(samples=[]), "at least one"), (dict(fps=0), "rate"),
                                      (dict(width=0), "size"), (dict(keyframes=(1,)), "key frame"),
                                      (dict(keyframes=(0, 5)), "key frame"), (dict(fps=2.5), "rate")])
def test_bad_arguments(kw, match):
    args = dict(samples=[b"\x00\x00\x00\x01\x65"], avcc=b"\x01", width=16, height=16, fps=1, keyframes=(0,))
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        h264_mp4_bytes(**args)


def test_kept_encoder_files_written_by_us(tmp_path):
    """save_mp4's clips from the second of a size on are our files (no FFmpeg muxer): still one
    IDR first, the clip's frames, its rate."""
    L, fps = 4, 2
    g = np.random.default_rng(3)
    clips = [np.clip(g.normal(100 + 30 * i, 30, (L, 24, 40, 3)), 0, 255).astype(np.uint8) for i in range(3)]
    for i, c in enumerate(clips):
        encode.save_mp4(c, str(tmp_path / f"{i}.mp4"), fps=fps)
    for i, c in enumerate(clips):
        data = (tmp_path / f"{i}.mp4").read_bytes()
        kinds = [k for k, _, _ in _boxes(data)]
        # FFmpeg's muxer (clip 0) writes mdat before moov (and a 'free' box); ours moov first
        assert kinds == (["ftyp", "moov", "mdat"] if i else kinds)
        frames, rate, dur, n, _ = _decode(tmp_path / f"{i}.mp4")
        assert n == L and rate == fps and dur == pytest.approx(L / fps)
        assert [k for _, k, _ in frames] == [True] + [False] * (L - 1)
        got = np.stack([f for f, _, _ in frames]).astype(np.int16)
        assert abs(got.mean() - c.mean()) < 3
