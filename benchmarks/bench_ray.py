"""Throughput of daam_fast.distributed (Ray Data actor pool) with 1 and 2 local actors.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray.py --images 1024 --repeats 3

Generates shapes PNGs (64 x 64) and explains them with the shipped model, side by side in
one process (one local Ray instance, ``num_cpus=2``):

- ``single process, 1 thread`` / ``2 threads``: read PNG + prepare + DAAM in a loop (the
  baseline: what a user gets without Ray);
- ``ray, N actors``: ``explain_dataset`` with a pool of N actors (1 CPU = 1 torch thread
  each), into a fresh output folder per run.

Reported per provider (medians over the repeats): wall time of the whole job (for Ray:
including actor start-up, i.e. importing torch and loading the model in each actor) and
images/s; and for Ray the steady-state images/s, measured from the shard files' modification
times (images in all shards but the first per actor, divided by the time from the first
to the last shard), which is what a long job converges to.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def single_process(paths, threads: int, batch_size: int) -> float:
    import torch
    from daam_fast import DAAM
    from daam_fast.io import read_image
    from daam_fast.preprocess import input_spec, prepare
    from daam_fast.zoo import load_model
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = load_model("shapes_vit")
        spec = input_spec(model)
        t0 = time.perf_counter()
        with DAAM(model) as daam:
            for s in range(0, len(paths), batch_size):
                x, _ = prepare([read_image(p) for p in paths[s:s + batch_size]], spec)
                daam(x).to("cpu")
        return time.perf_counter() - t0
    finally:
        torch.set_num_threads(old)


def ray_run(src: str, actors: int, shard_size: int, batch_size: int) -> tuple:
    from daam_fast.distributed import explain_dataset
    out = tempfile.mkdtemp(prefix="bench_ray_")
    try:
        t0 = time.perf_counter()
        m = explain_dataset(src, out, "shapes_vit", num_actors=actors, shard_size=shard_size, batch_size=batch_size)
        wall = time.perf_counter() - t0
        assert m["complete"] and m["results"] == m["inputs"], m
        shards = sorted((os.stat(os.path.join(out, s["file"])).st_mtime, s["rows"]) for s in m["shards"])
        if len(shards) > actors:
            span = shards[-1][0] - shards[actors - 1][0]
            steady = sum(r for _, r in shards[actors:]) / span if span > 0 else float("nan")
        else:
            steady = float("nan")
        return wall, steady
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    import ray
    from daam_fast.zoo.shapes import make_shapes, save_pngs
    src = tempfile.mkdtemp(prefix="bench_ray_src_")
    try:
        paths = save_pngs(make_shapes(args.images, seed=5), src)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
        rows = {}
        single_process(paths[:64], 1, args.batch_size)                        # warm-up
        for r in range(args.repeats):                                         # round-robin over providers
            for threads in (1, 2):
                rows.setdefault(f"single process, {threads} thread{'s' * (threads > 1)}", []).append(
                    (single_process(paths, threads, args.batch_size), float("nan")))
            for a in args.actors:
                rows.setdefault(f"ray, {a} actor{'s' * (a > 1)}", []).append(
                    ray_run(src, a, args.shard_size, args.batch_size))
            print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr)
        ray.shutdown()
    finally:
        shutil.rmtree(src, ignore_errors=True)
    base = statistics.median(w for w, _ in rows["single process, 1 thread"])
    print(f"{args.images} images 64x64, shapes_vit (grad), model batch {args.batch_size}, shard {args.shard_size}, "
          f"medians of {args.repeats}; load average at the end: {os.getloadavg()[0]:.1f}\n")
    print("| provider | wall s | images/s (whole job) | steady images/s | speed-up vs single process 1 thread |")
    print("|---|---:|---:|---:|---:|")
    for name, vals in rows.items():
        wall = statistics.median(w for w, _ in vals)
        steady = statistics.median(s for _, s in vals)
        st = "" if steady != steady else f"{steady:.0f}"
        print(f"| {name} | {wall:.1f} | {args.images / wall:.0f} | {st} | {base / wall:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
