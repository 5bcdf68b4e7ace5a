"""block_map: the PyTorch ops it replaces vs the C++ kernel, on strided qkv views (CPU figures).

    .venv/bin/python benchmarks/bench_op_block_map.py      # prints median us, GB/s and the ratio
    make bench                                              # pytest-benchmark
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from test_op_block_map import _inputs  # noqa: E402  (baselines and inputs shared with the tests)

from daam_fast.ops import _dispatch  # noqa: E402
from daam_fast.ops.block_map import block_map  # noqa: E402

SHAPES = {"B8-H6-N197-d64": (8, 6, 197, 64), "B8-H6-N785-d64": (8, 6, 785, 64), "B8-H12-N577-d64": (8, 12, 577, 64)}
PROVIDERS = ["torch", "cpp"]


def _bytes(B, H, N, d):
    return 4 * (2 * B * H * N * d + 2 * B * H * d + B * N)   # k and v read once, q, g, out


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_block_map(benchmark, shape, provider):
    if not _dispatch.backend_status("block_map", provider)[0]:
        pytest.skip(f"{provider} unavailable")
    B, H, N, d = SHAPES[shape]
    q, k, v, g = _inputs(B, H, N, d)
    benchmark.group = f"block_map {shape}"
    benchmark.extra_info["GB"] = _bytes(B, H, N, d) / 1e9
    benchmark(block_map, q, k, v, g, d ** -0.5, 1, backend=provider)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_block_map_heads(benchmark, shape):
    """The per-head output (heads=True) on the C++ kernel: its cost over the map alone."""
    if not _dispatch.backend_status("block_map", "cpp")[0]:
        pytest.skip("cpp unavailable")
    B, H, N, d = SHAPES[shape]
    q, k, v, g = _inputs(B, H, N, d)
    benchmark.group = f"block_map {shape}"
    benchmark(block_map, q, k, v, g, d ** -0.5, 1, backend="cpp", heads=True)


def main() -> int:
    """Alternated rounds, medians: torch ops, C++, C++ with heads=True, and the C++ launch called
    directly (without the daam_fast::block_map op and its dispatch) to show the op's overhead."""
    from daam_fast.ops.block_map.cpu import block_map_cpp
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    provs = {"torch": lambda *a: block_map(*a, backend="torch"), "cpp": lambda *a: block_map(*a, backend="cpp"),
             "cpp heads": lambda *a: block_map(*a, backend="cpp", heads=True),
             "cpp direct": lambda *a: block_map_cpp(*a)}
    print("| shape | torch ops (us) | C++ (us) | C++ GB/s | speed-up | C++ heads=True (us) | C++ without the op (us) |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for name, (B, H, N, d) in {"B1-H6-N197-d64": (1, 6, 197, 64), **SHAPES}.items():
        q, k, v, g = _inputs(B, H, N, d)
        for f in provs.values():
            for _ in range(3):
                f(q, k, v, g, d ** -0.5, 1)
        ts = {p: [] for p in provs}
        for _ in range(30):
            for p, f in provs.items():
                t0 = time.perf_counter()
                f(q, k, v, g, d ** -0.5, 1)
                ts[p].append(time.perf_counter() - t0)
        res = {p: statistics.median(t) * 1e6 for p, t in ts.items()}
        gbs = _bytes(B, H, N, d) / (res["cpp"] * 1e-6) / 1e9
        print(f"| {name} | {res['torch']:.0f} | {res['cpp']:.0f} | {gbs:.1f} | {res['torch'] / res['cpp']:.2f}x | "
              f"{res['cpp heads']:.0f} | {res['cpp direct']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
