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

from daam_fast.outputs import (DEFAULT_OUTPUTS, OUTPUTS, ImageJob, OutputWriter, WriteOptions, compose_grid,
                               display_size, explain_files, panel_size, parse_outputs, png_bytes, save_gif, save_grid)
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


def _job(tmp_path, name, L=4, size=(40, 56)):
    m = torch.rand(L, 5, 7).cumsum(0)
    pic = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
    return ImageJob(f"{name}.png", str(tmp_path / name), pic, m, m.diff(dim=0, prepend=torch.zeros(1, 5, 7)), 2,
                    "two", {"grid": np.array([5, 7])})


@pytest.mark.parametrize("workers", [0, 2])
def test_writer_one_output_per_input_and_failures(tmp_path, workers):
    (tmp_path / "blocked").write_text("a file where the output folder should go")
    jobs = [_job(tmp_path, f"im{i}") for i in range(7)]
    jobs[3] = _job(tmp_path, "blocked")
    opt = WriteOptions(outputs=("overlay", "maps", "grid", "gif", "mp4"))
    with OutputWriter(opt, workers=workers, queue_size=2) as w:
        for i, j in enumerate(jobs):
            w.submit(i, j)
        w.fail(7, "gone.png", "no such file")
    assert [r["path"] for r in w.explained] == [f"im{i}.png" for i in (0, 1, 2, 4, 5, 6)]   # input order
    assert [p for p, _ in w.failed] == ["blocked.png", "gone.png"]
    assert "could not write outputs" in w.failed[0][1] and "no such file" in w.failed[1][1]
    for r in w.explained:
        assert sorted(os.listdir(r["out"])) == ["flow.gif", "flow.mp4", "grid.png", "maps.npz", "overlay.png"]
    z = np.load(os.path.join(w.explained[0]["out"], "maps.npz"))
    assert z["maps"].shape == (4, 5, 7) and int(z["target"]) == 2 and str(z["class_name"]) == "two"
    ov = np.asarray(Image.open(os.path.join(w.explained[0]["out"], "overlay.png")))
    want = render(jobs[0].maps[None, -1:], images=jobs[0].picture[None])[0, 0].numpy()
    assert np.array_equal(ov, want)                                         # the kernel's frame, losslessly


def test_writer_queue_is_bounded(tmp_path, monkeypatch):
    seen, lock = [], threading.Lock()

    def slow(job, opt):
        time.sleep(0.01)
        return {"path": job.path}

    monkeypatch.setattr(writer_mod, "write_image", slow)
    w = OutputWriter(WriteOptions(), workers=1, queue_size=3)
    for i in range(20):
        w.submit(i, _job(tmp_path, f"q{i}"))
        with lock:
            seen.append(w._q.qsize())
    w.close()
    assert max(seen) <= 3 and len(w.explained) == 20


def test_boxes_on_overlay(tmp_path):
    job = _job(tmp_path, "b", size=(60, 80))
    job.maps = torch.zeros(4, 5, 7)
    job.maps[:, 1:3, 2:4] = 1.0
    rec = writer_mod.write_image(job, WriteOptions(outputs=("overlay", "maps"), boxes=0.5))
    z = np.load(os.path.join(rec["out"], "maps.npz"))
    x0, y0, x1, y1 = z["boxes"].reshape(-1)
    assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60
    ov = np.asarray(Image.open(os.path.join(rec["out"], "overlay.png")))
    assert (ov[int(y0), int(x0):int(x1)] == 255).all()                        # the box's top edge is drawn


def test_explain_files_end_to_end(tmp_path):
    from daam_fast.zoo import load_model
    from daam_fast.zoo.shapes import make_shapes, save_pngs
    paths = save_pngs(make_shapes(5, seed=3), str(tmp_path / "in"))
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    paths.insert(2, str(tmp_path / "in" / "broken.png"))
    out = tmp_path / "out"
    s = explain_files(paths, load_model("shapes_vit"), str(out), batch_size=2, quiet=True, outputs="overlay,maps,gif")
    assert [e["path"] for e in s["explained"]] == [p for p in paths if "broken" not in p]
    assert len(s["failed"]) == 1 and s["failed"][0]["path"].endswith("broken.png") and s["failed"][0]["reason"]
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(s))
    for e in s["explained"]:
        assert sorted(os.listdir(e["out"])) == ["flow.gif", "maps.npz", "overlay.png"]
        assert Image.open(os.path.join(e["out"], "flow.gif")).n_frames >= 2


def test_sizes_of_drawn_pictures(tmp_path):
    """Overlay at the display size (longer side <= 640), GIF / MP4 frames <= 480, grid panels <= 192."""
    job = _job(tmp_path, "big", L=2, size=(600, 800))
    rec = writer_mod.write_image(job, WriteOptions(outputs=("overlay", "gif", "mp4", "grid")))
    assert rec["files"] == ["overlay.png", "flow.gif", "flow.mp4", "grid.png"]
    assert Image.open(os.path.join(rec["out"], "overlay.png")).size == (640, 480)
    assert Image.open(os.path.join(rec["out"], "flow.gif")).size == (480, 360)
    import av
    with av.open(os.path.join(rec["out"], "flow.mp4")) as c:
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (480, 360) and s.frames in (0, 2)
    W, H = Image.open(os.path.join(rec["out"], "grid.png")).size
    assert W >= 3 * 192 and H < 2 * 192


def test_explain_files_bad_option_starts_no_thread(tmp_path):
    from daam_fast.zoo import load_model
    before = threading.active_count()
    with pytest.raises((TypeError, ValueError)):
        explain_files([], load_model("shapes_vit"), str(tmp_path / "o"), quiet=True, daam_options={"no_such": 1})
    assert threading.active_count() == before
    with pytest.raises(ValueError, match="unknown"):
        explain_files([], load_model("shapes_vit"), str(tmp_path / "o"), quiet=True, outputs="overlay,movie")
