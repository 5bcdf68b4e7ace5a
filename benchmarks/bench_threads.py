"""Throughput of explaining threads sharing one model: 2 threads against 1, side by side in one run.

Each round explains the same 2 * CALLS batches, once from one thread and once split over two
threads (one model, one DAAM object per thread), and the ratio is taken per round; the median
over rounds is reported with the images/s of each. PyTorch's intra-op thread count is the
process's (``--threads``): with two explaining threads each op still uses it, so the two
threads compete for the same cores.

    .venv/bin/python benchmarks/bench_threads.py --model deit_small_patch16_224 --batch 8 --threads 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import make_inputs, make_model  # noqa: E402
from daam_fast import DAAM  # noqa: E402


def _run(model, x, method: str, workers: int, calls: int) -> float:
    """Seconds to explain ``workers * calls`` batches from ``workers`` threads."""
    daams = [DAAM(model, method=method) for _ in range(workers)]
    errors: list = []

    def work(d):
        try:
            for _ in range(calls):
                d(x)
        except BaseException as e:                     # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(d,)) for d in daams]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads (process-wide)")
    ap.add_argument("--methods", nargs="*", default=["grad", "row"])
    ap.add_argument("--calls", type=int, default=2, help="calls per explaining thread in the 2-thread run")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = make_model(a.model)
    x = make_inputs(model, a.batch)
    print(f"{a.model}, batch {a.batch}, {a.threads} intra-op threads, {a.reps} rounds of {2 * a.calls} calls "
          f"(CPU, torch {torch.__version__})")
    print("| method | 1 thread images/s | 2 threads images/s | 2 threads / 1 (median of rounds) |")
    print("|---|---:|---:|---:|")
    for method in a.methods:
        _run(model, x, method, 1, 1)                                      # warm-up
        one, two = [], []
        for _ in range(a.reps):
            one.append(_run(model, x, method, 1, 2 * a.calls))
            two.append(_run(model, x, method, 2, a.calls))
        n = 2 * a.calls * a.batch
        ratio = statistics.median(o / t for o, t in zip(one, two))
        print(f"| {method} | {n / statistics.median(one):.2f} | {n / statistics.median(two):.2f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
