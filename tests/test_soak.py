"""Soak test (not in the default run: ``pytest -m soak tests/test_soak.py``).

2,000 generated images explained with the shipped model through the context manager, in
batches of 16 (a new ``with DAAM(model)`` per batch, as a service would), each batch also
rendered; the live tensors and the resident memory (RSS) must stay flat after warm-up: no
tensor kept per call, no growth of the process beyond allocator noise. Measured: 145 s (direct) and
409 s (grad) on the shared 2-core machine under a load average of 8; much less when idle.
"""

import pytest
import torch

from daam_fast import DAAM, render
from daam_fast.preprocess import input_spec, prepare
from daam_fast.zoo import load_model
from daam_fast.zoo.shapes import make_shapes

N_IMAGES, BATCH, WARMUP = 2000, 16, 10


from memory import live_tensors as _live_tensors  # noqa: E402
from memory import rss_mb as _rss_mb  # noqa: E402


@pytest.mark.soak
@pytest.mark.parametrize("method", ["grad", "direct"])
def test_memory_flat_over_2000_images(method):
    model = load_model("shapes_vit")
    spec = input_spec(model)
    pool = make_shapes(256, seed=99)                    # cycled with flips, so batches differ
    rss, done, finals = [], 0, 0.0
    tensors0 = None
    for step in range(N_IMAGES // BATCH):
        i = (step * BATCH) % 256
        pics = pool.images[i:i + BATCH]
        if (step // 16) % 2:
            pics = pics.flip(-1)
        x, rgb = prepare(pics, spec)
        with DAAM(model, method=method) as daam:
            res = daam(x)
        frames = render(res.maps, images=rgb)
        assert torch.isfinite(res.maps).all() and frames.shape[:2] == (BATCH, 6)
        finals += float(res.final.sum())
        done += len(res)
        del res, frames, daam, x, rgb
        if step == WARMUP:
            tensors0 = _live_tensors()
        if step >= WARMUP:
            rss.append(_rss_mb())
    assert done == N_IMAGES and finals > 0
    tensors1 = _live_tensors()
    assert tensors1 <= tensors0, f"live tensors grew {tensors0} -> {tensors1} over {N_IMAGES} images"
    q = len(rss) // 4
    early, late = sorted(rss[:q])[q // 2], sorted(rss[-q:])[q // 2]     # medians of the first / last quarter
    assert late - early < 20, f"RSS grew {early:.0f} -> {late:.0f} MB over {N_IMAGES} images ({method})"
    assert max(rss) - rss[0] < 60, f"RSS peaked {max(rss) - rss[0]:.0f} MB above its post-warm-up level"
