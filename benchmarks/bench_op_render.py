"""render: the torch path of daam_fast/render.py vs the fused C++ kernel (CPU figures).

    .venv/bin/python benchmarks/bench_op_render.py      # prints median ms, GB/s, the ratio
    make bench                                          # pytest-benchmark

Shapes: a deit_small-like batch (B8, 12 blocks, 14x14 maps, 224x224 pictures) and a patch-8
one (28x28 maps), overlays and heat frames; the maps are the accumulated ones (res.maps).
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from test_op_render import _data  # noqa: E402  (inputs shared with the tests)

from daam_fast.ops import _dispatch  # noqa: E402
from daam_fast.ops.render import render_frames  # noqa: E402

SHAPES = {
    "B8-L12-14x14-224-overlay": ((8, 12, 14, 14, 224, 224), True),
    "B8-L12-14x14-224-heat": ((8, 12, 14, 14, 224, 224), False),
    "B8-L12-28x28-224-overlay": ((8, 12, 28, 28, 224, 224), True),
    "B1-L1-14x14-224-overlay": ((1, 1, 14, 14, 224, 224), True),
}
PROVIDERS = ["torch", "cpp"]


def _bytes(shape, overlay):
    B, L, h, w, H, W = shape
    return 4 * B * L * h * w + (3 * B * H * W if overlay else 0) + B * L * H * W * (3 if overlay else 1)


def _args(shape, overlay):
    block, maps, img = _data(*shape)
    return maps, (img if overlay else None), (shape[4], shape[5])


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("name", list(SHAPES))
def test_render(benchmark, name, provider):
    if not _dispatch.backend_status("render", provider)[0]:
        pytest.skip(f"{provider} unavailable")
    shape, overlay = SHAPES[name]
    maps, img, size = _args(shape, overlay)
    benchmark.group = f"render {name}"
    benchmark.extra_info["GB"] = _bytes(shape, overlay) / 1e9
    benchmark(render_frames, maps, img, "nonlinear", size, backend=provider)


def main(reps: int = 15) -> int:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    print(f"threads: {torch.get_num_threads()}")
    print("| shape | torch ops (ms) | C++ (ms) | C++ GB/s | speed-up |\n|---|---:|---:|---:|---:|")
    for name, (shape, overlay) in SHAPES.items():
        maps, img, size = _args(shape, overlay)
        for p in PROVIDERS:
            for _ in range(2):
                render_frames(maps, img, "nonlinear", size, backend=p)
        ts = {p: [] for p in PROVIDERS}
        for _ in range(reps):
            for p in PROVIDERS:                      # round-robin: both see the same machine load
                t0 = time.perf_counter()
                render_frames(maps, img, "nonlinear", size, backend=p)
                ts[p].append(time.perf_counter() - t0)
        res = {p: statistics.median(t) * 1e3 for p, t in ts.items()}
        gbs = _bytes(shape, overlay) / (res["cpp"] * 1e-3) / 1e9
        print(f"| {name} | {res['torch']:.2f} | {res['cpp']:.2f} | {gbs:.2f} | {res['torch'] / res['cpp']:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
