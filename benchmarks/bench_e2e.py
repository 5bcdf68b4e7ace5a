"""End-to-end: plain inference vs DAAM grad vs the reference, side by side in one process.

Script mode (prints a Markdown table; these are CPU figures):
    .venv/bin/python benchmarks/bench_e2e.py --model deit_small_patch16_224 --batch 8 --threads 2
pytest-benchmark mode (``make bench``): one benchmark per provider, same model and inputs.
"""
from __future__ import annotations

import argparse
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import make_inputs, make_model, providers, side_by_side, table  # noqa: E402

MODEL = os.environ.get("DAAM_BENCH_MODEL", "deit_small_patch16_224")
BATCH = int(os.environ.get("DAAM_BENCH_BATCH", "8"))


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(int(os.environ.get("DAAM_BENCH_THREADS", "2")))
    model = make_model(MODEL)
    return model, make_inputs(model, BATCH), providers(model)


@pytest.mark.parametrize("provider", ["inference", "daam_fast grad", "daam_fast direct", "daam_fast.reference"])
def test_e2e(benchmark, setup, provider):
    model, x, fns = setup
    benchmark.group = f"e2e {MODEL} B{BATCH}"
    benchmark.extra_info["images"] = BATCH
    benchmark.pedantic(fns[provider], args=(x,), rounds=3, warmup_rounds=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--skip", nargs="*", default=[], help="providers to leave out")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = make_model(a.model)
    x = make_inputs(model, a.batch)
    fns = {k: v for k, v in providers(model).items() if k not in a.skip}
    times = side_by_side(fns, x, reps=a.reps)
    print(f"{a.model}, batch {a.batch}, {a.threads} threads, {a.reps} reps (CPU, torch {torch.__version__})")
    print(table(times, a.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
