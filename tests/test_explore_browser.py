"""The explorer page in a real browser: headless Chromium (the system's, driven by Playwright).

Opens the written file from disk, works the controls (block slider, arrow keys, head toggles,
threshold, colour map, normalisation, per-block view, class and method switches) and reads
the canvas pixels back: they equal the Python render of the same maps (the float16 data the
page carries, and the picture as the page decoded it) within one level, with no console
error and no request other than the file itself. Skips, with the reason, where no browser or
no playwright can be had (`.ci/run` installs the Debian package `chromium`).
"""
import os
import shutil

import numpy as np
import pytest
import torch

from daam_fast import explorer as ex
from daam_fast.ops.render import render_frames
from daam_fast.ops.render.reference import colormap_jet
from daam_fast.result import DAAMResult

playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="playwright is not installed (pip install playwright)")

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def _browser_path():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


@pytest.fixture(scope="module")
def browser():
    exe = _browser_path()
    if exe is None:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium; .ci/run does it)")
    try:
        pw = playwright_api.sync_playwright().start()
    except Exception as e:  # noqa: BLE001 - any start-up failure is a reason to skip
        pytest.skip(f"playwright could not start: {e}")
    try:
        b = pw.chromium.launch(executable_path=exe, args=ARGS)
    except Exception as e:  # noqa: BLE001
        pw.stop()
        pytest.skip(f"Chromium at {exe} could not be launched: {e}")
    yield b
    b.close()
    pw.stop()


def _result(seed, method, heads, B=4, L=4, H=3, h=7, w=5, topk=2):
    g = torch.Generator().manual_seed(seed)
    hm = torch.randn(B, L, H, h, w, generator=g)
    hm[:, :, 0] += 0.8 * torch.linspace(0, 1, h * w).view(h, w)           # some structure
    bm = torch.relu(hm.sum(2))
    return DAAMResult.from_block_maps(bm, torch.tensor([3, 1, 0, 2]), logits=torch.randn(B, 5, generator=g),
                                      grid=(h, w), method=method, head_maps=hm if heads else None, topk=topk)


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    """2 images x top-2 rows, 4 blocks, 3 heads, a non-square 7 x 5 grid, 61 x 45 PNG pictures
    (a resize by non-dyadic factors), and a second method without heads."""
    res = _result(0, "grad", True)
    other = _result(1, "direct", False)
    g = torch.Generator().manual_seed(2)
    pics = (torch.rand(2, 3, 61, 45, generator=g) * 255).to(torch.uint8)
    path = str(tmp_path_factory.mktemp("explore") / "run.html")
    ex.explore(res, pics, path, methods={"direct": other}, class_names=["a", "b", "c", "d", "e"],
               image_format="png")
    return path, ex.read_page(path), pics


class Page:
    def __init__(self, browser, path):
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def route(r):
            self.requests.append(r.request.url)
            if r.request.url.startswith(("file://", "data:")):
                r.continue_()
            else:
                r.abort()
        self.page.route("**/*", route)
        self.page.goto("file://" + os.path.abspath(path))
        self.page.wait_for_selector("body[data-ready='1']", timeout=20000)

    def js(self, expr):
        return self.page.evaluate(expr)

    def state(self):
        return self.js("window.daamExplorer.state")

    def frame(self):
        W, H = self.js("window.daamExplorer.size()")
        return np.array(self.js("window.daamExplorer.frame()"), dtype=np.int16).reshape(H, W, 4)

    def heat(self):
        W, H = self.js("window.daamExplorer.size()")
        return np.array(self.js("window.daamExplorer.heat()"), dtype=np.int16).reshape(H, W)

    def slider(self, sel, value):
        self.page.fill(sel, str(value))                     # sets the value and fires input/change


def _lut(name):
    from matplotlib import colormaps
    return torch.from_numpy(np.floor(colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5)).float()


def python_frame(data, st, picture):
    """What the torch path of daam_fast.render.render gives for the page's state: (heat (H, W),
    RGB (H, W, 3)) int16."""
    rec = data["methods"][st["method"]]
    row = st["img"] * data["topk"] + st["cls"]
    if rec["H"] and not all(st["heads"]):
        sel = [i for i, on in enumerate(st["heads"]) if on]
        series = torch.relu(rec["heads_t"][row][:, sel].sum(1))               # ReLU of the selected heads' sum
        if st["view"] == "acc":
            series = torch.cumsum(series, 0)                                  # then accumulated over blocks
    else:
        series = (rec["maps_t"] if st["view"] == "acc" else rec["block_t"])[row]
    H, W = picture.shape[:2]
    img = torch.from_numpy(picture).permute(2, 0, 1)[None]
    heat = render_frames(series[None], None, mode=st["norm"], size=(H, W), backend="torch")[0, st["block"]]
    if st["cmap"] == "jet":
        rgb = render_frames(series[None], img, mode=st["norm"], alpha=st["alpha"], beta=st["beta"],
                            backend="torch")[0, st["block"]]
    else:
        col = _lut(st["cmap"])[heat.long()]
        a, b = torch.tensor(st["alpha"], dtype=torch.float32), torch.tensor(st["beta"], dtype=torch.float32)
        rgb = (a * col + b * img[0].permute(1, 2, 0).float()).round().clamp(0, 255)
    return heat.numpy().astype(np.int16), rgb.numpy().astype(np.int16)


def check(pg, data, label):
    st = pg.state()
    W, H = pg.js("window.daamExplorer.size()")
    picture = np.array(pg.js(f"window.daamExplorer.image({st['img']})"), dtype=np.uint8).reshape(H, W, 4)[..., :3]
    heat_py, rgb_py = python_frame(data, st, picture)
    heat_js, frame = pg.heat(), pg.frame()
    assert (frame[..., 3] == 255).all()
    dh = np.abs(heat_js - heat_py)
    assert dh.max() <= 1, f"{label}: heat differs by {dh.max()} levels ({(dh > 0).mean():.2%} of pixels)"
    assert (dh == 0).mean() > 0.99, f"{label}: {(dh > 0).mean():.2%} of pixels off by one level"
    # the canvas is the colour of the page's heat: exactly the Python colouring of that heat,
    # and within one level of the Python render wherever the heats agree
    d = np.abs(frame[..., :3] - rgb_py)
    same = dh == 0
    assert d[same].max() <= 1, f"{label}: canvas differs from the Python render by {d[same].max()}"
    assert heat_js.std() > 0 or heat_py.std() == 0, label
    return st, heat_py


def test_canvas_equals_python_render_through_the_controls(browser, page_file):
    path, data, pics = page_file
    pg = Page(browser, path)
    try:
        # the picture as the page decoded it is the PNG's pixels
        first = np.array(pg.js("window.daamExplorer.image(0)"), dtype=np.uint8).reshape(61, 45, 4)
        assert np.array_equal(first[..., :3], pics[0].permute(1, 2, 0).numpy())
        st, _ = check(pg, data, "initial (last block)")
        assert st["block"] == 3 and st["view"] == "acc"
        pg.slider("#block", 1)                                                   # block slider
        assert pg.state()["block"] == 1
        check(pg, data, "block slider -> D_2")
        pg.page.click("#heads-all")                                              # focus off the slider
        pg.page.keyboard.press("ArrowRight")                                     # keys move through blocks
        assert pg.state()["block"] == 2
        pg.page.click("#head-1")                                                 # head toggle: heads 1 and 3
        assert pg.state()["heads"] == [True, False, True]
        st, _ = check(pg, data, "head 2 off")
        full = python_frame(data, dict(st, heads=[True] * 3), np.zeros((61, 45, 3), np.uint8))[0]
        assert not np.array_equal(full, pg.heat()), "toggling a head must change the map"
        pg.page.check("#view-block")                                             # per-block L_b
        check(pg, data, "per-block view, head 2 off")
        pg.page.check("#view-acc")
        pg.slider("#thr", 0.55)                                                  # threshold: region and box
        st, heat_py = check(pg, data, "threshold")
        ys, xs = np.nonzero(heat_py >= 255 * 0.55)
        box = pg.js("window.daamExplorer.box()")
        assert st["thrOn"] and box == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        marks = pg.js("""(() => { const c = document.getElementById('marks');
            const ctx = c.getContext('2d', {willReadFrequently: true});
            return Array.from(ctx.getImageData(0, 0, c.width, c.height).data); })()""")
        assert np.array(marks).reshape(-1, 4)[:, 3].max() == 255                # the outline is drawn
        pg.page.select_option("#cmap", "viridis")                                # colour maps
        check(pg, data, "viridis")
        pg.page.select_option("#cmap", "inferno")
        pg.slider("#opacity", 0.7)
        check(pg, data, "inferno, opacity 0.7")
        pg.page.select_option("#cmap", "jet")
        for mode in ("linear", "raw"):                                           # the other normalisations
            pg.page.select_option("#norm", mode)
            check(pg, data, mode)
        pg.page.select_option("#norm", "nonlinear")
        pg.page.click("#class-1")                                                # class switch (top-2)
        assert pg.state()["cls"] == 1
        check(pg, data, "second class")
        pg.page.click("#image-1")                                                # image list
        check(pg, data, "second image")
        pg.page.select_option("#method", "1")                                    # method switch (no heads)
        st, _ = check(pg, data, "direct")
        assert st["heads"] == [] and pg.js("document.getElementById('headnote').textContent")
        pg.page.hover("#marks", position={"x": 10, "y": 10})                     # value under the pointer
        assert "D_" in pg.js("document.getElementById('readout').textContent")
        assert "nonlinear" in pg.js("document.getElementById('normtext').textContent")
        assert pg.errors == []
        assert [u for u in pg.requests if not u.startswith(("file://", "data:"))] == []
    finally:
        pg.page.close()


def test_jpeg_page_without_heads_and_maps_alone(browser, tmp_path):
    res = _result(3, "grad", False, B=3, topk=1)
    res.targets = res.targets[:3]
    from daam_fast.zoo.shapes import make_shapes
    p1 = ex.explore(res, make_shapes(3, size=64).images, str(tmp_path / "jpeg.html"))
    p2 = ex.explore(res, None, str(tmp_path / "alone.html"))
    for p in (p1, p2):
        pg = Page(browser, p)
        try:
            pg.page.keyboard.press("ArrowLeft")
            assert pg.state()["block"] == 2
            pg.page.keyboard.press("ArrowDown")
            assert pg.state()["img"] == 1
            frame = pg.frame()
            assert frame[..., :3].std() > 0
            if p == p2:                                  # maps alone: the colour of the Python heat
                data = ex.read_page(p)
                W, H = pg.js("window.daamExplorer.size()")
                heat = render_frames(data["methods"][0]["maps_t"][1:2], None, size=(H, W), backend="torch")[0, 2]
                heat_js = pg.heat()
                assert np.abs(heat_js - heat.numpy()).max() <= 1
                jet = (colormap_jet(torch.from_numpy(heat_js).float() / 255) * 255).round()
                assert np.array_equal(frame[..., :3], jet.numpy().astype(np.int16))
            assert pg.errors == []
            assert [u for u in pg.requests if not u.startswith(("file://", "data:"))] == []
        finally:
            pg.page.close()



def test_jupyter_iframe_runs_sandboxed(browser):
    """``res.show(images)`` / ``_repr_html_``: the page inside an ``<iframe srcdoc sandbox>`` draws too."""
    res = _result(4, "grad", True, B=2, topk=1)
    res.targets = res.targets[:2]
    shown = res.show((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8))
    host = shown if isinstance(shown, str) else shown.data
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.set_content("<!DOCTYPE html><html><body>" + host + res._repr_html_() + "</body></html>")
        for frame in page.frames[1:3]:
            frame.wait_for_selector("body[data-ready='1']", timeout=20000)
            assert frame.evaluate("window.daamExplorer.state.block") == 3
            assert np.array(frame.evaluate("window.daamExplorer.heat()")).std() > 0
        assert len(page.frames) == 3 and errors == []
    finally:
        page.close()
