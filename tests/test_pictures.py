"""Pictures read as a viewer shows them: EXIF orientation, palette and animated pictures at any
size, HEIC / AVIF, through ``daam-fast explain`` and :func:`daam_fast.io.read_image`."""
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image, features

from daam_fast import zoo
from daam_fast.cli import main
from daam_fast.io import ImageReadError, read_image
from daam_fast.outputs import load_maps
from daam_fast.zoo.shapes import make_shapes

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(zoo.weights_dir(), "shapes_vit.safetensors")),
                                reason="shipped weights missing")

# The stored pixels of a picture shown as U under each EXIF orientation, from the tag's definition
# (where the stored 0th row and 0th column lie in the shown picture), not from Pillow's table:
# 2 top/right, 3 bottom/right, 4 bottom/left, 5 left/top, 6 right/top, 7 right/bottom, 8 left/bottom.
STORED = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],
    3: lambda u: u[::-1, ::-1],
    4: lambda u: u[::-1],
    5: lambda u: u.transpose(1, 0, 2),
    6: lambda u: np.rot90(u, 1),            # shown = stored turned clockwise
    7: lambda u: u[::-1, ::-1].transpose(1, 0, 2),
    8: lambda u: np.rot90(u, -1),           # shown = stored turned anticlockwise
}
SHAPES = ["--outputs", "overlay,maps", "--quiet"]
TIMM_224 = SHAPES + ["--model", "vit_tiny_patch16_224", "--random-weights"]


def _upright(h=96, w=128, seed=3) -> np.ndarray:
    """(h, w, 3) uint8: a shapes picture, not symmetric under any flip or turn."""
    a = make_shapes(1, seed=seed, size=max(h, w)).images[0].permute(1, 2, 0).numpy()
    return np.ascontiguousarray(a[:h, :w])


def _exif(orientation: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def _summary(out) -> dict:
    s = json.loads((out / "summary.json").read_text())
    return {os.path.basename(e["path"]): e for e in s["explained"]} | {"_failed": s["failed"]}


def _overlay_size(out, entry) -> tuple:
    """(W, H) of an explained picture's overlay (the file summary.json names)."""
    (f,) = [f for f in entry["files"] if f.startswith("overlay/")]
    with Image.open(out / f) as im:
        return im.size


def test_eight_orientations_maps_equal_the_upright_picture(tmp_path):
    """Each of the eight tagged files is read, explained and drawn as the untagged upright picture."""
    u = _upright()
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(u).save(src / "upright.png")
    for o, stored in STORED.items():
        Image.fromarray(np.ascontiguousarray(stored(u))).save(src / f"o{o}.png", exif=_exif(o))
        info = {}
        assert torch.equal(read_image(str(src / f"o{o}.png"), info=info), torch.from_numpy(u).permute(2, 0, 1)), o
        assert info == {"orientation": o, "animated": False}
    out = tmp_path / "out"
    assert main(["explain", str(src), "--out", str(out)] + SHAPES) == 0
    s, z = _summary(out), load_maps(str(out / "maps"))
    rows = {os.path.basename(p): i for i, p in enumerate(z["index"]["paths"])}
    ref = z["maps"][rows["upright.png"]]
    assert s["upright.png"]["orientation"] == 1
    for o in STORED:
        name = f"o{o}.png"
        np.testing.assert_allclose(z["maps"][rows[name]], ref, rtol=1e-5, atol=1e-7, err_msg=name)
        assert s[name]["orientation"] == o and "animated" not in s[name]
        assert _overlay_size(out, s[name]) == (128, 96), name                           # the shown size


def test_phone_photo_explained_landscape(tmp_path):
    """A JPEG stored 480 x 640 with orientation 6 is shown (and explained, and drawn) 640 x 480."""
    u = np.asarray(Image.fromarray(_upright(96, 128)).resize((640, 480), Image.BILINEAR)).copy()
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.ascontiguousarray(STORED[6](u))).save(src / "phone.jpg", quality=95, exif=_exif(6))
    x = read_image(str(src / "phone.jpg"))
    assert x.shape == (3, 480, 640)
    assert (x.permute(1, 2, 0).float() - torch.from_numpy(u).float()).abs().mean() < 3     # JPEG's loss only
    x = read_image(str(src / "phone.jpg"), max_side=100)             # reduced while decoding, still landscape
    assert x.shape[2] > x.shape[1] and 100 <= x.shape[2] <= 200
    out = tmp_path / "out"
    assert main(["explain", str(src), "--out", str(out)] + SHAPES) == 0
    e = _summary(out)["phone.jpg"]
    assert e["orientation"] == 6
    W, H = _overlay_size(out, e)                                        # landscape, reduced for the model
    assert W * 3 == H * 4 and W >= 256


def _palette_png(path, w, h) -> np.ndarray:
    """A palette PNG with a transparent palette entry (the top band); returns the shown RGB."""
    p = Image.fromarray(_upright(48, 64, seed=5)).quantize(63).resize((w, h), Image.NEAREST)
    idx = np.asarray(p).copy()
    idx[: h // 8] = 63
    q = Image.fromarray(idx, "P")
    q.putpalette(p.getpalette()[:63 * 3] + [0, 0, 0])
    q.save(path, transparency=63, compress_level=1)
    with Image.open(path) as im:
        assert im.mode == "P" and "transparency" in im.info
        shown = np.asarray(im.convert("RGB")).copy()
    shown[: h // 8] = 255                                   # transparent: composited on white
    return shown


def _animated_gif(path, w, h, frames=3) -> np.ndarray:
    """An animated GIF of ``frames`` different pictures; returns the first frame's RGB."""
    pics = [Image.fromarray(_upright(48, 64, seed=s)).quantize(64).resize((w, h), Image.NEAREST)
            for s in range(frames)]
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=100, loop=0)
    with Image.open(path) as im:
        assert im.is_animated and im.mode in ("P", "L")
        return np.asarray(im.convert("RGB")).copy()


@pytest.mark.parametrize("model", [SHAPES, TIMM_224], ids=["shapes_vit-64", "vit_tiny-224"])
def test_palette_and_animated_pictures_at_any_size(tmp_path, model):
    """A 2000 x 1500 palette PNG with transparency and a 1200 x 900 animated GIF are explained, with
    the maps of the same pixels saved as plain RGB PNGs (the GIF: its first frame)."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_palette_png(src / "palette.png", 2000, 1500)).save(src / "palette_rgb.png", compress_level=1)
    Image.fromarray(_animated_gif(src / "anim.gif", 1200, 900)).save(src / "anim_rgb.png", compress_level=1)
    max_side = 256 if model is SHAPES else 896                 # 4 x the model's input side
    for name in ("palette", "anim"):
        info = {}
        x = read_image(str(src / f"{name}.png" if name == "palette" else src / "anim.gif"), max_side, info=info)
        assert torch.equal(x, read_image(str(src / f"{name}_rgb.png"), max_side)), name
        assert info["animated"] == (name == "anim")
    out = tmp_path / "out"
    assert main(["explain", str(src), "--out", str(out)] + model) == 0
    s, z = _summary(out), load_maps(str(out / "maps"))
    assert not s["_failed"]
    assert s["anim.gif"]["animated"] is True and s["anim.gif"]["frame"] == 0
    assert "animated" not in s["palette.png"] and s["palette.png"]["orientation"] == 1
    rows = {os.path.basename(p): i for i, p in enumerate(z["index"]["paths"])}
    for a, b in (("palette.png", "palette_rgb.png"), ("anim.gif", "anim_rgb.png")):
        assert np.isfinite(z["maps"][rows[a]]).all()
        np.testing.assert_allclose(z["maps"][rows[a]], z["maps"][rows[b]], rtol=1e-5, atol=1e-7, err_msg=a)
        W, H = _overlay_size(out, s[a])
        assert abs(W / H - 4 / 3) < 0.02 and max(W, H) >= min(max_side, 640)     # the whole picture, reduced


def _fake_heic(path):
    """An ISO-BMFF file whose brand says HEIC (no picture Pillow knows)."""
    body = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00\x00\x00\x08free" + bytes(64)
    path.write_bytes(body)


def test_heic_without_plugin_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)         # import pillow_heif -> ImportError
    src = tmp_path / "in"
    src.mkdir()
    _fake_heic(src / "photo.heic")
    Image.fromarray(_upright()).save(src / "good.png")
    hint = r'photo.heic: pillow-heif is needed for HEIC/HEIF pictures: pip install "daam-fast\[heif\]"$'
    with pytest.raises(ImageReadError, match=hint):
        read_image(str(src / "photo.heic"))
    out = tmp_path / "out"
    assert main(["explain", str(src), "--out", str(out)] + SHAPES) == 1      # the folder scan finds .heic
    assert 'pip install "daam-fast[heif]"' in capsys.readouterr().err
    s = _summary(out)
    assert "good.png" in s and [os.path.basename(f["path"]) for f in s["_failed"]] == ["photo.heic"]


def test_heic_read_with_plugin(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    u = np.asarray(Image.fromarray(_upright(96, 128)).resize((256, 192), Image.BILINEAR)).copy()
    for o in (1, 6):
        path = tmp_path / f"o{o}.heic"
        pillow_heif.from_pillow(Image.fromarray(np.ascontiguousarray(STORED[o](u)))).save(
            str(path), quality=95, exif=_exif(o))
        info = {}
        x = read_image(str(path), info=info)
        assert x.shape == (3, 192, 256) and info == {"orientation": o, "animated": False}
        assert (x.permute(1, 2, 0).float() - torch.from_numpy(u).float()).abs().mean() < 4, o   # HEVC's loss only
    assert read_image(str(tmp_path / "o6.heic"), max_side=60).shape == (3, 48, 64)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF support")
def test_avif_read_by_pillow(tmp_path):
    u = np.asarray(Image.fromarray(_upright(96, 128)).resize((256, 192), Image.BILINEAR)).copy()
    Image.fromarray(u).save(tmp_path / "p.avif", quality=95)
    x = read_image(str(tmp_path / "p.avif"))
    assert x.shape == (3, 192, 256) and (x.permute(1, 2, 0).float() - torch.from_numpy(u).float()).abs().mean() < 4


def test_small_modes_and_reduction_keep_their_pixels(tmp_path):
    """1-bit and 16-bit pictures over 2 x max_side are converted before the reduction (mean of k x k)."""
    rng = np.random.default_rng(0)
    bits = rng.random((300, 400)) > 0.5
    Image.fromarray(bits).save(tmp_path / "b.png")
    x = read_image(str(tmp_path / "b.png"), max_side=100)
    want = bits.reshape(75, 4, 100, 4).mean((1, 3)) * 255
    assert x.shape == (3, 75, 100) and np.abs(x[0].numpy() - want).max() <= 1
    deep = (rng.random((300, 400)) * 65535).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    x = read_image(str(tmp_path / "d.png"), max_side=100)
    want = (deep / 65535.0 * 255).reshape(75, 4, 100, 4).mean((1, 3))
    assert x.shape == (3, 75, 100) and np.abs(x[0].numpy() - want).max() <= 1


def test_read_image_leaves_pillows_limit(tmp_path):
    Image.fromarray(_upright()).save(tmp_path / "a.png")
    before = Image.MAX_IMAGE_PIXELS
    read_image(str(tmp_path / "a.png"))
    assert Image.MAX_IMAGE_PIXELS == before


def test_corrupt_pictures_listed_with_reasons(tmp_path, capsys):
    """Truncated palette, animated and JPEG files fail with a reason; the others are explained; exit 1."""
    src = tmp_path / "in"
    src.mkdir()
    _palette_png(src / "pal.png", 200, 150)
    _animated_gif(src / "anim.gif", 120, 90)
    Image.fromarray(_upright()).save(src / "photo.jpg", exif=_exif(6))
    for name in ("pal.png", "anim.gif", "photo.jpg"):
        (src / f"cut_{name}").write_bytes((src / name).read_bytes()[:40])
    out = tmp_path / "out"
    assert main(["explain", str(src), "--out", str(out)] + SHAPES) == 1
    s = _summary(out)
    assert sorted(k for k in s if k != "_failed") == ["anim.gif", "pal.png", "photo.jpg"]
    assert sorted(os.path.basename(f["path"]) for f in s["_failed"]) == ["cut_anim.gif", "cut_pal.png", "cut_photo.jpg"]
    assert all(f["reason"] for f in s["_failed"])
    assert capsys.readouterr().err.count("cut_") >= 3
