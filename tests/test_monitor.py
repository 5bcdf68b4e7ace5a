"""The attention monitor (daam_fast.monitor): shortcut detection on a tiny ViT, training left
unchanged, the files and TensorBoard events it writes, the Lightning callback, the page, bad input.

The tiny ViT (32 x 32 shapes, patch 8: a 4 x 4 grid, 2 blocks) trains in about a second per
hundred steps; the marker is one patch, the top-left one, in the colour of the class.
"""
import json
import math
import os
import re

import pytest
import torch
import torch.nn.functional as F

from daam_fast.monitor import Alert, AlertRule, AttentionMonitor, History, load_history, preserved
from daam_fast.monitor import stats
from daam_fast.monitor.view import page_html, write_page
from daam_fast.zoo.shapes import make_shapes
from daam_fast.zoo.train_shapes import MARKER, build, normalise, with_marker

S = 32
CONFIG = dict(img_size=S, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=6,
              class_token=True, global_pool="token")
CORNER = {"corner": (0, 0, MARKER, MARKER)}


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    model = build(dict(CONFIG, **kw))
    model.pretrained_cfg = dict(input_size=(3, S, S), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return model


@pytest.fixture(scope="module")
def pool():
    return make_shapes(512, seed=7, size=S)


@pytest.fixture(scope="module")
def probe():
    return make_shapes(8, seed=123, size=S)


def train(model, pool, steps, monitor=None, shortcut=False, seed=1, batch=32, lr=2e-3):
    """A plain training loop (AdamW) on batches drawn from ``pool``; the marker on every picture."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        if monitor is not None:
            monitor.step(step)
        idx = torch.randint(0, len(pool), (batch,), generator=g)
        pics, labels = pool.images[idx], pool.labels[idx]
        if shortcut:
            pics = with_marker(pics, labels, torch.ones(batch, dtype=torch.bool))
        loss = F.cross_entropy(model(normalise(pics)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if monitor is not None:
        monitor.log(steps)
    return model


# ------------------------------------------------------------------ what it measures
def test_stats_known_answers():
    uniform = stats.distribution(torch.ones(2, 4, 4))
    assert torch.allclose(uniform, torch.full((2, 16), 1 / 16))
    one = torch.zeros(1, 4, 4)
    one[0, 1, 2] = 3.0
    assert torch.allclose(stats.entropy(stats.distribution(one)), torch.zeros(1), atol=1e-6)
    assert torch.allclose(stats.entropy(uniform), torch.ones(2))
    assert torch.allclose(stats.distribution(torch.zeros(1, 2, 2)), torch.full((1, 4), 0.25))   # zero map: uniform
    # a box covering the top-left 8 x 8 of a 32 x 32 picture is exactly patch (0, 0) of a 4 x 4 grid
    cover = stats.coverage([stats.box_mask((0, 0, 8, 8), (S, S))], (4, 4))
    assert cover[0, 0] == 1 and cover[0, 1:].sum() == 0
    half = stats.coverage([stats.box_mask((0, 0, 4, 8), (S, S))], (4, 4))
    assert torch.isclose(half[0, 0], torch.tensor(0.5))
    p = stats.distribution(torch.arange(16.0).view(1, 4, 4))
    assert torch.isclose(stats.mass(p, cover), p[0, 0:1])


def test_spearman_matches_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (3, 40), generator=g).float()          # many ties
    b = a + torch.randn(3, 40, generator=g)
    got = stats.spearman(a, b)
    for i in range(3):
        want = scipy_stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic
        assert abs(float(got[i]) - want) < 1e-6
    assert torch.allclose(stats.drift(a, a), torch.zeros(3), atol=1e-6)
    assert math.isnan(float(stats.spearman(torch.ones(1, 5), a[:1, :5])[0]))


# ------------------------------------------------------------------ shortcut learning
def test_shortcut_raises_alert_and_clean_run_does_not(pool, probe):
    rule = AlertRule()
    marked = with_marker(probe.images, probe.labels, torch.ones(len(probe), dtype=torch.bool))
    mon = AttentionMonitor(tiny(), marked, labels=probe.labels, masks=probe.masks, regions=CORNER, every=25,
                           rule=rule)
    seen = []
    mon.on_alert = seen.append
    train(mon.model, pool, 150, monitor=mon, shortcut=True)
    corner = mon.history.series("region/corner").mean(1)            # (T,) mean over the probes
    assert mon.history.steps == [0, 25, 50, 75, 100, 125, 150]
    assert corner[-1] > 5 * corner[0] and corner.argmax() > 0, corner
    fired = [a for a in mon.alerts if a.quantity == "region/corner"]
    assert fired and fired[0].image is None and fired[0].step > 0
    assert seen == mon.alerts

    clean = AttentionMonitor(tiny(), probe.images, labels=probe.labels, masks=probe.masks, regions=CORNER, every=25,
                             rule=rule)
    train(clean.model, pool, 150, monitor=clean)
    assert clean.alerts == [], [str(a) for a in clean.alerts]
    assert clean.history.series("region/corner").mean(1).max() < 0.2


def test_alert_rule_per_image_and_edges():
    from daam_fast.monitor.alerts import AlertTracker
    tr = AlertTracker(AlertRule(region=0.5, factor=None, drift=None, per_image=True), ["a", "b"])
    s = lambda a, b: {"region/r": [a, b]}                         # noqa: E731
    assert tr.update(0, s(0.1, 0.1)) == []
    first = tr.update(1, s(0.6, 0.1))
    assert [(a.image, a.name, a.quantity) for a in first] == [(0, "a", "region/r")]
    assert tr.update(2, s(0.7, 0.1)) == []                         # still holding: no new alert
    assert tr.update(3, s(0.2, 0.1)) == []
    again = tr.update(4, s(0.9, 0.9))                              # mean 0.9 too
    assert sorted((a.image is None, a.image or 0) for a in again) == [(False, 0), (False, 1), (True, 0)]
    d = AlertTracker(AlertRule(outside=None, region=None, drift=0.5, drift_factor=3, warmup=2), ["a"])
    for t, v in enumerate([0.9, 0.1, 0.1]):
        assert d.update(t, {"drift": [v]}) == []
    spike = d.update(3, {"drift": [0.8]})
    assert len(spike) == 1 and spike[0].quantity == "drift"
    with pytest.raises(ValueError, match="factor"):
        AlertRule(factor=0.5)


# ------------------------------------------------------------------ training unchanged
def test_training_identical_with_and_without_monitor(pool, probe):
    a = train(tiny(seed=3, drop_rate=0.1, attn_drop_rate=0.1), pool, 12, seed=5)   # dropout draws the RNG
    model = tiny(seed=3, drop_rate=0.1, attn_drop_rate=0.1)
    mon = AttentionMonitor(model, probe.images, labels=probe.labels, masks=probe.masks, regions=CORNER, every=3)
    b = train(model, pool, 12, monitor=mon, seed=5)
    assert len(mon.history) == 5
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_step_restores_everything(probe):
    model = tiny(drop_rate=0.1)
    model.train()
    model.blocks[0].eval()                                         # mixed train / eval flags
    model.pos_embed.requires_grad_(False)
    model(normalise(probe.images)).sum().backward()
    grads = {n: (p.grad, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    attrs = [(m, dict(vars(m))) for m in model.modules()]
    rng = torch.get_rng_state()
    mon = AttentionMonitor(model, probe.images, every=1)
    with torch.no_grad():
        mon.step(0)                                                 # autograd off in the caller: still explains
        assert not torch.is_grad_enabled()
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    for n, p in model.named_parameters():
        assert p.requires_grad == flags[n]
        g, v = grads[n]
        assert p.grad is g and (g is None or torch.equal(p.grad, v))
    for m, before in attrs:                                         # no attribute left patched or added
        now = vars(m)
        assert now.keys() == before.keys() and all(now[k] is before[k] for k in ("forward",) if k in now)
    assert len(mon.history.maps) == 1 and mon.history.maps[0].shape == (8, 2, 4, 4)


def test_preserved_restores_on_error():
    model = tiny()
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        with preserved(model):
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            raise RuntimeError("boom")
    assert model.training and all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------ files and TensorBoard
def test_log_files_and_tensorboard_events(tmp_path, probe):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    model = tiny()
    names = [f"shape {i}" for i in range(len(probe))]
    with AttentionMonitor(model, probe.images, labels=probe.labels, masks=probe.masks, regions=CORNER, every=2,
                          log_dir=str(tmp_path), names=names, rule=AlertRule(region=0.0)) as mon:
        for s in range(5):
            mon.step(s)
    assert mon.history.steps == [0, 2, 4]
    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    for key in ("entropy", "drift", "mask_energy", "region/corner", "prob", "correct"):
        assert f"daam/mean/{key}" in tags["scalars"], key
    ent = [e.value for e in ea.Scalars("daam/shape 3/entropy")]
    assert [e.step for e in ea.Scalars("daam/shape 3/entropy")] == [0, 2, 4]
    assert ent == pytest.approx(mon.history.series("entropy")[:, 3].tolist(), rel=1e-6)
    assert [e.step for e in ea.Scalars("daam/shape 0/drift")] == [2, 4]        # no drift at the first step
    img = ea.Images("daam/shape 0/flow")
    assert [e.step for e in img] == [0, 2, 4] and (img[0].width, img[0].height) == (2 * S, S)   # D_1 | D_2
    assert any("daam/alerts" in t for t in tags["tensors"])                   # add_text: the alerts

    h = load_history(tmp_path)
    assert h.steps == mon.history.steps and h.names == names
    assert all(torch.equal(x, y) for x, y in zip(h.maps, mon.history.maps))
    assert h.scalars[1]["entropy"] == pytest.approx(mon.history.scalars[1]["entropy"])
    assert h.scalars[0]["drift"] == [None] * len(probe)
    assert h.alerts == mon.alerts and len(h.alerts) >= 1                       # region=0.0: the corner fires
    assert torch.equal(h.pictures, mon.pictures)
    import numpy as np
    arr = np.load(os.path.join(tmp_path, "daam_monitor", "maps", "0000000002.npy"), mmap_mode="r")
    assert isinstance(arr, np.memmap) and arr.shape == (len(probe), 2, 4, 4)


def test_view_page_and_cli(tmp_path, probe):
    from daam_fast.cli import main
    model = tiny()
    evil = "<script>alert(1)</script>"
    mon = AttentionMonitor(model, probe.images[:2], every=1, log_dir=str(tmp_path / "run"), names=[evil, "b"],
                           regions={"c": (0, 0, 8, 8)}, rule=AlertRule(region=0.0))
    mon.step(0)
    mon.step(1)
    mon.close()
    page = page_html(mon.history, title=evil)
    assert evil not in page and "&lt;script&gt;" in page                    # names and title escaped
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)   # nothing fetched
    blob = re.search(r'<script type="application/json" id="monitor-data">(.*?)</script>', page, re.S).group(1)
    data = json.loads(blob)
    assert data["steps"] == [0, 1] and data["names"][0] == evil and len(data["alerts"]) == len(mon.alerts)
    import base64
    import numpy as np
    q = np.frombuffer(base64.b64decode(data["maps"]), dtype="<f2").reshape(2, 2, 2, 4, 4).astype(np.float32)
    want = torch.stack(mon.history.maps)
    want = want / want.flatten(2).amax(2)[..., None, None, None]
    assert np.abs(q - want.numpy()).max() < 1e-3
    out = tmp_path / "page.html"
    assert main(["monitor", "view", str(tmp_path / "run"), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert main(["monitor", "view", str(tmp_path / "run"), "--out", str(out)]) == 2          # exists
    assert main(["monitor", "view", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.html")]) == 2
    assert write_page(str(tmp_path / "run"), tmp_path / "w.html").endswith("w.html")


# ------------------------------------------------------------------ Lightning
def test_lightning_callback(tmp_path, probe, pool):
    L = pytest.importorskip("lightning.pytorch", reason="lightning is not installed (pip install lightning)")
    pytest.importorskip("tensorboard")
    from daam_fast.monitor import DAAMCallback
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = tiny()

        def training_step(self, batch, _):
            x, y = batch
            return F.cross_entropy(self.model(normalise(x)), y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    data = torch.utils.data.TensorDataset(pool.images[:32], pool.labels[:32])
    cb = DAAMCallback(probe.images, masks=probe.masks, labels=probe.labels, regions=CORNER, every=2)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=L.loggers.TensorBoardLogger(str(tmp_path)),
                        callbacks=[cb], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=8))
    assert trainer.global_step == 8
    assert cb.monitor.history.steps == [0, 2, 4, 6]
    log_dir = trainer.logger.log_dir
    assert load_history(log_dir).steps == [0, 2, 4, 6]
    ea = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("daam/mean/region/corner")] == [0, 2, 4, 6]


# ------------------------------------------------------------------ bad input
def test_bad_input(probe):
    model = tiny()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        AttentionMonitor(model, probe.images[:, 0])                       # (N, H, W)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        AttentionMonitor(model, probe.images[:, :1])                      # one channel
    with pytest.raises(ValueError, match=r"images\[1\]"):
        AttentionMonitor(model, [probe.images[0], probe.images[1, :2]])
    with pytest.raises(ValueError, match="7 masks for 8 probe images"):
        AttentionMonitor(model, probe.images, masks=probe.masks[:7])
    with pytest.raises(ValueError, match="does not match"):
        AttentionMonitor(model, probe.images, masks=probe.masks[:, :16])
    with pytest.raises(ValueError, match="labels"):
        AttentionMonitor(model, probe.images, labels=probe.labels[:3])
    with pytest.raises(ValueError, match="box"):
        AttentionMonitor(model, probe.images, regions={"r": (8, 0, 0, 8)})
    for every in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="every"):
            AttentionMonitor(model, probe.images, every=every)
    with pytest.raises(ValueError) as e:
        AttentionMonitor(tiny(global_pool="avg", class_token=False), probe.images)
    msg = str(e.value)
    assert "mean-pooled" in msg and "method='grad'" in msg
    mon = AttentionMonitor(tiny(global_pool="avg", class_token=False), probe.images[:2], method="grad", every=1)
    assert mon.step(0) == [] and mon.history.maps[0].shape == (2, 2, 4, 4)   # the method it names works
    assert mon.step(0) is None and mon.step(1) == []                       # a step already logged: skipped


def test_history_replay_gives_the_monitors_alerts(probe):
    rule = AlertRule(region=0.0, per_image=True)
    mon = AttentionMonitor(tiny(), probe.images[:3], regions=CORNER, every=1, rule=rule)
    for s in range(3):
        mon.step(s)
    assert mon.alerts and mon.history.replay(rule) == mon.alerts
    assert mon.history.replay(AlertRule(region=None, factor=None, drift=None)) == []


def test_view_page_in_a_browser(tmp_path, probe):
    """The page in headless Chromium (skipped without it): no script error, no request, the
    sliders and the alert list work, a probe's name shows as text."""
    import shutil
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    exe = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if exe is None:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium)")
    mon = AttentionMonitor(tiny(), probe.images[:3], masks=probe.masks[:3], every=1, regions=CORNER,
                           names=["<b>x</b>", "b", "c"], rule=AlertRule(region=0.0, per_image=True))
    for s in range(3):
        mon.step(s)
    path = write_page(mon.history, tmp_path / "p.html")
    try:
        pw = sync_api.sync_playwright().start()
    except Exception as e:  # noqa: BLE001 - any start-up failure is a reason to skip
        pytest.skip(f"playwright could not start: {e}")
    try:
        b = pw.chromium.launch(executable_path=exe, args=["--headless=new", "--no-sandbox", "--disable-gpu"])
        page = b.new_page()
        errors, requests = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: requests.append(r.url))
        page.goto("file://" + os.path.abspath(path))
        assert page.inner_text("#list button >> nth=0").startswith("<b>x</b>")
        assert page.inner_text("#readout").startswith("step 2, D_2 of 2")
        page.fill("#step", "0")
        page.dispatch_event("#step", "input")
        page.fill("#block", "0")
        page.dispatch_event("#block", "input")
        assert page.inner_text("#readout").startswith("step 0, D_1 of 2")
        page.locator("#alertlist li").last.click()
        assert page.locator(".chart").count() == 5 and page.locator(".chart circle").count() >= 1
        assert errors == [] and [u for u in requests if not u.startswith(("file:", "data:"))] == []
        b.close()
    finally:
        pw.stop()
