"""The explorer page on the Python side: self-contained, small, lossless up to float16, strict on input.

The page's drawing is checked in a real browser by tests/test_explore_browser.py.
"""
import base64
import re
from importlib import resources

import numpy as np
import pytest
import torch

import daam_fast
from daam_fast import explorer as ex
from daam_fast.result import DAAMResult


def make_result(B=2, L=4, H=3, h=7, w=5, topk=1, heads=True, seed=0, method="grad"):
    g = torch.Generator().manual_seed(seed)
    hm = torch.randn(B, L, H, h, w, generator=g) * 1e-3          # small magnitudes, as gradients give
    bm = torch.relu(hm.sum(2))
    return DAAMResult.from_block_maps(bm, torch.randint(0, 10, (B,), generator=g),
                                      logits=torch.randn(B, 10, generator=g), grid=(h, w), method=method,
                                      head_maps=hm if heads else None, topk=topk)


def smooth_images(n, H=224, W=224):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return torch.stack([torch.stack([yy * (i % 4) / 3, xx, (yy + xx) / 2 * ((i + 1) % 3) / 2]) for i in range(n)])


def test_page_is_self_contained(tmp_path):
    res = make_result()
    path = ex.explore(res, smooth_images(2, 40, 56), tmp_path / "run.html",
                      methods={"direct": make_result(method="direct")})
    text = open(path, encoding="utf-8").read()
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(script|link|img|iframe)[^>]*\s(src|href)\s*=", text, re.I)
    assert "<link" not in text and "@import" not in text and "url(" not in page_css()
    assert "default-src 'none'" in text                     # the browser itself refuses any fetch
    assert text.count("<script") == 2                       # the data and the page's script, both inline
    assert "/*__JS__*/" not in text and "__DATA__" not in text


def test_names_cannot_break_out_of_the_page():
    res = make_result()
    evil = "</script><script>alert(1)</script><!--"
    text = ex.page_html(res, None, class_names=[evil] * 10, names=[evil, "b"], title=evil)
    assert "<script>alert" not in text and "<!--" not in text
    data = ex.read_page(text)
    assert data["names"][0] == evil and data["class_labels"][0] == [evil] and data["title"] == evil


def page_css():
    return resources.files("daam_fast.explorer").joinpath("page.css").read_text()


def test_package_data_is_declared():
    for name in ("shell.html", "page.html", "page.css", "render.js", "page.js"):
        assert resources.files("daam_fast.explorer").joinpath(name).is_file()
    import pathlib
    toml = (pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"daam_fast.explorer" = ["shell.html", "page.html", "page.css", "render.js", "page.js"]' in toml


def test_size_vit_s16_16_images():
    """16 images of a ViT-S/16 (12 blocks, 6 heads, 14 x 14) with 224 px pictures: <= 2 MB.
    The pictures are the shapes data set at 224 px (a textured background with pixel noise,
    harder for JPEG than most photographs)."""
    from daam_fast.zoo.shapes import make_shapes
    res = make_result(B=16, L=12, H=6, h=14, w=14)
    pics = make_shapes(16, seed=0, size=224).images
    text = ex.page_html(res, pics, class_names=[f"c{i}" for i in range(10)])
    assert len(text.encode("utf-8")) <= 2_000_000, len(text) / 1e6


def test_decoded_maps_equal_within_float16():
    res = make_result(B=4, L=3, H=2, topk=2)
    res.maps[1] *= 1e6                                         # rows of very different magnitudes
    res.block_maps[1] *= 1e6
    data = ex.read_page(ex.page_html(res, None))
    rec = data["methods"][0]
    for key, t in (("maps_t", res.maps), ("block_t", res.block_maps), ("heads_t", res.head_maps)):
        got = rec[key]
        assert got.shape == t.shape and got.dtype == torch.float32
        s = t.flatten(1).abs().amax(1).view(-1, *([1] * (t.dim() - 1)))
        err = (got - t).abs() / s
        assert float(err.max()) <= 2.0 ** -11, key             # float16 rounding of x / max|x|
        assert float(err.max()) > 0                             # really quantised (the check can fail)
    assert rec["targets"] == res.targets.tolist()
    p = res.logits.softmax(-1)
    assert rec["probs"] == pytest.approx([float(p[i, t]) for i, t in enumerate(res.targets.tolist())])


def test_topk_classes_and_methods():
    res = make_result(B=4, topk=2)
    res.targets = torch.tensor([3, 1, 0, 2])
    data = ex.page_data(res, smooth_images(2, 16, 16), methods={"rollout": make_result(B=4, topk=2, heads=False)},
                        class_names=["zero", "one", "two", "three"])
    assert data["n_images"] == 2 and data["topk"] == 2 and data["rows"] == 4
    assert data["class_labels"] == [["three", "one"], ["zero", "two"]]       # image-major rows
    assert [m["key"] for m in data["methods"]] == ["grad", "rollout"]
    assert [m["H"] for m in data["methods"]] == [3, 0]
    assert data["methods"][1]["label"] == "rollout"


def test_images_any_layout_and_bounded():
    res = make_result(B=2)
    u8 = (smooth_images(2, 30, 20) * 255).round().to(torch.uint8)
    for imgs in (u8, u8.permute(0, 2, 3, 1).numpy(), [u8[0], u8[1].permute(1, 2, 0).numpy()]):
        data = ex.page_data(res, imgs, image_format="png")
        assert data["sizes"] == [[20, 30], [20, 30]]
        raw = base64.b64decode(data["images"][0].split(",", 1)[1])
        from PIL import Image
        import io
        back = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
        assert np.array_equal(back, u8[0].permute(1, 2, 0).numpy())          # PNG: lossless
    big = torch.zeros(2, 3, 900, 600, dtype=torch.uint8)
    assert ex.page_data(res, big, max_side=300)["sizes"] == [[200, 300]] * 2
    assert ex.page_data(res, None)["images"] is None


@pytest.mark.parametrize("case", ["heads-shape", "images-count", "normalised-input", "rows-differ",
                                  "nan", "not-result", "mode", "cmap", "names", "topk", "image-shape"])
def test_bad_input(case, tmp_path):
    res = make_result(B=2)
    imgs = smooth_images(2, 16, 16)
    kw = {}
    if case == "heads-shape":
        res.head_maps = res.head_maps[:, :, :, :3]
    elif case == "images-count":
        imgs = imgs[:1]
    elif case == "normalised-input":
        imgs = (imgs - 0.45) / 0.225
    elif case == "rows-differ":
        kw["methods"] = {"direct": make_result(B=3, method="direct")}
    elif case == "nan":
        res.maps[0, 1, 2, 3] = float("nan")
    elif case == "not-result":
        res = res.maps
    elif case == "mode":
        kw["mode"] = "log"
    elif case == "cmap":
        kw["colour_map"] = "hot"
    elif case == "names":
        kw["names"] = ["one"]
    elif case == "topk":
        res.topk = 3
    elif case == "image-shape":
        imgs = imgs[:, :, :, :, None]
    with pytest.raises((ValueError, TypeError)) as e:
        ex.explore(res, imgs, tmp_path / "x.html", **kw)
    assert len(str(e.value)) > 20
    assert not (tmp_path / "x.html").exists()


def test_explore_is_the_top_level_function(tmp_path):
    res = make_result()
    assert daam_fast.explore is ex.explore and "explore" in daam_fast.__all__
    p = daam_fast.explore(res, None, tmp_path / "a" / "b.html")
    assert open(p, encoding="utf-8").read().startswith("<!DOCTYPE html>")


def test_demo_page_entry_point(tmp_path):
    """``python -m daam_fast.explorer out.html``: the demo page of the shipped model."""
    from daam_fast.explorer.__main__ import main
    path = main([str(tmp_path / "demo.html"), "--images", "2", "--side", "64"])
    page = ex.read_page(path)
    assert [m["key"] for m in page["methods"]] == ["grad", "direct", "rollout"] and page["topk"] == 2


def test_result_fields_show_and_repr_html():
    res = make_result(B=4, topk=2)
    assert res.to("cpu").head_maps.shape == (4, 4, 3, 7, 5) and res.to("cpu").topk == 2
    assert res[2:4].topk == 2 and res[2:4].head_maps.shape[0] == 2
    assert res[1].topk == 1 and res[1:3].topk == 1                          # splits an image's rows
    assert torch.equal(res[-1].head_maps, res.head_maps[3:])
    with pytest.raises(IndexError):
        res[4]
    assert DAAMResult.from_block_maps(res.block_maps, res.targets).head_maps is None
    html = res._repr_html_()
    assert html.startswith("<iframe srcdoc=") and "daam-data" in html
    shown = res.show(smooth_images(2, 16, 16))
    text = shown if isinstance(shown, str) else shown.data
    assert "data:image/jpeg;base64," in text
    bad = make_result()
    bad.maps[0, 0, 0, 0] = float("inf")
    assert bad._repr_html_() is None                                         # plain repr, not a wrong page


def test_max_rows_keeps_whole_images():
    res = make_result(B=6, topk=2)
    data = ex.page_data(res, smooth_images(3, 16, 16), max_rows=2)
    assert data["n_images"] == 2 and data["rows"] == 4 and len(data["images"]) == 2
    rec = ex.read_page(ex.page_html(res, None, max_rows=2))["methods"][0]
    assert rec["maps_t"].shape[0] == 4 and torch.allclose(rec["maps_t"], res.maps[:4], rtol=1e-3, atol=1e-7)


def test_shipped_model_end_to_end(tmp_path):
    """DAAM on the shipped model -> page -> decoded maps: the run's maps within float16, and with
    heads=True the head terms the page sums give back the block maps."""
    from daam_fast import DAAM
    from daam_fast.preprocess import prepare
    from daam_fast.zoo import CLASSES, load_model
    from daam_fast.zoo.shapes import make_shapes
    model = load_model("shapes_vit")
    data = make_shapes(2, seed=1)
    x, rgb = prepare(list(data.images), model)
    res = DAAM(model, heads=True)(x)
    page = ex.read_page(ex.explore(res, rgb, tmp_path / "run.html", class_names=list(CLASSES)))
    rec = page["methods"][0]
    s = res.maps.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
    assert float(((rec["maps_t"] - res.maps).abs() / s).max()) <= 2.0 ** -11
    assert page["class_labels"] == [[CLASSES[int(t)]] for t in res.targets]
    if res.head_maps is not None:
        summed = torch.relu(rec["heads_t"].sum(2))
        sb = res.block_maps.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
        assert float(((summed - res.block_maps).abs() / sb).max()) < 4e-3     # measured 3e-4
