"""The daam-fast CLI end to end on the shipped model, and its handling of bad input."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from daam_fast import zoo
from daam_fast.cli import main
from daam_fast.outputs import load_maps
from daam_fast.zoo.shapes import make_shapes, save_pngs

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(zoo.weights_dir(), "shapes_vit.safetensors")),
                                reason="shipped weights missing")
DEPTH = 6


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    save_pngs(make_shapes(3, seed=8), str(d))
    return d


def _outputs_ok(out, n, depth=DEPTH):
    s = json.loads((out / "summary.json").read_text())
    assert len(s["explained"]) == n
    for e in s["explained"]:
        stem = os.path.splitext(os.path.basename(e["path"]))[0]
        assert e["files"] == [f"overlay/{stem}.jpg", f"grid/{stem}.jpg", f"gif/{stem}.gif", f"mp4/{stem}.mp4"]
        for f in e["files"]:
            assert os.path.getsize(out / f) > 0, f
        with Image.open(out / "gif" / f"{stem}.gif") as im:          # repeated frames merged, the time kept
            assert im.n_frames <= depth and im.info["loop"] == 0
        import av
        with av.open(str(out / "mp4" / f"{stem}.mp4")) as c:
            assert sum(1 for _ in c.decode(video=0)) == depth
    z = load_maps(str(out / "maps"))
    assert z["block_maps"].shape == z["maps"].shape == (n, depth, 8, 8) and z["explained"].all()
    assert np.allclose(np.cumsum(z["block_maps"], 1), z["maps"], atol=1e-5)
    assert z["logits"].shape == (n, 6) and (z["targets"] == np.argmax(z["logits"], 1)).all()


def test_explain_directory_and_glob(images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(images), "--out", str(out), "--quiet", "--outputs", "all"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["explorer.html", "gif", "grid", "maps", "mp4", "overlay",
                                                      "summary.json"]
    _outputs_ok(out, 3)
    assert "explained 3, failed 0" in capsys.readouterr().out
    out2 = tmp_path / "out2"
    assert main(["explain", str(images / "*.png"), "--out", str(out2), "--quiet", "--target", "2",
                 "--method", "direct", "--no-video", "--html"]) == 0
    z = load_maps(str(out2 / "maps"))
    assert (z["targets"] == 2).all() and z["index"]["method"] == "direct"
    page = (out2 / "explorer.html").read_text()                 # --html: the run's explorer page
    assert "<html" in page.lower() and "http://" not in page and "https://" not in page


def test_existing_output_needs_overwrite(images, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["explain", str(images), "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert main(["explain", str(images), "--out", str(out), "--quiet", "--overwrite", "--no-video"]) == 0
    assert not (out / "keep.txt").exists()


def test_bad_inputs_others_still_done(images, tmp_path, capsys):
    src = tmp_path / "mixed"
    src.mkdir()
    good = sorted(images.iterdir())[0]
    (src / "good.png").write_bytes(good.read_bytes())
    (src / "corrupt.png").write_bytes(good.read_bytes()[:60])           # truncated PNG
    (src / "notes.png").write_text("this is not an image")
    (src / "empty.jpg").write_bytes(b"")
    arr = make_shapes(1, seed=9).images[0].permute(1, 2, 0).numpy()
    Image.fromarray(arr[:, :, 0]).save(src / "grey.png")
    Image.fromarray(np.concatenate([arr, np.full(arr.shape[:2] + (1,), 128, np.uint8)], -1)).save(src / "rgba.png")
    Image.fromarray((arr[:, :, 1].astype(np.uint16) * 257)).save(src / "deep16.png")
    Image.fromarray(np.tile(arr, (40, 40, 1))).save(src / "huge.png")    # 2560 x 2560
    out = tmp_path / "out"
    rc = main(["explain", str(src), str(tmp_path / "missing.png"), "--out", str(out), "--quiet", "--no-video"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "explained 5, failed 4" in cap.out
    for name in ("corrupt.png", "notes.png", "empty.jpg", "missing.png"):
        assert name in cap.err
    assert "not an image" in cap.err and "empty file" in cap.err and "no such file" in cap.err
    for stem in ("good", "grey", "rgba", "deep16", "huge"):
        assert (out / "overlay" / f"{stem}.jpg").exists(), stem
    s = json.loads((out / "summary.json").read_text())
    z = load_maps(str(out / "maps"))
    assert int(z["explained"].sum()) == 5 and [e["row"] for e in s["explained"]] == list(np.flatnonzero(z["explained"]))
    assert len(s["explained"]) == 5 and len(s["failed"]) == 4                # every input: explained or failed
    assert any(d["path"].endswith("missing.png") and "no such file" in d["reason"] for d in s["failed"])


def test_overwrite_never_deletes_the_inputs(images, tmp_path, capsys):
    """--out holding the input images: --overwrite refuses (exit 2) and deletes nothing."""
    before = sorted(p.name for p in images.iterdir())
    assert main(["explain", str(images), "--out", str(images), "--overwrite", "--quiet"]) == 2
    assert "--overwrite would delete them" in capsys.readouterr().err
    assert sorted(p.name for p in images.iterdir()) == before


def test_unique_stems_never_collide():
    from daam_fast.outputs.run import unique_stems
    assert unique_stems(["d1/a.png", "d2/a.png", "a_2.png", "d3/a.jpg"]) == ["a", "a_2", "a_2_2", "a_3"]


def test_read_image_modes(tmp_path):
    from daam_fast.io import read_image
    arr = (np.arange(64 * 48).reshape(48, 64) % 65536).astype(np.uint16) * 20
    Image.fromarray(arr).save(tmp_path / "d.png")
    t = read_image(str(tmp_path / "d.png"))
    assert t.shape == (3, 48, 64) and t.dtype == torch.uint8 and t.max() > 200
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255                                                   # fully transparent red -> white
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert (read_image(str(tmp_path / "a.png")) == 255).all()


def test_model_errors(images, tmp_path, capsys):
    assert main(["explain", str(images), "--out", str(tmp_path / "x"), "--model", "vit_tiny_patch16_224"]) == 2
    assert "--pretrained" in capsys.readouterr().err
    assert main(["explain", str(images), "--out", str(tmp_path / "y"), "--checkpoint", str(tmp_path / "no.pt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_self_supervised_and_bank_build(images, tmp_path):
    out = tmp_path / "ssl"
    assert main(["explain", str(images), "--model", "shapes_vit_ssl", "--out", str(out), "--quiet", "--no-video"]) == 0
    z = load_maps(str(out / "maps"))
    assert "features" in z and "weights" in z and z["maps"].shape == (3, DEPTH, 8, 8)
    src = tmp_path / "classes"
    for c, seed in (("a", 1), ("b", 2)):
        save_pngs(make_shapes(3, seed=seed), str(src / c))
    bank = tmp_path / "bank.pt"
    assert main(["bank", "build", str(src), "--out", str(bank), "--quiet"]) == 0
    from daam_fast import MemoryBank
    b = MemoryBank.load(bank)
    assert b.features.shape == (6, 96) and sorted(b.labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--num-images", "2", "--quiet"]) == 0
    assert (tmp_path / "d" / "demo.png").exists()
    assert len(list((tmp_path / "d" / "supervised" / "overlay").iterdir())) == 2      # 2 images
    assert "overview figure" in capsys.readouterr().out


def test_activation_checkpointing_option_same_maps(images, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["explain", str(images), "--out", str(a), "--quiet", "--no-video"]) == 0
    assert main(["explain", str(images), "--out", str(b), "--quiet", "--no-video", "--activation-checkpointing"]) == 0
    za, zb = load_maps(str(a / "maps")), load_maps(str(b / "maps"))
    assert za["index"]["arrays"] == zb["index"]["arrays"] and za["index"]["paths"] == zb["index"]["paths"]
    np.testing.assert_allclose(zb["maps"], za["maps"], rtol=0, atol=1e-6 * np.abs(za["maps"]).max())
    capsys.readouterr()
    assert main(["explain", str(images), "--out", str(tmp_path / "c"), "--quiet", "--method", "direct",
                 "--activation-checkpointing"]) == 2
    assert "--activation-checkpointing applies to --method grad" in capsys.readouterr().err


# ---------------------------------------------------------------- the shared options (no model runs)
def _action(parser, command, dest):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if a.dest == dest)


def test_method_choices_are_the_explainer_table():
    from daam_fast.cli import build_parser
    from daam_fast.explainer import METHODS
    ap = build_parser()
    for command in ("explain", "video", "batch"):
        assert tuple(_action(ap, command, "method").choices) == tuple(METHODS), command
    eval_cmd = next(a for a in ap._actions if a.dest == "command").choices["eval"]
    assert not any(a.dest in ("method", "bank") for a in eval_cmd._actions)   # eval: --methods, no ignored flags
    # ... and the library entry points take every method of the table, with no list of their own
    from daam_fast.distributed.spec import check_run_options
    from daam_fast.evaluate.config import DAAM_METHODS
    from daam_fast.video.options import VideoOptions
    assert DAAM_METHODS == tuple(METHODS)
    for m in METHODS:
        VideoOptions(method=m).check_stream()
        assert check_run_options(m, {"compile": True}) == {"compile": True}


def test_argparse_defaults_are_the_config_defaults():
    import dataclasses
    from daam_fast.cli import build_parser
    from daam_fast.outputs import ExplainOptions
    from daam_fast.video import VideoOptions
    ap = build_parser()
    video = ap.parse_args(["video", "in.mp4", "--out", "o.mp4"])
    for f in ("layout", "scale", "mode", "smoothing", "target", "codec", "crf", "preset", "batch_size", "method"):
        assert getattr(video, f) == getattr(VideoOptions(), f), f
    ex = ap.parse_args(["explain", "x.png", "--out", "o"])
    for f in dataclasses.fields(ExplainOptions):
        assert getattr(ex, f.name) == f.default, f.name


def test_daam_options_checked_once_and_usage_errors_exit_2(tmp_path, capsys):
    from daam_fast.cli import build_parser
    from daam_fast.cli.options import UsageError, daam_args
    ap = build_parser()
    with pytest.raises(UsageError, match="--activation-checkpointing applies to --method grad"):
        daam_args(ap.parse_args(["video", "v.mp4", "--out", "o.mp4", "--method", "direct",
                                 "--activation-checkpointing"]))
    opts = daam_args(ap.parse_args(["explain", "x", "--out", "o", "--compile", "--backend", "torch"]))
    assert opts.keywords() == {"compile": True, "backend": "torch"}
    assert daam_args(ap.parse_args(["explain", "x", "--out", "o", "--backend", "auto"])).keywords() == {}
    with pytest.raises(SystemExit):                                       # argparse: not a choice
        ap.parse_args(["explain", "x", "--out", "o", "--method", "lime"])
    capsys.readouterr()
    (tmp_path / "one").mkdir()
    assert main(["bank", "build", str(tmp_path / "one"), "--out", str(tmp_path / "b.pt")]) == 2
    assert capsys.readouterr().err.startswith("daam-fast bank: bank build needs IMG_DIR/<class>/<image>")
    assert main(["video", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "daam-fast video: " in capsys.readouterr().err


def test_sub_systems_hold_no_command():
    from daam_fast import distributed, evaluate, video
    for mod in (video, evaluate, distributed):          # the commands live in daam_fast.cli only
        assert not hasattr(mod, "add_cli"), mod.__name__


def test_distributed_options_derived_from_daam():
    import inspect
    from daam_fast import DAAM
    from daam_fast.distributed.spec import MAP_OPTIONS, check_run_options, daam_option_names
    kw = {p.name for p in inspect.signature(DAAM.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert daam_option_names() == kw - MAP_OPTIONS
    assert {"activation_checkpointing", "compile", "backend"} <= daam_option_names()
    assert "normalize" not in daam_option_names()
    assert check_run_options("grad", {"activation_checkpointing": True}) == {"activation_checkpointing": True}
    with pytest.raises(ValueError, match="unknown"):
        check_run_options("grad", {"normalize": True})
    with pytest.raises(ValueError, match="method='grad'"):
        check_run_options("direct", {"activation_checkpointing": True})
    with pytest.raises(ValueError, match="method="):
        check_run_options("lime", None)


def test_entry_points():
    """``python -m daam_fast`` and the ``daam-fast`` console script (pyproject) reach the same main."""
    import importlib
    import re
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml")) as f:
        target = re.search(r'^daam-fast\s*=\s*"([\w.]+):(\w+)"', f.read(), re.M)
    assert target, "no daam-fast script in pyproject.toml"
    assert getattr(importlib.import_module(target.group(1)), target.group(2)) is main
    r = subprocess.run([sys.executable, "-m", "daam_fast", "video", "--help"], capture_output=True, text=True,
                       cwd=root, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("usage: daam-fast video"), r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "daam_fast"], capture_output=True, text=True, cwd=root, timeout=300)
    assert r.returncode == 2 and "COMMAND" in r.stdout
