"""The per-image outputs of ``daam-fast explain`` (daam_fast.outputs): right files, right pictures,
nothing lost. Fast tests only (the shipped 64 x 64 model; throughput is benchmarks/bench_cli.py's job)."""
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

from daam_fast.outputs import (DEFAULT_OUTPUTS, FILES, OUTPUTS, ImageJob, MapStore, OutputWriter, WriteOptions,
                               compose_grid, display_size, explain_files, load_maps, panel_size, parse_outputs,
                               png_bytes, save_gif, save_grid)
from daam_fast.outputs import writer as writer_mod
from daam_fast.render import render


def _frames(L=5, H=37, W=52, seed=0):
    """Rendered overlays (L, H, W, 3) of random accumulated maps over a smooth random picture."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(1, L, 7, 9, generator=g).cumsum(1)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g) * 255, size=(H, W), mode="bilinear",
                                          align_corners=False).round().to(torch.uint8)
    return render(maps, images=img)[0].numpy()


def test_parse_outputs():
    assert parse_outputs("maps,overlay") == ("overlay", "maps")          # canonical order
    assert parse_outputs("default") == DEFAULT_OUTPUTS == ("overlay", "maps")
    assert parse_outputs("all") == OUTPUTS
    assert parse_outputs(["gif", " mp4 "]) == ("gif", "mp4")
    with pytest.raises(ValueError, match="unknown jpeg"):
        parse_outputs("overlay,jpeg")
    with pytest.raises(ValueError, match="nothing chosen"):
        parse_outputs(" , ")


@pytest.mark.parametrize("shape", [(37, 52, 3), (5, 1, 3), (16, 16), (9, 11, 4)], ids=["rgb-odd", "one-column", "grey", "rgba"])
def test_png_round_trip(shape):
    a = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(png_bytes(a))))
    assert back.shape == a.shape and np.array_equal(back, a)


def test_display_and_panel_size():
    assert display_size(480, 640) == (480, 640)
    assert display_size(1080, 1920) == (360, 640)                  # bounded longer side
    assert display_size(64, 64) == (64, 64)                        # small pictures keep their size
    assert display_size(64, 32, min_side=128) == (256, 128)
    assert display_size(3000, 1000, max_side=0) == (3000, 1000)
    assert panel_size(480, 640) == (144, 192) and panel_size(64, 64) == (64, 64)
    with pytest.raises(ValueError):
        display_size(0, 5)


def test_gif_one_palette_matches_render(tmp_path):
    frames = _frames()
    save_gif(frames, str(tmp_path / "f.gif"))
    im = Image.open(tmp_path / "f.gif")
    assert im.n_frames == frames.shape[0]
    for i in range(frames.shape[0]):
        im.seek(i)
        got = np.asarray(im.convert("RGB")).astype(np.int16)
        err = np.abs(got - frames[i].astype(np.int16))
        assert got.shape == frames[i].shape
        assert err.mean() < 10 and np.percentile(err, 99) < 40, (i, err.mean(), np.percentile(err, 99))
    assert "duration" in im.info and im.info.get("loop") == 0


def _read_mp4(path):
    import av
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        frames, keys = [], []
        for f in c.decode(st):
            frames.append(f.to_ndarray(format="rgb24"))
            keys.append(f.key_frame)
        return np.stack(frames), keys, st.average_rate, float(c.duration) / 1e6, bytes(st.codec_context.extradata)


def test_mp4_clips_from_a_kept_encoder_decode_alone(tmp_path):
    """From the second clip of a size on, the clips come from one kept x264 encoder: each file
    still holds its own frames only (IDR first), at its fps, in an MP4 with an avcC record, as
    close to the frames as a clip coded alone."""
    from daam_fast.outputs import encode
    L, fps = 5, 2
    clips = [np.clip(_frames(L=L, H=37, W=53, seed=s).astype(np.int16) + 20 * s - 40, 0, 255).astype(np.uint8)
             for s in range(5)]
    key = (54, 38, L, fps, encode.MP4_PRESET, 20)
    assert encode._ClipEncoder._seen.get(key, 0) == 0
    errs = []
    for i, c in enumerate(clips):
        encode.save_mp4(c, str(tmp_path / f"{i}.mp4"), fps=fps)
        got, keys, rate, dur, extradata = _read_mp4(tmp_path / f"{i}.mp4")
        assert got.shape == (L, 38, 54, 3) and keys == [True] + [False] * (L - 1)
        assert rate == fps and dur == pytest.approx(L / fps)
        assert extradata[0] == 1                                # avcC, not Annex B
        errs.append(np.abs(got[:, :37, :53].astype(np.int16) - c).mean())
    assert key in encode._ClipEncoder._local.encoders             # clips 1.. came from the kept encoder
    # chroma subsampling of saturated JET colours on tiny frames: ~7 levels either way (clip 0 was coded alone)
    assert max(errs) < 12 and max(errs[1:]) < 1.2 * errs[0] + 0.5, errs


def test_mp4_kept_encoder_falls_back_and_threads(tmp_path, monkeypatch):
    """A kept encoder that misbehaves is dropped and the clip coded alone; threads keep their own."""
    from daam_fast.outputs import encode
    L = 4
    base = _frames(L=L, H=30, W=40, seed=7)
    clips = [np.clip(base.astype(np.int16) + 12 * i - 60, 0, 255).astype(np.uint8) for i in range(10)]

    def run(idx):
        for i in idx:
            encode.save_mp4(clips[i], str(tmp_path / f"{i}.mp4"))
    ts = [threading.Thread(target=run, args=(range(k, 10, 2),)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i, c in enumerate(clips):
        got = _read_mp4(tmp_path / f"{i}.mp4")[0]
        assert got.shape == (L, 30, 40, 3) and np.abs(got.astype(np.int16) - c).mean() < 12, i
        assert abs(got.mean() - c.mean()) < 3, i                 # its own clip (they differ by 12 levels)

    def broken(self, arr, path):
        raise encode._ClipError("test")
    monkeypatch.setattr(encode._ClipEncoder, "write", broken)
    encode.save_mp4(clips[3], str(tmp_path / "fallback.mp4"))
    got = _read_mp4(tmp_path / "fallback.mp4")[0]
    assert np.abs(got.astype(np.int16) - clips[3]).mean() < 12 and abs(got.mean() - clips[3].mean()) < 3
    assert (40, 30, L, 1, encode.MP4_PRESET, 20) not in encode._ClipEncoder._local.encoders
    assert encode._ClipEncoder.broken is None

    def unsupported(self, arr, path):                     # e.g. a PyAV that cannot set the encoder's options
        raise AttributeError("no such option")
    monkeypatch.setattr(encode._ClipEncoder, "write", unsupported)
    monkeypatch.setattr(encode._ClipEncoder, "broken", None)
    for i in (4, 5):
        encode.save_mp4(clips[i], str(tmp_path / f"alone{i}.mp4"))
        got = _read_mp4(tmp_path / f"alone{i}.mp4")[0]
        assert got.shape == (L, 30, 40, 3) and abs(got.mean() - clips[i].mean()) < 3
    assert "no such option" in encode._ClipEncoder.broken             # then every clip is coded alone
    monkeypatch.undo()                                     # the real write again; broken back to None
    with pytest.raises(OSError):                           # a file that cannot be written fails the image
        encode.save_mp4(clips[6], str(tmp_path / "no_such_dir" / "x.mp4"))
    assert encode._ClipEncoder.broken is None


def test_nal_units_and_length_prefix():
    from daam_fast.outputs.encode import _length_prefixed, _nal_units
    data = b"\x00\x00\x00\x01\x67\x42\x00" + b"\x03" + b"\x00\x00\x01\x68\xce" + b"\x00\x00\x00\x01\x65\x88\x84\x00\x03"
    assert _nal_units(data) == [b"\x67\x42\x00\x03", b"\x68\xce", b"\x65\x88\x84\x00\x03"]
    assert _length_prefixed(data) == (b"\x00\x00\x00\x04\x67\x42\x00\x03" + b"\x00\x00\x00\x02\x68\xce"
                                      + b"\x00\x00\x00\x05\x65\x88\x84\x00\x03")


def test_grid_text_as_pil_draws_it():
    """The titles are cached patches: the grid equals the same grid with PIL drawing every text."""
    from PIL import ImageDraw
    from daam_fast.outputs import encode
    frames = _frames(L=8, H=40, W=50)
    titles = ["input"] + [f"D_{i + 1}" for i in range(7)]
    sup = "a_long_file_name.png: class 7 (grad)"
    for _ in range(2):                                          # the second time from the cache
        got = compose_grid(list(frames), titles, sup, cols=4)
    # the layout of compose_grid (pad 4, title strip 16, suptitle strip 20), text by PIL
    want = np.full((20 + 2 * (16 + 40 + 4) + 4, max(4 * 54 + 4, int(encode._font().getlength(sup)) + 12), 3), 255,
                   np.uint8)
    for j in range(8):
        r, c = divmod(j, 4)
        want[20 + r * 60 + 20:20 + r * 60 + 60, 4 + c * 54:4 + c * 54 + 50] = frames[j]
    im = Image.fromarray(want)
    draw = ImageDraw.Draw(im)
    for j, t in enumerate(titles):
        r, c = divmod(j, 4)
        draw.text((4 + c * 54 + 2, 20 + r * 60 + 4), t, fill=(0, 0, 0), font=encode._font())
    draw.text((6, 4), sup, fill=(0, 0, 0), font=encode._font())
    np.testing.assert_array_equal(got, np.asarray(im))


def test_glyph_text_equals_pil():
    """Text composed from cached glyphs (the grid's per-image title) has PIL's pixels: kerning,
    overlapping glyphs (f_j, T., //), a glyph left of the origin (j first), any printable ASCII."""
    import random
    import string
    from daam_fast.outputs import encode
    if encode._glyph_text("a") is None:
        pytest.skip("this Pillow's default font is not FreeType with the basic layout")
    rng = random.Random(0)
    texts = ["shape_00012.png: class circle (grad)", "ffffjjj", "f_j T. //,, AVAWAY", "j", " ", "Te'st\\"]
    texts += ["".join(rng.choice(string.printable[:95]) for _ in range(rng.randint(1, 48))) for _ in range(200)]
    for t in texts:
        patch, advance = encode._glyph_text(t)
        np.testing.assert_array_equal(patch, encode._text_patch(t), err_msg=repr(t))
        assert advance == encode._font().getlength(t), t
    assert encode._glyph_text("caf\u00e9") is None and encode._glyph_text("a\tb") is None   # PIL draws those


def test_grid_size_and_titles(tmp_path):
    frames = _frames(L=9, H=20, W=30)
    panels = [frames[0]] * 9
    g = compose_grid(panels, [f"D_{i}" for i in range(9)], cols=4, pad=4)
    assert g.shape == (3 * (16 + 20 + 4) + 4, 4 * (30 + 4) + 4, 3)
    assert (g[:, :, :][:4] == 255).all()                                # white margin
    assert g[16 + 4:16 + 4 + 20, 4:34].tolist() == frames[0].tolist()    # first panel placed as given
    save_grid(frames, str(tmp_path / "g.png"), titles=[f"D_{i}" for i in range(9)], suptitle="a long title " * 8,
              image=frames[0])
    W, H = Image.open(tmp_path / "g.png").size
    assert H == 20 + 2 * (16 + 20 + 4) + 4 and W > 7 * 34                # 10 panels, 7 columns; room for the title
    with pytest.raises(ValueError, match="same size"):
        compose_grid([frames[0], frames[0][:5]])


def _job(tmp_path, name, L=4, size=(40, 56), row=0):
    m = torch.rand(L, 5, 7).cumsum(0)
    pic = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
    return ImageJob(f"{name}.png", name, str(tmp_path), row, pic, m, 2, "two")


def test_grid_same_with_and_without_animations(tmp_path):
    """Small pictures take the grid's panels from the GIF / MP4 frames: the grid is the same file."""
    job = _job(tmp_path, "a")
    _folders(tmp_path)
    grids = []
    for outs in (("grid",), ("grid", "gif", "mp4")):
        writer_mod.write_image(job, WriteOptions(outputs=outs))
        grids.append((tmp_path / "grid/a.png").read_bytes())
    assert grids[0] == grids[1]


def test_animations_drawn_a_batch_at_a_time_are_the_same(tmp_path):
    """write_images draws the GIF / MP4 frames of small pictures one render call per size
    (render_animations): the files equal those of images drawn one at a time; sizes apart and
    pictures above ANIM_BATCH_PIXELS are drawn alone."""
    jobs = [_job(tmp_path, f"b{i}", row=i) for i in range(3)] + [_job(tmp_path, "odd", size=(33, 20), row=3),
                                                                  _job(tmp_path, "c3", size=(40, 56), row=4)]
    jobs.append(_job(tmp_path, "big", size=(300, 260), row=5))
    opt = WriteOptions(outputs=("overlay", "grid", "gif", "mp4"))
    anims = writer_mod.render_animations(jobs, opt)
    assert [a is not None for a in anims] == [True, True, True, False, True, False]   # 'odd' alone in its size
    one = {}
    for sub, batch in (("alone", False), ("batch", True)):
        (tmp_path / sub).mkdir()
        _folders(tmp_path / sub)
        js = [ImageJob(j.path, j.stem, str(tmp_path / sub), j.row, j.picture, j.maps, j.target, j.label) for j in jobs]
        res = writer_mod.write_images(js, opt) if batch else [writer_mod.write_image(j, opt) for j in js]
        assert not [r for r in res if isinstance(r, Exception)]
        one[sub] = {f"{k}/{j.stem}": (tmp_path / sub / FILES[k][0] / f"{j.stem}{FILES[k][1]}").read_bytes()
                    for j in jobs for k in ("overlay", "grid", "gif")}
    assert one["alone"] == one["batch"]
    _folders(tmp_path, ("gif",))
    drawn = writer_mod.write_image(jobs[0], WriteOptions(outputs=("gif",)), anim=anims[0])
    assert drawn["files"] == ["gif/b0.gif"]


def _folders(tmp_path, outs=("overlay", "grid", "gif", "mp4")):
    for o in outs:
        (tmp_path / FILES[o][0]).mkdir(exist_ok=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_writer_one_output_per_input_and_failures(tmp_path, workers):
    _folders(tmp_path)
    jobs = [_job(tmp_path, f"im{i}", row=i) for i in range(7)]
    jobs[3] = _job(tmp_path, "blocked", row=3)
    (tmp_path / "overlay" / "blocked.png").mkdir()                           # where the overlay should go
    opt = WriteOptions(outputs=("overlay", "maps", "grid", "gif", "mp4"))
    with OutputWriter(opt, workers=workers, queue_size=2) as w:
        w.submit(jobs[:4])
        w.submit(jobs[4:])
        w.fail(7, "gone.png", "no such file")
    assert [r["path"] for r in w.explained] == [f"im{i}.png" for i in (0, 1, 2, 4, 5, 6)]   # input order
    assert [r["row"] for r in w.explained] == [0, 1, 2, 4, 5, 6]
    assert [p for p, _ in w.failed] == ["blocked.png", "gone.png"]
    assert "could not write outputs" in w.failed[0][1] and "no such file" in w.failed[1][1]
    for r in w.explained:
        stem = os.path.splitext(r["path"])[0]
        assert r["files"] == [f"overlay/{stem}.png", f"gif/{stem}.gif", f"mp4/{stem}.mp4", f"grid/{stem}.png"]
        assert all((tmp_path / f).is_file() for f in r["files"])
    ov = np.asarray(Image.open(tmp_path / "overlay" / "im0.png"))
    want = render(jobs[0].maps[None, -1:], images=jobs[0].picture[None])[0, 0].numpy()
    assert np.array_equal(ov, want)                                         # the kernel's frame, losslessly


def test_overlays_rendered_together_equal_one_by_one(tmp_path):
    """render_overlays draws a batch in one call per size; each frame equals the image's own render."""
    jobs = [_job(tmp_path, f"o{i}", size=(40, 56) if i % 3 else (30, 20), row=i) for i in range(7)]
    got = writer_mod.render_overlays(jobs, WriteOptions(outputs=("overlay",)))
    for j, g in zip(jobs, got):
        assert np.array_equal(g, render(j.maps[None, -1:], images=j.picture[None])[0, 0].numpy())
    assert writer_mod.render_overlays(jobs, WriteOptions(outputs=("maps",))) == [None] * 7
    # with a GIF at the display size the overlay is the animation's last frame: nothing drawn twice
    assert writer_mod.render_overlays(jobs, WriteOptions(outputs=("overlay", "gif"))) == [None] * 7


def test_writer_queue_is_bounded(tmp_path, monkeypatch):
    seen, lock = [], threading.Lock()

    def slow(jobs, opt, store=None, pool=None):
        time.sleep(0.01)
        return [{"path": j.path} for j in jobs]

    monkeypatch.setattr(writer_mod, "write_images", slow)
    w = OutputWriter(WriteOptions(), workers=1, queue_size=3)
    for i in range(20):
        w.submit([_job(tmp_path, f"q{i}", row=i)])
        with lock:
            seen.append(w._q.qsize())
    w.close()
    assert max(seen) <= 3 and len(w.explained) == 20


def test_writer_survives_an_unexpected_error(tmp_path, monkeypatch):
    """An error outside one image's write fails that batch's images with the reason; the thread goes on."""
    def broken(jobs, opt, store=None, pool=None):
        if jobs[0].row == 0:
            raise MemoryError("no room")
        return [{"path": j.path} for j in jobs]

    monkeypatch.setattr(writer_mod, "write_images", broken)
    with OutputWriter(WriteOptions(), workers=1, queue_size=1) as w:
        for i in range(3):
            w.submit([_job(tmp_path, f"e{i}", row=i)])
    assert [p for p, _ in w.failed] == ["e0.png"] and "MemoryError: no room" in w.failed[0][1]
    assert [r["path"] for r in w.explained] == ["e1.png", "e2.png"]


def test_written_side_by_side_in_the_callers_turn(tmp_path):
    """workers=0 with turn_threads=2: the same files as one by one, written before submit returns."""
    _folders(tmp_path)
    jobs = [_job(tmp_path, f"t{i}", row=i) for i in range(5)]
    opt = WriteOptions(outputs=("overlay", "gif", "grid"))
    with OutputWriter(opt, workers=0, turn_threads=2) as w:
        w.submit(jobs)
        assert len(w.explained) == 5                                        # written in the call
        assert w._pool is not None
    one = tmp_path / "one"
    one.mkdir()
    _folders(one)
    for j in jobs:
        j.out = str(one)
    with OutputWriter(opt, workers=0) as w1:
        w1.submit(jobs)
    for r in w.explained:
        for f in r["files"]:
            assert (tmp_path / f).read_bytes() == (one / f).read_bytes(), f


def test_boxes_on_overlay(tmp_path):
    _folders(tmp_path, ("overlay",))
    job = _job(tmp_path, "b", size=(60, 80), row=1)
    job.maps = torch.zeros(4, 5, 7)
    job.maps[:, 1:3, 2:4] = 1.0
    store = MapStore(str(tmp_path / "maps"), ["a.png", "b.png"])
    rec = writer_mod.write_image(job, WriteOptions(outputs=("overlay", "maps"), boxes=0.5), store)
    store.close()
    x0, y0, x1, y1 = rec["boxes"]
    assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60 and rec["box_size"] == [60, 80]
    z = load_maps(str(tmp_path / "maps"))
    assert z["boxes"][1].tolist() == rec["boxes"] and z["box_size"][1].tolist() == [60, 80]
    assert not z["explained"].any()                       # boxes alone do not mark a row explained
    ov = np.asarray(Image.open(tmp_path / "overlay" / "b.png"))
    assert (ov[int(y0), int(x0):int(x1)] == 255).all()                        # the box's top edge is drawn


def test_map_store_rows_in_input_order(tmp_path):
    paths = [f"p{i}.png" for i in range(6)]
    store = MapStore(str(tmp_path / "maps"), paths, method="row", meta={"grid": [2, 3]})
    a = np.arange(6 * 2 * 2 * 3, dtype=np.float32).reshape(6, 2, 2, 3)
    store.write([4, 5], {"maps": a[4:], "targets": np.array([4, 5])}, classes=["c4", "c5"])
    store.write([0, 2, 3], {"maps": a[[0, 2, 3]], "targets": np.array([0, 2, 3])}, classes=["c0", "c2", "c3"])
    with pytest.raises(ValueError, match="do not fit"):
        store.write([1], {"maps": np.zeros((1, 2, 2, 4), np.float32), "targets": np.array([1])})
    index = store.close()
    z = load_maps(str(tmp_path / "maps"))
    assert z["explained"].tolist() == [True, False, True, True, True, True]
    for i in (0, 2, 3, 4, 5):
        assert np.array_equal(z["maps"][i], a[i]) and int(z["targets"][i]) == i
    assert not z["maps"][1].any()
    assert index["classes"] == ["c0", None, "c2", "c3", "c4", "c5"] and index["method"] == "row"
    assert z["index"]["arrays"]["maps"] == [6, 2, 2, 3] and z["index"]["grid"] == [2, 3]


def test_explain_files_end_to_end(tmp_path):
    from daam_fast import DAAM
    from daam_fast.io import read_image
    from daam_fast.preprocess import input_spec, prepare
    from daam_fast.zoo import load_model
    from daam_fast.zoo.shapes import make_shapes, save_pngs
    model = load_model("shapes_vit")
    paths = save_pngs(make_shapes(5, seed=3), str(tmp_path / "in"))
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    paths.insert(2, str(tmp_path / "in" / "broken.png"))
    out = tmp_path / "out"
    for workers in (0, 2):
        s = explain_files(paths, model, str(out / str(workers)), batch_size=2, quiet=True, outputs="overlay,maps,gif",
                          workers=workers)
        assert [e["path"] for e in s["explained"]] == [p for p in paths if "broken" not in p]
        assert len(s["failed"]) == 1 and s["failed"][0]["path"].endswith("broken.png") and s["failed"][0]["reason"]
        assert json.loads((out / str(workers) / "summary.json").read_text()) == json.loads(json.dumps(s))
        assert sorted(os.listdir(out / str(workers))) == ["gif", "maps", "overlay", "summary.json"]
        for e in s["explained"]:
            assert [f.split("/")[0] for f in e["files"]] == ["overlay", "gif"]
            assert Image.open(out / str(workers) / e["files"][1]).n_frames >= 2
        z = load_maps(str(out / str(workers) / "maps"))
        assert z["explained"].tolist() == [True, True, False, True, True, True]
        good = [p for p in paths if "broken" not in p]
        x, _ = prepare([read_image(p) for p in good], input_spec(model))
        with DAAM(model) as daam:
            res = daam(x)
        rows = [e["row"] for e in s["explained"]]
        assert torch.allclose(torch.from_numpy(np.array(z["maps"][rows])), res.maps, rtol=1e-4, atol=1e-6)
        assert torch.allclose(torch.from_numpy(np.array(z["block_maps"][rows])), res.block_maps, rtol=1e-4, atol=1e-6)
        assert z["targets"][rows].tolist() == res.targets.tolist() == [e["target"] for e in s["explained"]]
        assert z["logits"].shape == (6, res.logits.shape[1])
        assert [z["index"]["classes"][r] for r in rows] == [e["class"] for e in s["explained"]]


def test_explain_files_writes_the_summary_when_it_stops(tmp_path, monkeypatch):
    """A crash mid-run (here the model, with an error no image is to blame for) still leaves summary.json
    with what was done and why the run stopped, and maps/index.json."""
    from daam_fast.zoo import load_model
    from daam_fast.zoo.shapes import make_shapes, save_pngs
    import daam_fast.explainer as explainer_mod
    paths = save_pngs(make_shapes(4, seed=5), str(tmp_path / "in"))
    real, calls = explainer_mod.DAAM.__call__, []

    def flaky(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(explainer_mod.DAAM, "__call__", flaky)
    with pytest.raises(KeyboardInterrupt):
        explain_files(paths, load_model("shapes_vit"), str(tmp_path / "out"), batch_size=2, quiet=True, workers=0)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [e["path"] for e in s["explained"]] == paths[:2] and s["error"].startswith("KeyboardInterrupt")
    assert load_maps(str(tmp_path / "out" / "maps"))["explained"].tolist() == [True, True, False, False]


def test_explain_files_turns_read_ahead(tmp_path, monkeypatch):
    """Taking turns (workers=0) with 2 model threads, the next batch is read in a helper thread while
    this one is written: the same maps and pictures as with 1 thread; an error while reading ahead
    stops the run with its reason in summary.json, after the batches before it."""
    from daam_fast.outputs import run as run_mod
    from daam_fast.zoo import load_model
    from daam_fast.zoo.shapes import make_shapes, save_pngs
    paths = save_pngs(make_shapes(6, seed=6), str(tmp_path / "in"))
    model = load_model("shapes_vit")
    real, readers = run_mod._batches, []

    def spied(*a, **k):
        for item in real(*a, **k):
            readers.append(threading.current_thread().name)
            yield item

    def failing(*a, **k):
        for n, item in enumerate(real(*a, **k)):
            if n == 2:
                raise RuntimeError("disk gone")
            yield item
    old = torch.get_num_threads()
    maps = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            readers.clear()
            monkeypatch.setattr(run_mod, "_batches", spied)
            s = explain_files(paths, model, str(tmp_path / f"t{threads}"), batch_size=2, quiet=True, workers=0)
            assert [e["path"] for e in s["explained"]] == paths
            helper = [n for n in readers if n.startswith("daam-explain-turn")]
            assert len(helper) == (2 if threads > 1 else 0)           # batches 2 and 3 read ahead
            maps[threads] = np.array(load_maps(str(tmp_path / f"t{threads}" / "maps"))["maps"])
            monkeypatch.setattr(run_mod, "_batches", failing)
            with pytest.raises(RuntimeError, match="disk gone"):
                explain_files(paths, model, str(tmp_path / f"bad{threads}"), batch_size=2, quiet=True, workers=0)
            bad = json.loads((tmp_path / f"bad{threads}" / "summary.json").read_text())
            assert [e["path"] for e in bad["explained"]] == paths[:4] and "disk gone" in bad["error"]
    finally:
        torch.set_num_threads(old)
    np.testing.assert_allclose(maps[2], maps[1], rtol=1e-4, atol=1e-6)
    assert sorted(os.listdir(tmp_path / "t1" / "overlay")) == sorted(os.listdir(tmp_path / "t2" / "overlay"))


def test_turn_switch_decision(monkeypatch):
    """After AFTER batches taking turns (the first left out), PROBES batches run with one model
    thread fewer and are written alone; the switch is made when max(M1, (M1 + W1) / 2) <
    0.95 (M + W), once; a run whose writing is cheap (W < HOPELESS M) is decided against without
    probing, and the thread count restored."""
    from daam_fast._threads import TurnSwitch
    counts = []
    monkeypatch.setattr(torch, "set_num_threads", counts.append)
    n, p = TurnSwitch.AFTER, TurnSwitch.PROBES

    def run(model, write, probe, probe_write):
        s, got, probing = TurnSwitch(True, 2), [], []
        counts.clear()
        for m, w in [(1.0, 0.1)] + [(model, write)] * (n - 1) + [(probe, probe_write)] * p:
            s.before_model()
            probing.append(s.probing)
            got.append(s.measure(m, w))
        return s, got, probing
    s, got, probing = run(0.024, 0.018, 0.034, 0.026)      # the shipped model, every output: share
    assert got == [False] * (n + p - 1) + [True] and s.on and counts == [1] * p + [1]
    assert probing == [False] * n + [True] * p and s.estimate() == pytest.approx((0.042, 0.034))
    s, got, _ = run(0.024, 0.018, 0.060, 0.026)             # the model far slower on one thread: keep turns
    assert not any(got) and not s.on and counts[-1] == 2
    s, got, _ = run(0.024, 0.018, 0.030, 0.080)             # one writer far slower than the turn's: keep turns
    assert not any(got) and not s.on
    s, got, probing = run(1.6, 0.55, 2.9, 1.0)              # deit_small photos: decided without probing
    assert not any(got) and not s.on and counts == [2] and not s.probe and not any(probing)
    s = TurnSwitch(True, 2)
    assert sum(s.measure(0.02, 0.03) for _ in range(3 * (n + p))) == 1 and s.on  # True once
    assert TurnSwitch(True, 1).allowed is False and TurnSwitch(False, 2).allowed is False


def test_explain_files_switches_to_sharing(tmp_path, monkeypatch):
    """With 2 model threads and pictures that take longer to write than the model takes to explain,
    the run switches to one model thread, a writer thread beside it and the caller writing when
    two batches wait: every image written once, in input order, the same maps as taking turns
    throughout, and the caller's thread count back afterwards."""
    from daam_fast.outputs import run as run_mod
    from daam_fast.zoo import load_model
    from daam_fast.zoo.shapes import make_shapes, save_pngs
    paths = save_pngs(make_shapes(22, seed=8), str(tmp_path / "in"))
    model = load_model("shapes_vit")
    real, writers, counts = writer_mod.write_image, [], []

    def slow(*a, **k):
        time.sleep(0.02)                                                     # writing costs more than explaining
        writers.append(threading.current_thread().name)
        counts.append(torch.get_num_threads())
        return real(*a, **k)
    monkeypatch.setattr(writer_mod, "write_image", slow)
    monkeypatch.setattr(run_mod.TurnSwitch, "AFTER", 3)
    monkeypatch.setattr(run_mod.TurnSwitch, "PROBES", 1)
    shared = []
    real_share = OutputWriter.share
    monkeypatch.setattr(OutputWriter, "share", lambda self, *a, **k: (shared.append(torch.get_num_threads()),
                                                                      real_share(self, *a, **k)))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        s = explain_files(paths, model, str(tmp_path / "auto"), batch_size=2, quiet=True, outputs="overlay,maps,gif")
        assert torch.get_num_threads() == 2
        assert shared == [1]                                                # switched, the model on 1 thread
        assert [e["path"] for e in s["explained"]] == paths and not s["failed"]
        assert len(writers) == len(paths)
        assert "daam-output-0" in writers and any(w == threading.current_thread().name for w in writers[10:])
        assert all(c == 1 for c, w in zip(counts, writers) if w == "daam-output-0")
        stems = sorted(os.path.splitext(os.path.basename(p))[0] for p in paths)
        assert sorted(os.path.splitext(f)[0] for f in os.listdir(tmp_path / "auto" / "gif")) == stems
        writers.clear()
        t = explain_files(paths, model, str(tmp_path / "turns"), batch_size=2, quiet=True, outputs="overlay,maps,gif",
                          workers=0)
        assert [e["path"] for e in t["explained"]] == paths and shared == [1]      # workers=0: never switches
    finally:
        torch.set_num_threads(old)
    np.testing.assert_allclose(np.array(load_maps(str(tmp_path / "auto" / "maps"))["maps"]),
                               np.array(load_maps(str(tmp_path / "turns" / "maps"))["maps"]), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="share"):
        OutputWriter(WriteOptions(), workers=1).share()


def test_default_workers(monkeypatch):
    from daam_fast.outputs import default_workers
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert default_workers("cpu") == 0                    # every core runs a model thread
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert default_workers("cpu") == 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert default_workers("cuda") == 2


def test_sizes_of_drawn_pictures(tmp_path):
    """Overlay at the display size (longer side <= 640), GIF / MP4 frames <= 480, grid panels <= 192."""
    _folders(tmp_path)
    job = _job(tmp_path, "big", L=2, size=(600, 800))
    rec = writer_mod.write_image(job, WriteOptions(outputs=("overlay", "gif", "mp4", "grid")))
    assert rec["files"] == ["overlay/big.png", "gif/big.gif", "mp4/big.mp4", "grid/big.png"]
    assert Image.open(tmp_path / "overlay/big.png").size == (640, 480)
    assert Image.open(tmp_path / "gif/big.gif").size == (480, 360)
    import av
    with av.open(str(tmp_path / "mp4/big.mp4")) as c:
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (480, 360) and s.frames in (0, 2)
    W, H = Image.open(tmp_path / "grid/big.png").size
    assert W >= 3 * 192 and H < 2 * 192


def test_explain_files_bad_option_starts_no_thread(tmp_path):
    from daam_fast.zoo import load_model
    before = threading.active_count()
    with pytest.raises((TypeError, ValueError)):
        explain_files([], load_model("shapes_vit"), str(tmp_path / "o"), quiet=True, daam_options={"no_such": 1})
    assert threading.active_count() == before
    with pytest.raises(ValueError, match="unknown"):
        explain_files([], load_model("shapes_vit"), str(tmp_path / "o"), quiet=True, outputs="overlay,movie")


def test_boxes_without_pictures(tmp_path):
    """--boxes with maps only: no picture, the boxes still in summary.json and maps/boxes.npy."""
    from daam_fast.zoo import load_model
    from daam_fast.zoo.shapes import make_shapes, save_pngs
    paths = save_pngs(make_shapes(3, seed=4), str(tmp_path / "in"))
    s = explain_files(paths, load_model("shapes_vit"), str(tmp_path / "out"), outputs="maps", boxes=0.5, quiet=True)
    assert sorted(os.listdir(tmp_path / "out")) == ["maps", "summary.json"]
    z = load_maps(str(tmp_path / "out" / "maps"))
    assert z["explained"].all() and [e["files"] for e in s["explained"]] == [[], [], []]
    assert [z["boxes"][e["row"]].tolist() for e in s["explained"]] == [e["boxes"] for e in s["explained"]]
    assert all(e["box_size"] == [64, 64] and e["boxes"][2] > e["boxes"][0] for e in s["explained"])
