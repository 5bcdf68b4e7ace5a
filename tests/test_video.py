"""daam_fast.video: the streaming pipeline, checked on tiny generated videos.

Each test video carries its frame counter drawn as 6 binary blocks (16 x 16 pixels, white = 1)
along the top edge, so the counter survives H.264 / MPEG-4 compression and the JET overlay
(white pixels stay >= 0.8 * 255, black ones <= 0.4 * 255) and can be read back from the output.
"""
from __future__ import annotations

import os
import threading
from fractions import Fraction

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from daam_fast import DAAM, render  # noqa: E402
from daam_fast.preprocess import input_spec, prepare  # noqa: E402
from daam_fast.video.api import explain_video, iter_video_maps  # noqa: E402
from daam_fast.video.compose import _Composer  # noqa: E402
from daam_fast.video.info import VideoDecodeError, probe_video  # noqa: E402
from daam_fast.zoo import load_model  # noqa: E402
from daam_fast.zoo.shapes import make_shapes  # noqa: E402
from tolerances import assert_close  # noqa: E402

H, W, BITS, CELL = 80, 96, 6, 16


def _frame(i: int, background: np.ndarray) -> np.ndarray:
    f = background.copy()
    for b in range(BITS):
        f[:CELL, b * CELL:(b + 1) * CELL] = 255 if (i >> b) & 1 else 0
    return f


def _backgrounds(n: int) -> np.ndarray:
    imgs = make_shapes(n, seed=3).images.float()                                   # (n, 3, 64, 64)
    big = torch.nn.functional.interpolate(imgs, size=(H, W), mode="bilinear", align_corners=False)
    return big.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()   # (n, H, W, 3)


def make_video(path, n=24, fps=Fraction(24), codec="libx264", faststart=False) -> np.ndarray:
    """Write an n-frame counter video; returns the frames written (n, H, W, 3) uint8."""
    frames = np.stack([_frame(i, bg) for i, bg in enumerate(_backgrounds(n))])
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        if codec == "libx264":
            s.options = {"crf": "12"}
        else:
            s.codec_context.qscale, s.codec_context.global_quality = True, 2 * 118
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return frames


def read_video(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def read_counters(frames: np.ndarray) -> list:
    """Frame counters from (T, H, W, 3) frames: mean of each cell's interior, threshold at 153."""
    out = []
    for f in frames:
        bits = [f[4:CELL - 4, b * CELL + 4:(b + 1) * CELL - 4].mean() > 153 for b in range(BITS)]
        out.append(sum(int(v) << b for b, v in enumerate(bits)))
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread for this module's tiny model: on the shared 2-core machine, 2 OpenMP
    threads beside other jobs are several times slower, not faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return load_model("shapes_vit")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    p = tmp_path_factory.mktemp("video") / "counter.mp4"
    make_video(p, n=24)
    return p


def test_counter_reads_back_from_the_input(video):
    """The helper itself: the counters of the generated input are 0..n-1 (else later tests prove nothing)."""
    assert read_counters(read_video(video)) == list(range(24))


@pytest.mark.parametrize("codec,fps,batch", [("libx264", Fraction(24), 8), ("mpeg4", Fraction(30000, 1001), 5)],
                         ids=["h264-24fps-B8", "mpeg4-29.97fps-B5-partial-last-batch"])
def test_round_trip_frames_order_fps_size(tmp_path, model, codec, fps, batch):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(src, n=23, fps=fps, codec=codec)
    s = explain_video(str(src), str(dst), model, batch_size=batch, codec=codec, progress=False)
    assert s.frames == 23 and s.codec == codec
    info = probe_video(str(dst))
    assert (info.width, info.height) == (W, H) and s.size == (H, W)
    assert info.fps == fps and info.frames == 23
    out = read_video(dst)
    assert out.shape == (23, H, W, 3)
    assert read_counters(out) == list(range(23))       # every frame once, in order


def test_reader_frames_equal_to_ndarray(video, model):
    """The reader's shared swscale context gives the same RGB pixels as PyAV's to_ndarray, frame by frame."""
    from daam_fast.video.reader import _End, _Frames
    items = list(_Frames(str(video), input_spec(model), 7, "error").items())
    assert isinstance(items[-1], _End) and items[-1].frames == 24
    rgb = torch.cat([it[1] for it in items[:-1]]).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(rgb, read_video(video))


def test_iterator_maps_equal_image_api(video, model):
    """iter_video_maps == DAAM on the same decoded frames (another batch size: batching must not matter)."""
    got = list(iter_video_maps(str(video), model, batch_size=5))
    assert [i for i, _ in got] == list(range(24))
    frames = torch.from_numpy(read_video(video)).permute(0, 3, 1, 2)
    x, _ = prepare(frames, input_spec(model))
    with DAAM(model) as daam:
        ref = torch.cat([daam(x[s:s + 8]).maps for s in range(0, 24, 8)])
    assert_close(torch.stack([m for _, m in got]), ref, name="video maps")
    assert ref.shape[1:] == (6, 8, 8)


def test_threads_left_as_the_caller_set_them(tmp_path, video, model):
    """explain_video never changes torch's thread count: the same before, during (read from the
    target callable, called in the model's thread) and after the run."""
    seen = []

    def target(logits):
        seen.append(torch.get_num_threads())
        return logits.max(-1).values
    before = torch.get_num_threads()
    s = explain_video(str(video), str(tmp_path / "t.mp4"), model, batch_size=8, target=target, progress=False)
    assert s.frames == 24 and seen and set(seen) == {before} and torch.get_num_threads() == before


def test_direct_method_and_target(video, model):
    got = torch.stack([m for _, m in iter_video_maps(str(video), model, method="direct", batch_size=12, target=2)])
    frames = torch.from_numpy(read_video(video)).permute(0, 3, 1, 2)
    x, _ = prepare(frames, input_spec(model))
    with DAAM(model, method="direct") as daam:
        ref = daam(x, target=2).maps
    assert_close(got, ref, name="direct video maps")


def test_smoothing_is_the_documented_ema(video, model):
    s = 0.6
    raw = [m for _, m in iter_video_maps(str(video), model, batch_size=7)]
    smooth = [m for _, m in iter_video_maps(str(video), model, batch_size=7, smoothing=s)]
    state = raw[0]
    assert_close(smooth[0], raw[0], name="S_0")
    for t in range(1, len(raw)):
        state = (1 - s) * raw[t] + s * state
        assert_close(smooth[t], state, name=f"S_{t}")
    assert not torch.allclose(smooth[-1], raw[-1])


def test_maps_folder_and_layouts(tmp_path, video, model):
    """The maps go into the one layout of every run (load_maps), frame by frame, with each frame's time."""
    from daam_fast.outputs import load_maps
    dst, folder = tmp_path / "overlay.mp4", tmp_path / "maps"
    s = explain_video(str(video), str(dst), model, block="all", batch_size=10, maps_out=str(folder), progress=False)
    # 6 blocks -> 3 x 2 grid of panels 1/3 of the frame: (2 * 27, 3 * 32)
    assert s.size == (54, 96) and probe_video(str(dst)).frames == 24
    z = load_maps(str(folder))
    ref = torch.stack([m for _, m in iter_video_maps(str(video), model, batch_size=8)])
    assert_close(torch.from_numpy(np.array(z["maps"])), ref, name="video maps")
    assert z["targets"].shape == (24,) and z["maps"].dtype == np.float32
    np.testing.assert_allclose(z["time"], np.arange(24) / 24.0, atol=1e-4)
    idx = z["index"]
    assert idx["fps"] == 24.0 and idx["method"] == "grad" and idx["grid"] == [8, 8] and idx["size"] == [H, W]
    explain_video(str(video), str(tmp_path / "h.mp4"), model, maps_out=str(tmp_path / "half"), maps_dtype="float16",
                  progress=False)
    half = load_maps(str(tmp_path / "half"))["maps"]
    assert half.dtype == np.float16 and np.allclose(half, np.asarray(z["maps"]), rtol=1e-3, atol=1e-3)
    s = explain_video(str(video), str(tmp_path / "row.mp4"), model, block=[0, -1], progress=False)
    assert s.size == (H, 2 * W) and read_counters(read_video(tmp_path / "row.mp4")) == list(range(24))


@pytest.mark.parametrize("blocks,layout", [([2], "single"), ([0, 5], "row"), ([0, 1, 2, 3, 4, 5], "grid")])
def test_composer_equals_render(model, blocks, layout):
    """Each panel is exactly render()'s overlay of that block (D_L passed last, as render() requires)."""
    torch.manual_seed(0)
    maps = torch.rand(3, 6, 8, 8).cumsum(1)
    rgb = torch.randint(0, 256, (3, 3, 40, 48), dtype=torch.uint8)
    comp = _Composer(blocks, 6, layout, 1.0, "nonlinear", 40, 48)
    out = torch.from_numpy(comp(rgb, maps))
    full = render(maps, images=rgb)                               # (3, 6, 40, 48, 3)
    for j, b in enumerate(blocks):
        r, c = divmod(j, comp.cols)
        assert torch.equal(out[:, r * 40:(r + 1) * 40, c * 48:(c + 1) * 48], full[:, b]), (b, layout)


@pytest.mark.parametrize("blocks,layout", [([2], "single"), ([0, 5], "row")])
def test_composer_boxes(blocks, layout):
    """--boxes: each panel is render()'s overlay with the box of that block's own map drawn on it
    (and the box is really there: the panels differ from the plain ones)."""
    from daam_fast.boxes import boxes_from_maps, draw_boxes
    torch.manual_seed(1)
    maps = torch.rand(3, 6, 8, 8).cumsum(1)
    maps[:, :, :3] = 0                                            # a salient region smaller than the frame
    rgb = torch.randint(0, 256, (3, 3, 40, 48), dtype=torch.uint8)
    comp = _Composer(blocks, 6, layout, 1.0, "nonlinear", 40, 48, boxes=0.5)
    out = comp(rgb, maps)
    plain = _Composer(blocks, 6, layout, 1.0, "nonlinear", 40, 48)(rgb, maps)
    assert not np.array_equal(out, plain)
    full = render(maps, images=rgb).numpy()
    for j, b in enumerate(blocks):
        bx = boxes_from_maps(maps[:, b], 0.5, (40, 48)).numpy()
        for i in range(3):
            want = draw_boxes(full[i, b], bx[i])
            assert np.array_equal(out[i, :, j * 48:(j + 1) * 48], want), (b, i)
    with pytest.raises(ValueError, match=r"boxes: the threshold is a fraction of the map's maximum in \[0, 1\], got 2"):
        explain_video("in.mp4", "out.mp4", boxes=2)


def _check_partial(dst, k):
    """dst is a complete MP4 holding exactly frames 0..k-1 of the counter video."""
    info = probe_video(str(dst))
    out = read_video(dst)
    assert info.frames == k and out.shape[0] == k
    assert read_counters(out) == list(range(k))


def test_truncated_video_keeps_what_was_explained(tmp_path, model):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(src, n=30, faststart=True)                         # index first: the tail can be cut
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError) as ei:
        explain_video(str(src), str(dst), model, batch_size=8, progress=False)
    k = ei.value.frame_index
    assert 0 < k < 30 and f"frame {k}" in str(ei.value) and str(src) in str(ei.value)
    _check_partial(dst, k)


def test_corrupt_video_keeps_what_was_explained(tmp_path, model):
    from daam_fast.outputs import load_maps
    src, dst, npz = tmp_path / "in.mp4", tmp_path / "out.mp4", tmp_path / "m"
    make_video(src, n=30, faststart=True)
    data = bytearray(src.read_bytes())
    m = len(data) // 2
    data[m:m + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    src.write_bytes(bytes(data))
    with pytest.raises(VideoDecodeError) as ei:
        explain_video(str(src), str(dst), model, batch_size=4, maps_out=str(npz), progress=False)
    k = ei.value.frame_index
    assert 0 < k < 30 and f"frame {k}" in str(ei.value)
    _check_partial(dst, k)
    assert load_maps(str(npz))["maps"].shape[0] == k


def _concealed_damage(src):
    """Flip 16 bytes at offsets through the file until the decoder decodes every frame but flags
    one as corrupt (damage it concealed); return the flagged indices, or skip if no offset does."""
    base = src.read_bytes()
    for off in np.linspace(0.3, 0.7, 9):
        d = bytearray(base)
        m = int(len(d) * off)
        d[m:m + 16] = bytes(255 - b for b in d[m:m + 16])
        src.write_bytes(bytes(d))
        try:
            with av.open(str(src)) as c:
                flags = [f.is_corrupt for f in c.decode(c.streams.video[0])]
        except av.FFmpegError:
            continue
        if len(flags) == 30 and any(flags):
            return [i for i, f in enumerate(flags) if f]
    pytest.skip("no offset gave a concealed (flagged) corrupt frame with this FFmpeg build")


def test_concealed_corrupt_frame(tmp_path, model):
    """A frame the decoder flags as corrupt stops the run (default) or is kept (corrupt='keep')."""
    src = tmp_path / "in.mp4"
    make_video(src, n=30, faststart=True)
    flagged = _concealed_damage(src)
    from daam_fast.video.reader import _Frames
    for _ in range(8):      # every time: frame-threaded decoding lost the flag in ~40 % of runs
        r = _Frames(str(src), input_spec(model), 8, "keep")
        assert [i for it in r.items() if isinstance(it, tuple) for i in it[3]] == flagged
    with pytest.raises(VideoDecodeError, match="corrupt") as ei:
        explain_video(str(src), str(tmp_path / "a.mp4"), model, batch_size=8, progress=False)
    assert ei.value.frame_index == flagged[0]
    if flagged[0]:
        assert probe_video(str(tmp_path / "a.mp4")).frames == flagged[0]
    s = explain_video(str(src), str(tmp_path / "b.mp4"), model, batch_size=8, corrupt="keep", progress=False)
    assert s.frames == 30 and s.corrupt_frames == flagged and probe_video(str(tmp_path / "b.mp4")).frames == 30


def test_not_a_video(tmp_path, model):
    src, dst = tmp_path / "junk.mp4", tmp_path / "out.mp4"
    src.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match="frame 0") as ei:
        explain_video(str(src), str(dst), model, progress=False)
    assert ei.value.frame_index == 0 and not dst.exists()
    with pytest.raises(VideoDecodeError, match="no such file"):
        list(iter_video_maps(str(tmp_path / "missing.mp4"), model))


@pytest.mark.parametrize("kw,msg", [(dict(batch_size=0), "batch_size"), (dict(smoothing=1.0), "smoothing"),
                                    (dict(block=6), "out of range"), (dict(block="some"), "block"),
                                    (dict(block=[]), "empty"), (dict(mode="log"), "mode"),
                                    (dict(layout="single", block=[0, 1]), "single"), (dict(crf=80), "crf"),
                                    (dict(target=1.5), "target"), (dict(maps_out="m.npz"), "folder"),
                                    (dict(corrupt="skip"), "corrupt"), (dict(preset="turbo"), "preset")])
def test_bad_arguments(tmp_path, video, model, kw, msg):
    with pytest.raises(ValueError, match=msg):
        explain_video(str(video), str(tmp_path / "o.mp4"), model, progress=False, **kw)
    with pytest.raises(ValueError, match="output must be"):
        explain_video(str(video), str(tmp_path / "o.avi"), model, progress=False)
    with pytest.raises(ValueError, match="smoothing"):       # raised at the call, before any next()
        iter_video_maps(str(video), model, smoothing=-0.1)


def test_breaking_out_stops_the_reader(video, model):
    gen = iter_video_maps(str(video), model, batch_size=2, queue_size=1)
    i, maps = next(gen)
    assert i == 0 and maps.shape == (6, 8, 8)
    gen.close()
    assert not [t for t in threading.enumerate() if t.name == "daam-video-reader" and t.is_alive()]


def test_cli(tmp_path, video, capsys):
    from daam_fast.cli import main
    from daam_fast.outputs import load_maps
    out, npz = tmp_path / "out.mp4", tmp_path / "maps"
    assert main(["video", str(video), "--out", str(out), "--quiet", "--batch-size", "8", "--blocks", "0", "-1",
                 "--maps", str(npz), "--smoothing", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "24 frames" in printed and "audio: none in the input" in printed
    assert probe_video(str(out)).width == 2 * W and load_maps(str(npz))["maps"].shape == (24, 6, 8, 8)
    assert main(["video", str(video), "--out", str(out), "--quiet"]) == 2            # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["video", str(video), "--out", str(out), "--quiet", "--overwrite", "--boxes", "0.5"]) == 0
    assert probe_video(str(out)).width == W
    cut = tmp_path / "cut.mp4"
    make_video(cut, n=30, faststart=True)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    assert main(["video", str(cut), "--out", str(tmp_path / "p.mp4"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "decoding failed at frame" in err and os.path.exists(tmp_path / "p.mp4")
    assert main(["video", str(video), "--out", str(tmp_path / "x.mp4"), "--blocks", "x", "--quiet"]) == 2
    capsys.readouterr()
    assert main(["video", str(video), "--out", str(tmp_path / "no_dir" / "x.mp4"), "--quiet"]) == 1   # not writable
    assert "writing" in capsys.readouterr().err


def test_cli_error_mid_run_keeps_the_frames(tmp_path, video, capsys, monkeypatch):
    """A ValueError after frames were written exits 1 and says the output holds them (not 2, 'bad usage')."""
    from daam_fast.cli import main
    import daam_fast.explainer as explainer_mod
    real, calls = explainer_mod.DAAM.__call__, []

    def flaky(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("a frame the model refuses")
        return real(self, *a, **k)

    monkeypatch.setattr(explainer_mod.DAAM, "__call__", flaky)
    out = tmp_path / "o.mp4"
    assert main(["video", str(video), "--out", str(out), "--quiet", "--batch-size", "8"]) == 1
    err = capsys.readouterr().err
    assert "a frame the model refuses" in err and "holds the frames written before it" in err
    assert probe_video(str(out)).frames == 8


# ---------------------------------------------------------------------------- sound and rotation
SR = 16000


def _tone(n: int, start: int = 0, hz: float = 440.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(start, start + n) / SR)).astype(np.float32)


def make_av_video(path, acodec=None, n=30, fps=10, audio_seconds=None, rotation=0) -> None:
    """n frames of 64 x 48 (a white 12 x 12 square at the stored top-left) and, with ``acodec``,
    a 440 Hz mono tone at 16 kHz lasting ``audio_seconds`` (default: as long as the video)."""
    total = int(round((audio_seconds if audio_seconds is not None else n / fps) * SR))
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        if rotation:
            v.set_display_rotation(rotation)
        a = None
        if acodec:
            a = c.add_stream(acodec, rate=SR)
            a.codec_context.layout = "mono"
        chunk, done = SR // fps, 0
        for i in range(max(n, -(-total // chunk))):
            if i < n:
                img = np.zeros((48, 64, 3), np.uint8)
                img[:12, :12] = 255
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts = i
                for p in v.encode(f):
                    c.mux(p)
            if a is not None and done < total:
                k = min(chunk, total - done)
                tone = _tone(k, done)
                data, fmt = (tone[None], "fltp") if acodec == "aac" else ((tone * 32767).astype(np.int16)[None], "s16")
                af = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
                af.sample_rate, af.pts = SR, done
                done += k
                for p in a.encode(af):
                    c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            for p in a.encode(None):
                c.mux(p)


def _streams(path):
    with av.open(str(path)) as c:
        return {s.type: (s.codec_context.name, float(s.duration * s.time_base) if s.duration else None)
                for s in c.streams}


def _decoded_audio(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0])])


def test_audio_copied_in_step(tmp_path, model):
    src, dst = tmp_path / "a.mp4", tmp_path / "o.mp4"
    make_av_video(src, "aac")
    assert probe_video(str(src)).audio == "aac"
    s = explain_video(str(src), str(dst), model, progress=False)
    assert s.audio == "copied aac" and s.frames == 30
    st = _streams(dst)
    assert st["audio"][0] == "aac" and abs(st["audio"][1] - st["video"][1]) < 0.07, st
    a, b = _decoded_audio(src), _decoded_audio(dst)
    n = min(len(a), len(b))
    assert n > 0.9 * len(a)
    np.testing.assert_array_equal(b[:n], a[:n])                  # packets copied, not re-encoded


def test_audio_reencoded_when_mp4_cannot_hold_it(tmp_path, model):
    src, dst = tmp_path / "a.mov", tmp_path / "o.mp4"
    make_av_video(src, "pcm_s16le")
    s = explain_video(str(src), str(dst), model, progress=False)
    assert s.audio == "re-encoded pcm_s16le to aac"
    b = _decoded_audio(dst)
    assert abs(len(b) / SR - 3.0) < 0.15
    spec = np.abs(np.fft.rfft(b[2048:2048 + 16384]))
    assert abs(np.argmax(spec) * SR / 16384 - 440) < 5           # the same tone


def test_audio_cut_at_the_last_frame_and_left_out_on_request(tmp_path, model):
    src = tmp_path / "long.mp4"
    make_av_video(src, "aac", n=20, audio_seconds=5.0)              # 2 s of video, 5 s of sound
    s = explain_video(str(src), str(tmp_path / "o.mp4"), model, progress=False)
    st = _streams(tmp_path / "o.mp4")
    assert s.frames == 20 and st["audio"][1] <= 2.0 + 1024 / SR + 1e-6, st
    s = explain_video(str(src), str(tmp_path / "n.mp4"), model, progress=False, audio=False)
    assert s.audio == "left out (audio=False)" and "audio" not in _streams(tmp_path / "n.mp4")
    s = explain_video(str(_silent_video(tmp_path)), str(tmp_path / "m.mp4"), model, progress=False)
    assert s.audio == "none in the input"


def _silent_video(tmp_path):
    p = tmp_path / "silent.mp4"
    make_av_video(p)
    return p


def test_audio_failure_keeps_the_video(tmp_path, model, monkeypatch):
    from daam_fast.video.codec import _Audio
    src = tmp_path / "a.mp4"
    make_av_video(src, "aac")

    def broken(self, out, t_end):
        raise RuntimeError("demuxer exploded")

    monkeypatch.setattr(_Audio, "until", broken)
    with pytest.warns(RuntimeWarning, match="audio was left out"):
        s = explain_video(str(src), str(tmp_path / "o.mp4"), model, progress=False)
    assert s.frames == 30 and s.audio.startswith("failed: RuntimeError: demuxer exploded")
    assert len(read_video(tmp_path / "o.mp4")) == 30


@pytest.mark.parametrize("rotation,corner", [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")])
def test_rotated_video_read_upright(tmp_path, rotation, corner):
    """A stored top-left square, shown after a counter-clockwise display rotation."""
    from daam_fast.video.reader import _Frames
    src = tmp_path / "r.mp4"
    make_av_video(src, n=3, rotation=rotation)
    info = probe_video(str(src))
    assert info.rotation == rotation % 360
    assert (info.height, info.width) == ((48, 64) if rotation == 180 else (64, 48))
    first = next(iter(_Frames(str(src), input_spec(load_model("shapes_vit")), 3, "error").items()))
    rgb = first[1][0].permute(1, 2, 0).numpy().astype(float)      # (H, W, 3) of frame 0
    Hh, Ww = rgb.shape[:2]
    corners = {"top-left": rgb[:8, :8], "top-right": rgb[:8, Ww - 8:], "bottom-left": rgb[Hh - 8:, :8],
               "bottom-right": rgb[Hh - 8:, Ww - 8:]}
    assert (Hh, Ww) == (info.height, info.width)
    assert corners[corner].mean() > 200 and all(v.mean() < 50 for k, v in corners.items() if k != corner)


def test_cli_no_audio(tmp_path, capsys):
    from daam_fast.cli import main
    src = tmp_path / "a.mp4"
    make_av_video(src, "aac")
    assert main(["video", str(src), "--out", str(tmp_path / "o.mp4"), "--quiet"]) == 0
    assert "audio: copied aac" in capsys.readouterr().out
    assert main(["video", str(src), "--out", str(tmp_path / "n.mp4"), "--quiet", "--no-audio"]) == 0
    assert "audio: left out" in capsys.readouterr().out and "audio" not in _streams(tmp_path / "n.mp4")


@pytest.mark.parametrize("encoder,name", [("flac", "flac"), ("libmp3lame", "mp3")])
def test_audio_copied_from_other_containers(tmp_path, model, encoder, name):
    if encoder not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {encoder} encoder")
    src = tmp_path / "a.mkv"
    make_av_video(src, encoder)
    s = explain_video(str(src), str(tmp_path / "o.mp4"), model, progress=False)
    assert s.audio == f"copied {name}"
    assert abs(len(_decoded_audio(tmp_path / "o.mp4")) / SR - 3.0) < 0.1


def _frame_times(path):
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(c.streams.video[0])]


def test_variable_frame_rate_timing_kept(tmp_path, model):
    """Phones record variable frame rates: each output frame keeps its input time (30 fps for
    20 frames, then 15 fps), and the maps file says when each frame is shown."""
    from daam_fast.outputs import load_maps
    src, dst, npz = tmp_path / "vfr.mp4", tmp_path / "o.mp4", tmp_path / "m"
    want = [i * 0.033 if i < 20 else 19 * 0.033 + (i - 19) * 0.066 for i in range(40)]
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = s.time_base = Fraction(1, 1000)
        for i, t in enumerate(want):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 5 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = round(t * 1000), Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    got_in = _frame_times(src)
    s = explain_video(str(src), str(dst), model, progress=False, batch_size=7, maps_out=str(npz))
    got = _frame_times(dst)
    assert s.frames == 40 and len(got) == 40
    np.testing.assert_allclose(np.array(got) - got[0], np.array(got_in) - got_in[0], atol=1e-3)
    np.testing.assert_allclose(load_maps(str(npz))["time"], np.array(got_in) - got_in[0], atol=1e-3)


def test_writer_failure_is_raised(tmp_path, video, model):
    """An output that cannot be written stops the run with the reason; no thread is left behind."""
    with pytest.raises(RuntimeError, match=r"writing .* failed after \d+ frames: FileNotFoundError"):
        explain_video(str(video), str(tmp_path / "no_such_dir" / "o.mp4"), model, batch_size=4, progress=False)
    assert not [t for t in threading.enumerate() if t.name.startswith("daam-video") and t.is_alive()]
