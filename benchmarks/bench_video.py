"""Video pipeline vs explain-only, side by side in one process (the target ratio is reported, not asserted).

A generated video (default 200 frames of daam_fast.zoo.shapes with a frame counter, 64 x 64,
H.264) is explained with the shipped model ``shapes_vit``:

- ``explain-only``: the same frames, already decoded and preprocessed in memory, explained in
  batches of the same size inside one ``DAAM`` context (no decode, render or encode);
- ``iterator``: ``iter_video_maps`` (decode + preprocess in the reader thread, explain);
- ``pipeline``: ``explain_video`` end to end (decode, explain, render the final-map overlay,
  encode the MP4).

The issue's target is pipeline >= 85 % of explain-only frames/s (I/O hidden behind compute).

Script mode (prints a Markdown table):
    .venv/bin/python benchmarks/bench_video.py --frames 200 --batch 16 --threads 1
pytest-benchmark mode (``make bench``): one benchmark per provider, same video.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

FRAMES = int(os.environ.get("DAAM_BENCH_VIDEO_FRAMES", "200"))
BATCH = int(os.environ.get("DAAM_BENCH_BATCH", "16"))
PROVIDERS = ("explain-only", "iterator", "pipeline")


def make_video(path: str, frames: int = FRAMES, size: int = 64, fps: int = 25, seed: int = 0) -> None:
    """A generated shapes video (H.264, crf 18) of ``frames`` frames at size x size."""
    import av
    from daam_fast.zoo.shapes import make_shapes
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "18"}
        for start in range(0, frames, 64):
            imgs = make_shapes(min(64, frames - start), seed=seed + start).images.float()
            if size != imgs.shape[-1]:
                imgs = torch.nn.functional.interpolate(imgs, size=(size, size), mode="bilinear", align_corners=False)
            for im in imgs.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy():
                for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(im), format="rgb24")):
                    c.mux(p)
        for p in s.encode():
            c.mux(p)


def decoded_inputs(path: str, model) -> torch.Tensor:
    """All frames of ``path`` decoded and preprocessed for ``model``: (T, 3, h, w) float32."""
    import av
    from daam_fast.preprocess import input_spec, prepare
    with av.open(path) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])
    x, _ = prepare(torch.from_numpy(frames).permute(0, 3, 1, 2), input_spec(model))
    return x


def providers(model, src: str, x: torch.Tensor, batch: int, out_dir: str, method: str = "grad"):
    """name -> zero-argument callable that explains all frames once; returns the frame count."""
    from daam_fast import DAAM
    from daam_fast.video import explain_video, iter_video_maps

    def explain_only():
        with DAAM(model, method=method) as daam:
            for s in range(0, x.shape[0], batch):
                daam(x[s:s + batch])
        return x.shape[0]

    def iterator():
        n = 0
        for _i, _m in iter_video_maps(src, model, method=method, batch_size=batch):
            n += 1
        return n

    def pipeline():
        return explain_video(src, os.path.join(out_dir, "out.mp4"), model, method=method, batch_size=batch,
                             progress=False).frames

    return {"explain-only": explain_only, "iterator": iterator, "pipeline": pipeline}


def side_by_side(fns, reps: int = 5):
    """Round-robin timing after one warm-up each: name -> (median seconds, frames)."""
    frames = {k: f() for k, f in fns.items()}                 # warm-up, and the frame counts
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), frames[k]) for k, v in times.items()}


def table(res) -> str:
    base = res["explain-only"][1] / res["explain-only"][0]
    rows = ["| provider | median s / video | frames / s | ratio to explain-only |", "|---|---:|---:|---:|"]
    for k, (t, n) in res.items():
        rows.append(f"| {k} | {t:.3f} | {n / t:.1f} | {n / t / base:.2f} |")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from daam_fast.zoo import load_model
    torch.set_num_threads(int(os.environ.get("DAAM_BENCH_THREADS", "1")))
    d = str(tmp_path_factory.mktemp("bench_video"))
    src = os.path.join(d, "in.mp4")
    make_video(src, FRAMES)
    model = load_model("shapes_vit")
    x = decoded_inputs(src, model)
    return providers(model, src, x, BATCH, d)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_video(benchmark, setup, provider):
    benchmark.group = f"video shapes_vit {FRAMES} frames B{BATCH}"
    benchmark.extra_info["frames"] = FRAMES
    n = benchmark.pedantic(setup[provider], rounds=3, warmup_rounds=1)
    assert n == FRAMES


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=FRAMES)
    ap.add_argument("--size", type=int, default=64, help="side of the generated frames (the model sees 64 x 64)")
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--method", default="grad", choices=["grad", "direct"])
    a = ap.parse_args(argv)
    from daam_fast.zoo import load_model
    torch.set_num_threads(a.threads)
    model = load_model("shapes_vit")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "in.mp4")
        make_video(src, a.frames, a.size)
        x = decoded_inputs(src, model)
        res = side_by_side(providers(model, src, x, a.batch, d, a.method), reps=a.reps)
    print(f"shapes_vit ({a.method}), {a.frames} frames {a.size}x{a.size} H.264, batch {a.batch}, "
          f"{a.threads} torch threads, {a.reps} reps, medians (CPU, torch {torch.__version__}, "
          f"{os.cpu_count()} cores)")
    print(table(res))
    ratio = (res["pipeline"][1] / res["pipeline"][0]) / (res["explain-only"][1] / res["explain-only"][0])
    print(f"pipeline / explain-only = {ratio:.2f} (target >= 0.85: {'met' if ratio >= 0.85 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
