"""The outputs of ``daam-fast explain``: every file decoded by an independent decoder (Pillow for
JPEG, PNG, WebP and GIF; PyAV for MP4) and checked against the rendered frames; the writer
pool; the map store; explain_files end to end."""
from __future__ import annotations

import io
import json
import os
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from daam_fast.outputs import OUTPUTS, ExplainOptions, explain_files, load_maps
from daam_fast.outputs import writer as writer_mod
from daam_fast.outputs.encode import (compose_grid, display_size, gif_bytes, image_bytes, panel_size, save_grid,
                                      save_mp4)
from daam_fast.outputs.options import DEFAULT_OUTPUTS, parse_outputs
from daam_fast.outputs.store import MapStore
from daam_fast.outputs.writer import ImageJob, OutputWriter
from daam_fast.render import render

ALL_PICTURES = ("overlay", "grid", "gif", "mp4")


def _picture(H, W, seed=0) -> torch.Tensor:
    """A smooth random picture (3, H, W) uint8, as a photo is smooth at this scale (JPEG's case)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g) * 255, size=(H, W), mode="bicubic",
                                        align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)[0]


def _frames(L=5, H=120, W=160, seed=0):
    """Rendered overlays (L, H, W, 3) of random accumulated maps over a smooth random picture."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(1, L, 7, 9, generator=g).cumsum(1)
    return render(maps, images=_picture(H, W, seed)[None])[0].numpy()


def psnr(a, b) -> float:
    err = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if err == 0 else 10 * np.log10(255.0 ** 2 / err)


def decode(data_or_path) -> np.ndarray:
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with Image.open(src) as im:
        return np.asarray(im.convert("RGB"))


def decode_mp4(path):
    """(frames (T, H, W, 3) uint8, their times in seconds) through PyAV."""
    av = pytest.importorskip("av")
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.video[0]))
    return np.stack([f.to_ndarray(format="rgb24") for f in frames]), [float(f.pts * f.time_base) for f in frames]


def gif_frames(path):
    """(frames, durations in ms) of a GIF through Pillow."""
    out, ms = [], []
    with Image.open(path) as im:
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB")))
            ms.append(im.info["duration"])
    return np.stack(out), ms


def test_parse_outputs():
    assert parse_outputs("maps,overlay") == ("overlay", "maps")          # canonical order
    assert parse_outputs("default") == DEFAULT_OUTPUTS == ("overlay", "maps")
    assert parse_outputs("all") == OUTPUTS
    assert parse_outputs(["gif", " mp4 "]) == ("gif", "mp4")
    with pytest.raises(ValueError, match="unknown jpeg"):
        parse_outputs("overlay,jpeg")
    with pytest.raises(ValueError, match="nothing chosen"):
        parse_outputs(" , ")


def test_display_and_panel_size():
    assert display_size(480, 640) == (480, 640)
    assert display_size(1080, 1920) == (360, 640)                  # bounded longer side
    assert display_size(64, 32, min_side=128) == (256, 128)
    assert display_size(3000, 1000, max_side=0) == (3000, 1000)
    assert panel_size(480, 640) == (144, 192) and panel_size(64, 64) == (64, 64)
    with pytest.raises(ValueError):
        display_size(0, 5)


@pytest.mark.parametrize("fmt,floor", [("jpg", 35.0), ("png", float("inf")), ("webp", 35.0)])
def test_pictures_decode_as_rendered(fmt, floor):
    """JPEG and WebP at the default quality within 35 dB of the rendered overlay of a smooth
    picture (a photo), PNG exact. (Small synthetic pictures with sharp edges lose more in JPEG's
    halved colour resolution: PNG is for them.)"""
    frames = _frames(L=3, H=120, W=160)
    files = image_bytes(torch.from_numpy(frames), fmt)
    assert len(files) == 3
    for f, data in zip(frames, files):
        back = decode(data)
        assert back.shape == f.shape and psnr(back, f) >= floor
    with pytest.raises(ValueError, match="image format"):
        image_bytes(frames, "bmp")


def test_gif_one_palette_frames_and_timing(tmp_path):
    frames = _frames(L=6, H=40, W=50)
    (tmp_path / "a.gif").write_bytes(gif_bytes(frames, duration_ms=300))
    back, ms = gif_frames(tmp_path / "a.gif")
    assert back.shape == frames.shape and ms == [300] * 6
    assert np.abs(back.astype(int) - frames).mean() < 12                      # 256 colours, no dithering
    same = np.stack([frames[0]] * 2 + [frames[1]])                             # Pillow merges repeated frames,
    (tmp_path / "b.gif").write_bytes(gif_bytes(same, duration_ms=100))        # the clip's time is kept
    back, ms = gif_frames(tmp_path / "b.gif")
    assert len(back) == 2 and ms == [200, 100]


def test_mp4_frames_timing_and_pixels(tmp_path):
    frames = _frames(L=5, H=121, W=160)                                        # odd height: padded by one row
    save_mp4(frames, str(tmp_path / "a.mp4"), fps=2)
    back, times = decode_mp4(tmp_path / "a.mp4")
    assert back.shape == (5, 122, 160, 3) and times == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert all(psnr(b[:121], f) >= 32 for b, f in zip(back, frames))           # yuv420p halves the colour


def test_grid_size_and_titles(tmp_path):
    frames = _frames(L=9, H=20, W=30)
    g = compose_grid([frames[0]] * 9, [f"D_{i}" for i in range(9)], cols=4, pad=4)
    assert g.shape == (3 * (16 + 20 + 4) + 4, 4 * (30 + 4) + 4, 3)
    assert (g[:4] == 255).all() and (g[4:16] < 128).any()                       # white margin, a title
    assert np.array_equal(g[16 + 4:16 + 4 + 20, 4:34], frames[0])              # first panel placed as given
    save_grid(frames, str(tmp_path / "g.png"), titles=[f"D_{i}" for i in range(9)], suptitle="a long title " * 8,
              image=frames[0])
    W, H = Image.open(tmp_path / "g.png").size
    assert H == 20 + 2 * (16 + 20 + 4) + 4 and W > 7 * 34                # 10 panels, 7 columns; room for the title
    with pytest.raises(ValueError, match="same size"):
        compose_grid([frames[0], frames[0][:5]])


def _job(tmp_path, name, L=4, size=(90, 120), row=0):
    m = torch.rand(L, 5, 7).cumsum(0)
    pic = _picture(*size, seed=row)
    return ImageJob(f"{name}.png", name, str(tmp_path), row, pic, m, 2, "two")


def _folders(tmp_path, outs=ALL_PICTURES):
    for o in outs:
        (tmp_path / o).mkdir(exist_ok=True)


def _overlay(job) -> np.ndarray:
    return render(job.maps[None, -1:], images=job.picture[None])[0, 0].numpy()


@pytest.mark.parametrize("workers", [0, 2])
def test_writer_one_output_per_input_and_failures(tmp_path, workers):
    _folders(tmp_path)
    jobs = [_job(tmp_path, f"im{i}", row=i) for i in range(7)]
    jobs[3] = _job(tmp_path, "blocked", row=3)
    (tmp_path / "overlay" / "blocked.jpg").mkdir()                           # where the overlay should go
    with OutputWriter(ExplainOptions(), ALL_PICTURES, workers=workers) as w:
        w.submit(jobs[:4])
        w.submit(jobs[4:])
        w.fail(7, "gone.png", "no such file")
    assert [r["row"] for r in w.explained] == [0, 1, 2, 4, 5, 6]              # input order
    assert [p for p, _ in w.failed] == ["blocked.png", "gone.png"]
    assert "could not write outputs" in w.failed[0][1] and "no such file" in w.failed[1][1]
    for r in w.explained:
        stem = os.path.splitext(r["path"])[0]
        assert r["files"] == [f"overlay/{stem}.jpg", f"grid/{stem}.jpg", f"gif/{stem}.gif", f"mp4/{stem}.mp4"]
        assert all((tmp_path / f).is_file() for f in r["files"])
    assert psnr(decode(tmp_path / "overlay" / "im0.jpg"), _overlay(jobs[0])) >= 35


def test_overlays_cpu_twin_of_the_gpu_path(tmp_path):
    """render_overlays draws a batch in one render call per size on the maps' device and encodes
    the batch there (on CUDA: nvjpeg): on the CPU its files are the encoder's files of each
    image's own render; PNG gives the render back exactly."""
    jobs = [_job(tmp_path, f"o{i}", size=(40, 56) if i % 3 else (30, 20), row=i) for i in range(7)]
    got = writer_mod.render_overlays(jobs, ExplainOptions())
    assert got == [image_bytes([_overlay(j)], "jpg")[0] for j in jobs]
    for j, data in zip(jobs, writer_mod.render_overlays(jobs, ExplainOptions(image_format="png"))):
        assert np.array_equal(decode(data), _overlay(j))


def test_writer_pool_is_bounded(tmp_path, monkeypatch):
    """submit blocks while workers + 1 batches are in flight."""
    busy, peak, lock = [0], [0], threading.Lock()

    def slow(jobs, opt, outputs, store=None):
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        time.sleep(0.01)
        with lock:
            busy[0] -= 1
        return [{"path": j.path} for j in jobs]

    monkeypatch.setattr(writer_mod, "write_batch", slow)
    inflight = []
    w = OutputWriter(ExplainOptions(), ("overlay",), workers=2)
    for i in range(20):
        w.submit([_job(tmp_path, f"q{i}", row=i)])
        inflight.append(3 - w._slots._value)
    w.close()
    assert max(inflight) <= 3 and peak[0] <= 2 and len(w.explained) == 20


def test_writer_survives_an_unexpected_error(tmp_path, monkeypatch):
    """An error outside one image's write fails that batch's images with the reason; the pool goes on."""
    def broken(jobs, opt, outputs, store=None):
        if jobs[0].row == 0:
            raise MemoryError("no room")
        return [{"path": j.path} for j in jobs]

    monkeypatch.setattr(writer_mod, "write_batch", broken)
    with OutputWriter(ExplainOptions(), ("overlay",), workers=1) as w:
        for i in range(3):
            w.submit([_job(tmp_path, f"e{i}", row=i)])
    assert [p for p, _ in w.failed] == ["e0.png"] and "MemoryError: no room" in w.failed[0][1]
    assert [r["path"] for r in w.explained] == ["e1.png", "e2.png"]


def test_boxes_on_overlay(tmp_path):
    _folders(tmp_path, ("overlay",))
    job = _job(tmp_path, "b", size=(60, 80), row=1)
    job.maps = torch.zeros(4, 5, 7)
    job.maps[:, 1:3, 2:4] = 1.0
    store = MapStore(str(tmp_path / "maps"), ["a.png", "b.png"])
    opt = ExplainOptions(boxes=0.5, image_format="png")
    recs = writer_mod.write_batch([job], opt, ("overlay",), store)
    store.close()
    x0, y0, x1, y1 = recs[0]["boxes"]
    assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60 and recs[0]["box_size"] == [60, 80]
    z = load_maps(str(tmp_path / "maps"))
    assert z["boxes"][1].tolist() == recs[0]["boxes"] and z["box_size"][1].tolist() == [60, 80]
    assert not z["explained"].any()                       # boxes alone do not mark a row explained
    ov = decode(tmp_path / "overlay" / "b.png")
    assert (ov[int(y0), int(x0):int(x1)] == 255).all()                        # the box's top edge is drawn


def test_map_store_rows_in_input_order_and_streams(tmp_path):
    paths = [f"p{i}.png" for i in range(6)]
    store = MapStore(str(tmp_path / "maps"), paths, method="row", meta={"grid": [2, 3]})
    a = np.arange(6 * 2 * 2 * 3, dtype=np.float32).reshape(6, 2, 2, 3)
    store.write([4, 5], {"maps": a[4:], "targets": np.array([4, 5])}, classes=["c4", "c5"])
    store.write([0, 2, 3], {"maps": a[[0, 2, 3]], "targets": np.array([0, 2, 3])}, classes=["c0", "c2", "c3"])
    with pytest.raises(ValueError, match="do not fit"):
        store.write([1], {"maps": np.zeros((1, 2, 2, 4), np.float32), "targets": np.array([1])})
    index = store.close()
    z = load_maps(str(tmp_path))                                   # the run's folder or its maps folder
    assert z["explained"].tolist() == [True, False, True, True, True, True]
    for i in (0, 2, 3, 4, 5):
        assert np.array_equal(z["maps"][i], a[i]) and int(z["targets"][i]) == i
    assert not z["maps"][1].any()
    assert index["classes"] == ["c0", None, "c2", "c3", "c4", "c5"] and index["method"] == "row"
    assert z["index"]["arrays"]["maps"] == [6, 2, 2, 3] and z["index"]["grid"] == [2, 3]
    stream = MapStore(str(tmp_path / "stream"), meta={"fps": 25.0})         # rows as they come (a video)
    for s in (0, 2, 4):
        stream.write(range(s, s + 2), {"maps": a[s:s + 2], "time": np.arange(s, s + 2) / 25.0})
    stream.close()
    z = load_maps(str(tmp_path / "stream"))
    assert np.array_equal(z["maps"], a) and z["time"].shape == (6,) and "explained" not in z
    assert np.load(tmp_path / "stream" / "maps.npy").shape == (6, 2, 2, 3)    # plain .npy files
    with pytest.raises(FileNotFoundError, match="index.json"):
        load_maps(str(tmp_path / "nothing"))


@pytest.fixture(scope="module")
def shapes_model():
    from daam_fast.zoo import load_model
    return load_model("shapes_vit")


def _inputs(folder, n, seed, size=(96, 128)):
    """n smooth pictures as PNG files (photo-like: JPEG overlays of them are within 35 dB)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        p = os.path.join(folder, f"pic{i}.png")
        Image.fromarray(_picture(*size, seed=seed * 100 + i).permute(1, 2, 0).numpy()).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("workers", [0, 1])
def test_explain_files_every_output_decoded(tmp_path, shapes_model, workers):
    """Every file of a run, decoded by Pillow / PyAV: sizes, frame counts, timing and pixels against
    the rendered frames; the maps equal DAAM's; a corrupt input is listed with its reason."""
    from daam_fast import DAAM
    from daam_fast.io import read_image
    from daam_fast.preprocess import input_spec, prepare
    paths = _inputs(tmp_path / "in", 4, 3)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    paths.insert(2, str(tmp_path / "in" / "broken.png"))
    out = tmp_path / "out"
    s = explain_files(paths, shapes_model, str(out), batch_size=2, quiet=True, outputs="all", workers=workers,
                      gif_ms=250, mp4_fps=2)
    good = [p for p in paths if "broken" not in p]
    assert [e["path"] for e in s["explained"]] == good
    assert len(s["failed"]) == 1 and s["failed"][0]["path"].endswith("broken.png") and s["failed"][0]["reason"]
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(s))
    assert sorted(os.listdir(out)) == ["explorer.html", "gif", "grid", "maps", "mp4", "overlay", "summary.json"]
    x, _ = prepare([read_image(p) for p in good], input_spec(shapes_model))
    with DAAM(shapes_model) as daam:
        res = daam(x)
    z = load_maps(str(out))
    rows = [e["row"] for e in s["explained"]]
    assert z["explained"].tolist() == [True, True, False, True, True]
    assert torch.allclose(torch.from_numpy(np.array(z["maps"][rows])), res.maps, rtol=1e-4, atol=1e-6)
    assert z["targets"][rows].tolist() == res.targets.tolist() == [e["target"] for e in s["explained"]]
    for j, e in enumerate(s["explained"]):
        pic = read_image(e["path"])[None]                                     # (1, 3, 96, 128)
        frames = render(res.maps[j:j + 1], images=pic)[0].numpy()            # (L, 96, 128, 3)
        L = frames.shape[0]
        assert e["files"] == [f"{k}/{os.path.basename(e['path'])[:-4]}.{x}"
                              for k, x in zip(ALL_PICTURES, ("jpg", "jpg", "gif", "mp4"))]
        overlay = decode(out / e["files"][0])
        assert overlay.shape == (96, 128, 3) and psnr(overlay, frames[-1]) >= 35
        grid = decode(out / e["files"][1])                                    # the input and L panels, titled
        assert grid.shape == (20 + 16 + 96 + 8, (L + 1) * 132 + 4, 3)
        assert psnr(grid[20 + 16 + 4:20 + 16 + 100, 4 + 132:132 + 132], frames[0]) >= 30
        gif, ms = gif_frames(out / e["files"][2])
        assert gif.shape[1:] == (96, 128, 3) and sum(ms) == 250 * L and len(gif) <= L
        assert np.abs(gif[-1].astype(int) - frames[-1]).mean() < 12
        mp4, times = decode_mp4(out / e["files"][3])
        assert mp4.shape == (L, 96, 128, 3) and times == [i / 2 for i in range(L)]
        assert psnr(mp4[-1], frames[-1]) >= 28


def test_explain_files_threads_unchanged(tmp_path, shapes_model):
    """torch.get_num_threads() is the caller's before, during (from the target callable, called in
    the model's thread) and after explain_files."""
    paths = _inputs(tmp_path / "in", 5, 8)
    seen = []

    def target(logits):
        seen.append(torch.get_num_threads())
        return logits.max(-1).values
    before = torch.get_num_threads()
    s = explain_files(paths, shapes_model, str(tmp_path / "out"), batch_size=2, quiet=True, target=target,
                      outputs="overlay,gif")
    assert len(s["explained"]) == 5 and len(seen) == 3 and set(seen) == {before}
    assert torch.get_num_threads() == before


def test_explorer_names_each_image_by_its_file(tmp_path, shapes_model):
    """The html output names each image by its file name, HTML in names escaped."""
    from daam_fast.explorer import read_page
    from daam_fast.zoo.shapes import make_shapes
    names = ['cat <b>bold</b>.png', 'a&b "q" \'s\'.png', "</script><script>alert(1)</script>.png"]
    batch = make_shapes(3, seed=2)
    paths = []
    for name, img in zip(names, batch.images):
        p = tmp_path / name.replace("/", "_")
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(p, format="PNG")
        paths.append(str(p))
    s = explain_files(paths, shapes_model, str(tmp_path / "out"), quiet=True, outputs="maps,html")
    assert s["html"]["images"] == 3
    text = (tmp_path / "out" / "explorer.html").read_text()
    assert "<b>bold" not in text and "<script>alert" not in text and "</script><script>" not in text
    assert read_page(str(tmp_path / "out" / "explorer.html"))["names"] == [os.path.basename(p) for p in paths]


def test_explain_files_writes_the_summary_when_it_stops(tmp_path, shapes_model, monkeypatch):
    """A crash mid-run still leaves summary.json with what was done and why the run stopped, and
    maps/index.json; the reader thread is stopped."""
    import daam_fast.explainer as explainer_mod
    paths = _inputs(tmp_path / "in", 4, 5)
    real, calls = explainer_mod.DAAM.__call__, []

    def flaky(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(explainer_mod.DAAM, "__call__", flaky)
    with pytest.raises(KeyboardInterrupt):
        explain_files(paths, shapes_model, str(tmp_path / "out"), batch_size=2, quiet=True)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [e["path"] for e in s["explained"]] == paths[:2] and s["error"].startswith("KeyboardInterrupt")
    assert load_maps(str(tmp_path / "out"))["explained"].tolist() == [True, True, False, False]
    assert not [t for t in threading.enumerate() if t.name.startswith("daam-") and t.is_alive()]


def test_reader_error_stops_the_run_after_the_batches_before_it(tmp_path, shapes_model, monkeypatch):
    from daam_fast.outputs import run as run_mod
    paths = _inputs(tmp_path / "in", 6, 6)
    real = run_mod._batches

    def failing(*a, **k):
        for n, item in enumerate(real(*a, **k)):
            if n == 2:
                raise RuntimeError("disk gone")
            yield item
    monkeypatch.setattr(run_mod, "_batches", failing)
    with pytest.raises(RuntimeError, match="disk gone"):
        explain_files(paths, shapes_model, str(tmp_path / "out"), batch_size=2, quiet=True)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(s["explained"]) == 4 and "disk gone" in s["error"]


def test_writer_threads_sized_from_cores_and_device(monkeypatch):
    from daam_fast import _threads
    monkeypatch.setattr(_threads, "cores", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert _threads.writer_threads("cpu") == 1             # every core runs the model: one writer, beside it
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert _threads.writer_threads("cpu") == 3
    assert _threads.writer_threads("cuda") == 3
    monkeypatch.setattr(_threads, "cores", lambda: 16)
    assert _threads.writer_threads("cuda") == 4


def test_sizes_of_drawn_pictures(tmp_path):
    """Overlay at the display size (longer side <= 640), GIF / MP4 frames <= 480, grid panels <= 192."""
    _folders(tmp_path)
    job = _job(tmp_path, "big", L=2, size=(600, 800))
    rec = writer_mod.write_batch([job], ExplainOptions(), ALL_PICTURES)[0]
    assert rec["files"] == ["overlay/big.jpg", "grid/big.jpg", "gif/big.gif", "mp4/big.mp4"]
    assert Image.open(tmp_path / "overlay/big.jpg").size == (640, 480)
    assert Image.open(tmp_path / "gif/big.gif").size == (480, 360)
    assert decode_mp4(tmp_path / "mp4/big.mp4")[0].shape == (2, 360, 480, 3)
    W, H = Image.open(tmp_path / "grid/big.jpg").size
    assert W >= 3 * 192 and H < 2 * 192


def test_bad_options_start_no_thread(tmp_path, shapes_model):
    before = threading.active_count()
    for kw, msg in ((dict(daam_options={"no_such": 1}), None), (dict(outputs="overlay,movie"), "unknown"),
                    (dict(image_format="bmp"), "image_format"), (dict(quality=0), "quality"),
                    (dict(workers=-1), "workers")):
        with pytest.raises((TypeError, ValueError), match=msg):
            explain_files([], shapes_model, str(tmp_path / "o"), quiet=True, **kw)
    assert threading.active_count() == before
    with pytest.raises(TypeError):
        explain_files([], shapes_model, str(tmp_path / "o"), quiet=True, no_such_option=1)


def test_boxes_without_pictures(tmp_path, shapes_model):
    """--boxes with maps only: no picture, the boxes still in summary.json and maps/boxes.npy."""
    paths = _inputs(tmp_path / "in", 3, 4)
    s = explain_files(paths, shapes_model, str(tmp_path / "out"), ExplainOptions(outputs="maps", boxes=0.5), quiet=True)
    assert sorted(os.listdir(tmp_path / "out")) == ["maps", "summary.json"]
    z = load_maps(str(tmp_path / "out" / "maps"))
    assert z["explained"].all() and [e["files"] for e in s["explained"]] == [[], [], []]
    assert [z["boxes"][e["row"]].tolist() for e in s["explained"]] == [e["boxes"] for e in s["explained"]]
    assert all(e["box_size"] == [96, 128] and e["boxes"][2] > e["boxes"][0] for e in s["explained"])


def test_ahead_runs_one_item_ahead_and_stops():
    from daam_fast._threads import Ahead
    made = []

    def items():
        for i in range(100):
            made.append(i)
            yield i
    with Ahead(items(), "daam-test") as a:
        it = iter(a)
        assert next(it) == 0
        time.sleep(0.05)
        assert len(made) <= 3                              # the one taken, one queued, one being put
    assert not [t for t in threading.enumerate() if t.name == "daam-test" and t.is_alive()]

    def broken():
        yield 1
        raise OSError("gone")
    with Ahead(broken(), "daam-test") as a:
        got = []
        with pytest.raises(OSError, match="gone"):
            for x in a:
                got.append(x)
    assert got == [1]




def test_load_maps_reads_a_batch_run(tmp_path):
    """load_maps reads a ``daam-fast batch`` run (a maps folder per shard) as it reads the others:
    the explained rows of every shard sorted by id, and each shard memory-mapped."""
    from daam_fast.distributed.actor import _Explainer
    from daam_fast.distributed.results import load_results
    from daam_fast.distributed.spec import ModelSpec
    from daam_fast.zoo.shapes import make_shapes
    pics = make_shapes(4, seed=2).images.permute(0, 2, 3, 1).numpy()
    udf = _Explainer(ModelSpec(), str(tmp_path), "grad", None, 2, "cpu", 1)
    for ids, rows in ((["c", "a"], [pics[0], pics[1]]), (["d", "b"], [np.zeros((4, 4, 2), np.uint8), pics[2]])):
        col = np.empty(2, dtype=object)                         # one (H, W, C) uint8 picture per row
        col[0], col[1] = rows
        udf({"id": np.array(ids, dtype=object), "image": col})
    (tmp_path / "run.json").write_text(json.dumps({"map_shape": [6, 8, 8], "classes": []}))
    z, ref = load_maps(str(tmp_path)), load_results(str(tmp_path))
    assert z["index"]["ids"] == ["a", "b", "c"] and z["index"]["grid"] == [8, 8] and list(ref["ids"]) == ["a", "b", "c"]
    assert z["maps"].shape == (3, 6, 8, 8) and z["explained"].all()
    for k in ("maps", "block_maps", "targets", "logits"):
        assert np.array_equal(z[k], ref[k])
    assert len(z["shards"]) == 2 and all(isinstance(s["maps"], np.memmap) for s in z["shards"])
    by_id = {i: (s, r) for s in z["shards"] for r, i in enumerate(s["index"]["ids"])}
    for j, i in enumerate(["a", "b", "c"]):                     # each gathered row is its shard's row
        s, r = by_id[i]
        assert np.array_equal(z["maps"][j], s["maps"][r]) and z["targets"][j] == s["targets"][r]
    s, r = by_id["d"]                                           # the failed input: a zero row, target -1
    assert not s["explained"][r] and s["targets"][r] == -1 and not s["maps"][r].any()


def test_mp4_without_pyav_names_the_extra(tmp_path, shapes_model, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "av", None)                       # as if PyAV were not installed
    with pytest.raises(ImportError, match=r'pip install "daam-fast\[video\]"'):
        save_mp4(_frames(L=2), str(tmp_path / "a.mp4"))
    with pytest.raises(ImportError, match=r'pip install "daam-fast\[video\]"'):
        explain_files([], shapes_model, str(tmp_path / "o"), quiet=True, outputs="overlay,mp4")
    explain_files([], shapes_model, str(tmp_path / "o"), quiet=True, outputs="overlay,gif")    # no MP4: no PyAV
