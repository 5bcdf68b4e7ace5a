"""The commands against their own explainer: ``daam-fast explain`` and ``daam-fast video`` vs
explain-only, side by side in one run. Ratios are reported, never asserted.

Cases (generated here, deterministic):

- ``photos``: N JPEG photos of 640 x 480 (1/f colour fields, shaded blobs, texture) explained
  with ``deit_small_patch16_224`` loaded from a checkpoint file written from RANDOM weights
  (``timm.create_model(pretrained=False)``; no download here), batch 16.
- ``shapes``: N PNGs of ``daam_fast.zoo.shapes`` with the shipped ``shapes_vit``, batch 16.
- ``video720`` / ``video1080``: an H.264 clip (a pan over a generated scene) at 1280 x 720 /
  1920 x 1080 with deit_small, batch 8; ``video256``: 256 x 256 shapes clip, shipped model, batch 16.
- ``rss``: peak RSS (the command's process and all its children, sampled every 20 ms) for
  ``daam-fast explain`` on a small and a large number of shapes images (default 200 and 2,000).
- ``costs``: CPU ms per image of each output, drawn and written in one thread
  (``daam_fast.outputs.writer.write_batch`` on batches of 16, files in the work folder), for a
  640 x 480 photo with 12 blocks of 14 x 14 and a 64 x 64 shapes image with 6 blocks of 8 x 8.

Providers, alternated round by round (the ratio is taken per round, then the median):

- ``explain-only``: in a fresh process (as the command), after loading the model: read + prepare
  + ``DAAM`` in batches (images); for video the already decoded and prepared frames through
  ``DAAM`` (as benchmarks/bench_video.py). Both sides start cold, so both pay the first
  batch's one-time costs (thread pools, allocator, hooks).
- ``cmd default``: the command with its default outputs; ``cmd all``: every ``--outputs`` choice
  (older CLIs without ``--outputs`` always write everything: then both are the same command).
  The time is the command's own timer (printed by the command: after the model is loaded,
  before the summary is written; this excludes Python start-up and model loading, which
  explain-only excludes too); the wall time including start-up is printed beside it.

The command runs as ``python -m daam_fast`` of whatever ``daam_fast`` this interpreter imports:
set ``PYTHONPATH`` to measure another checkout. Threads: ``--threads`` for both sides
(``torch.set_num_threads`` here, ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` for the command).

Examples:
    .venv/bin/python benchmarks/bench_cli.py                 # all cases, full sizes (several minutes)
    .venv/bin/python benchmarks/bench_cli.py --quick         # small sizes, one round (about a minute)
    .venv/bin/python benchmarks/bench_cli.py --cases photos,shapes --photos 16 --shapes 48
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction

import numpy as np
import torch

CASES = ("photos", "shapes", "video720", "video1080", "video256", "rss", "costs")
# Targets of the photos and 720p cases; the shipped-model cases (shapes, 256 x 256 video) are reported.
TARGETS = {"photos": {"cmd default": 0.9, "cmd all": 0.6}, "video720": {"cmd video": 0.85},
           "video1080": {"cmd video": 0.8}}


# ------------------------------------------------------------------------------------------ inputs
def _pink(rng: np.random.Generator, h: int, w: int, power: float = 2.2) -> np.ndarray:
    """A (h, w) field of 1/f^power noise scaled to [0, 1] (smooth, photo-like)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w)) ** (power / 2)
    spec = amp * np.exp(2j * np.pi * rng.random(amp.shape))
    f = np.fft.irfft2(spec, s=(h, w))
    return (f - f.min()) / (np.ptp(f) + 1e-12)


def make_photo(seed: int, h: int = 480, w: int = 640) -> np.ndarray:
    """A natural-ish (h, w, 3) uint8 picture: coloured 1/f background, shaded ellipses, grain."""
    rng = np.random.default_rng(seed)
    base = np.stack([_pink(rng, h, w) for _ in range(3)], -1)
    tint = rng.uniform(0.3, 1.0, 3)
    img = 0.25 + 0.6 * (0.6 * base + 0.4 * base.mean(-1, keepdims=True)) * tint
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(2, 6)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.05, 0.3) * h, rng.uniform(0.05, 0.3) * w
        d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        m = np.clip(1.5 - d, 0, 1)[..., None]
        shade = (1 - 0.5 * (yy - cy + ry)[..., None] / (2 * ry)).clip(0.3, 1)
        img = img * (1 - m) + m * rng.uniform(0, 1, 3) * shade
    img += rng.normal(0, 0.02, img.shape)
    return (img.clip(0, 1) * 255).round().astype(np.uint8)


def make_photos(d: str, n: int, seed: int = 0) -> str:
    from PIL import Image
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        Image.fromarray(make_photo(seed + i)).save(os.path.join(d, f"photo_{i:04d}.jpg"), quality=90)
    return d


def make_shape_pngs(d: str, n: int, seed: int = 0) -> str:
    from daam_fast.zoo.shapes import make_shapes, save_pngs
    for s in range(0, n, 500):
        save_pngs(make_shapes(min(500, n - s), seed=seed + s), d, prefix=f"shape{s // 500}")
    return d


def make_checkpoint(path: str, name: str = "deit_small_patch16_224") -> str:
    """A state dict of ``name`` with RANDOM weights (no download), for ``--checkpoint``."""
    import timm
    torch.manual_seed(0)
    torch.save(timm.create_model(name, pretrained=False).state_dict(), path)
    return path


def make_clip(path: str, frames: int, h: int, w: int, fps: int = 25, seed: int = 0, shapes: bool = False) -> str:
    """An H.264 clip: a slow pan over a generated scene (or shapes pictures when ``shapes``)."""
    import av
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "20", "preset": "ultrafast"}
        if shapes:
            from daam_fast.zoo.shapes import make_shapes
            imgs = make_shapes(frames, seed=seed).images.float()
            imgs = torch.nn.functional.interpolate(imgs, size=(h, w), mode="bilinear", align_corners=False)
            pics = imgs.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        else:
            scene = make_photo(seed, h + frames, w + 2 * frames)
        for t in range(frames):
            f = pics[t] if shapes else scene[t:t + h, 2 * t:2 * t + w]
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


# ------------------------------------------------------------------------------------------ runs
class PeakRSS(threading.Thread):
    """Samples the summed RSS of a process and its descendants (Linux /proc) until stopped."""

    def __init__(self, pid: int, every: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.done = pid, every, 0, threading.Event()

    @staticmethod
    def _tree(pid: int) -> list:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            try:
                for t in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{t}/children") as f:
                        todo += [int(c) for c in f.read().split()]
            except OSError:
                pass
        return out

    def run(self) -> None:
        while not self.done.is_set():
            total = 0
            for p in self._tree(self.pid):
                try:
                    with open(f"/proc/{p}/status") as f:
                        total += next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) * 1024
                except (OSError, StopIteration):
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.every)


def fresh_dir(path: str) -> str:
    """An empty folder to write ``path`` into: an earlier round's outputs there are moved aside
    (into ``.trash`` beside it, deleted when the benchmark ends), not deleted.

    Deleting thousands of files makes ext4 skip their inodes for the next 60-300 s
    (``recently_deleted`` in its inode allocator, which reads each one's inode block): creating a
    file then costs 0.3-0.9 ms of system CPU instead of 0.02 ms on this machine
    (benchmarks/NOTES.md, 2026-11-30: 0.022 -> 0.317 ms per file after three
    delete-and-rewrite rounds of 10,000 files), a cost of the benchmark's clean-up, not of the
    command, and the main source of the run-to-run spread of the shapes ratios before.
    """
    if os.path.exists(path):
        import uuid
        trash = os.path.join(os.path.dirname(os.path.abspath(path)), TRASH)
        os.makedirs(trash, exist_ok=True)
        os.rename(path, os.path.join(trash, f"{os.path.basename(path)}-{uuid.uuid4().hex[:8]}"))
    return path


TRASH = ".trash"


def empty_trash(work: str) -> None:
    """Delete what :func:`fresh_dir` moved aside under ``work`` (after every timed run)."""
    import shutil
    for root, dirs, _ in os.walk(work):
        if TRASH in dirs:
            shutil.rmtree(os.path.join(root, TRASH), ignore_errors=True)
            dirs.remove(TRASH)


def run_cmd(argv: list, threads: int, rss: bool = False) -> dict:
    """Run ``python -m daam_fast ARGV``; -> {"own": the command's own seconds, "wall": s, "rss": bytes, "out": text}."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "daam_fast", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    mon = PeakRSS(p.pid) if rss else None
    if mon:
        mon.start()
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    if mon:
        mon.done.set()
        mon.join()
    if p.returncode not in (0, 1):
        raise RuntimeError(f"daam-fast {' '.join(argv)} failed ({p.returncode}):\n{err[-3000:]}")
    m = re.search(r"\((\d+(?:\.\d+)?) s\)", out)                            # explain: "... (12.3 s) -> out"
    own = float(m.group(1)) if m else None
    m = re.search(r"(\d+) frames, .*?(\d+(?:\.\d+)?) frames/s", out)          # video: "N frames, ..., F frames/s"
    if m:
        own = int(m.group(1)) / float(m.group(2))
    return {"own": own if own is not None else wall, "wall": wall, "rss": mon.peak if mon else 0, "out": out + err}


def cli_outputs() -> list:
    """The --outputs choices of the ``daam-fast explain`` this interpreter runs ([] if it has none)."""
    out = subprocess.run([sys.executable, "-m", "daam_fast", "explain", "--help"], capture_output=True, text=True).stdout
    if "--outputs" not in out:
        return []
    from daam_fast.outputs import OUTPUTS
    return list(OUTPUTS)


def explain_only_files(paths: list, model, batch: int) -> int:
    """Read + prepare + DAAM in batches of ``batch`` (the command's work without its outputs)."""
    from daam_fast import DAAM
    from daam_fast.io import read_image
    from daam_fast.preprocess import input_spec, prepare
    spec = input_spec(model)
    with DAAM(model) as daam:
        for s in range(0, len(paths), batch):
            x, _ = prepare([read_image(p, max_side=4 * max(spec.size)) for p in paths[s:s + batch]], spec)
            daam(x)
    return len(paths)


def explain_only_frames(x: torch.Tensor, model, batch: int) -> int:
    from daam_fast import DAAM
    with DAAM(model) as daam:
        for s in range(0, x.shape[0], batch):
            daam(x[s:s + batch])
    return x.shape[0]


def decoded_inputs(path: str, model) -> torch.Tensor:
    import av
    from daam_fast.preprocess import input_spec, prepare
    with av.open(path) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])
    xs = [prepare(torch.from_numpy(frames[s:s + 16]).permute(0, 3, 1, 2), input_spec(model))[0]
          for s in range(0, len(frames), 16)]
    return torch.cat(xs)


def rounds(providers: dict, reps: int, n: int) -> dict:
    """Warm-up once each, then ``reps`` rounds alternating; -> name -> {"s": median s, "ratio": median
    paired ratio of images/s to explain-only, "wall": median wall s}."""
    for f in providers.values():
        f()
    times = {k: [] for k in providers}
    walls = {k: [] for k in providers}
    for _ in range(reps):
        for k, f in providers.items():
            r = f()
            times[k].append(r["own"])
            walls[k].append(r["wall"])
    base = times["explain-only"]
    return {k: {"s": statistics.median(v), "ips": n / statistics.median(v), "wall": statistics.median(walls[k]),
                "ratio": statistics.median(b / t for b, t in zip(base, v))} for k, v in times.items()}


def run_child(kind: str, src: str, margs: list, batch: int, threads: int) -> dict:
    """Explain-only in a fresh process, like the command: model loaded first, then timed from a cold
    start (the command's own timer starts at the same point), so both sides pay the first batch's
    one-time costs. ``kind``: "files" (read + prepare + DAAM) or "frames" (DAAM on the decoded,
    prepared frames of the video ``src``)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind, src, "--batch", str(batch),
                        "--threads", str(threads), "--child-model", *(margs or ["-"])], capture_output=True, text=True,
                       env=env)
    wall = time.perf_counter() - t0
    m = re.search(r"explain-only (\d+(?:\.\d+)?) s", p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"explain-only child failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return {"own": float(m.group(1)), "wall": wall}


def _child(a) -> int:
    from daam_fast.models import load_model_spec
    kind, src = a.child
    name = a.child_model[0] if a.child_model and a.child_model[0] != "-" else None
    ck = a.child_model[a.child_model.index("--checkpoint") + 1] if "--checkpoint" in (a.child_model or []) else None
    if name == "--model":
        name = a.child_model[1]
    torch.set_num_threads(a.threads)
    model = load_model_spec(name, ck)
    if kind == "files":
        paths = sorted(os.path.join(src, f) for f in os.listdir(src))
        t0 = time.perf_counter()
        explain_only_files(paths, model, a.batch)
    else:
        x = decoded_inputs(src, model)
        t0 = time.perf_counter()
        explain_only_frames(x, model, a.batch)
    print(f"explain-only {time.perf_counter() - t0:.3f} s")
    return 0


def _timed(f):
    def g():
        t0 = time.perf_counter()
        f()
        t = time.perf_counter() - t0
        return {"own": t, "wall": t}
    return g


def report(case: str, desc: str, res: dict, n: int) -> None:
    print(f"\n### {case}: {desc}")
    print("| provider | median s (own timer) | images/s | wall s (with start-up) | ratio to explain-only | target |")
    print("|---|---:|---:|---:|---:|---|")
    for k, r in res.items():
        tgt = TARGETS.get(case, {}).get(k)
        verdict = "" if tgt is None else f">= {tgt}: {'met' if r['ratio'] >= tgt else 'NOT met'}"
        print(f"| {k} | {r['s']:.2f} | {r['ips']:.1f} | {r['wall']:.1f} | {r['ratio']:.3f} | {verdict} |")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------ cases
def case_images(case: str, a, work: str, outs: list) -> None:
    n = a.photos if case == "photos" else a.shapes
    d = os.path.join(work, f"{case}_{n}")
    if case == "photos":
        make_photos(d, n)
        ck = make_checkpoint(os.path.join(work, "deit_small_random.pt"))
        margs = ["--model", "deit_small_patch16_224", "--checkpoint", ck]
    else:
        make_shape_pngs(d, n)
        margs = []
    base = ["explain", d, *margs, "--batch-size", str(a.batch), "--quiet"]

    def cmd(name: str, extra: list):
        return lambda: run_cmd(base + ["--out", fresh_dir(os.path.join(work, name))] + extra, a.threads)

    provs = {"explain-only": lambda: run_child("files", d, margs, a.batch, a.threads),
             "cmd default": cmd("out_default", [])}
    if outs:
        provs["cmd all"] = cmd("out_all", ["--outputs", ",".join(outs)])
        for o in ([o for o in outs if o not in ("overlay", "maps")] if a.per_output else []):
            provs[f"cmd overlay,maps,{o}"] = cmd(f"out_{o}", ["--outputs", f"overlay,maps,{o}"])
    res = rounds(provs, a.reps, n)
    what = (f"{n} JPEGs 640x480, deit_small_patch16_224 (random weights, checkpoint file)" if case == "photos"
            else f"{n} shapes PNGs 64x64, shipped shapes_vit")
    report(case, f"{what}, batch {a.batch}, {a.threads} threads, {a.reps} rounds; outputs: "
                 f"{'all = ' + ','.join(outs) if outs else 'the CLI has no --outputs: always everything'}", res, n)


def case_video(case: str, a, work: str) -> None:
    if case == "video256":
        n, h, w, batch = a.frames256, 256, 256, a.batch
        src = make_clip(os.path.join(work, "clip256.mp4"), n, h, w, shapes=True)
        margs = []
    else:
        n = a.frames720 if case == "video720" else a.frames1080
        h, w = (720, 1280) if case == "video720" else (1080, 1920)
        batch = a.video_batch
        src = make_clip(os.path.join(work, f"clip{h}.mp4"), n, h, w)
        ck = os.path.join(work, "deit_small_random.pt")
        if not os.path.exists(ck):
            make_checkpoint(ck)
        margs = ["--model", "deit_small_patch16_224", "--checkpoint", ck]
    out = os.path.join(work, f"{case}_out.mp4")
    cmd = ["video", src, "--out", out, *margs, "--batch-size", str(batch), "--quiet", "--overwrite", *a.video_args]
    res = rounds({"explain-only": lambda: run_child("frames", src, margs, batch, a.threads),
                  "cmd video": lambda: run_cmd(cmd, a.threads)}, a.reps, n)
    report(case, f"{n} frames {w}x{h} H.264, {'shapes_vit' if case == 'video256' else 'deit_small (random weights)'}, "
                 f"batch {batch}, {a.threads} threads, {a.reps} rounds; video args: {' '.join(a.video_args) or '-'}",
           res, n)


def case_rss(a, work: str) -> None:
    print(f"\n### rss: peak RSS of `daam-fast explain` (default outputs; process + children), shapes_vit, batch {a.batch}")
    print("| images | own s | images/s | peak RSS MB |\n|---:|---:|---:|---:|")
    for n in a.rss_images:
        d = make_shape_pngs(os.path.join(work, f"rss_{n}"), n, seed=1000)
        r = run_cmd(["explain", d, "--batch-size", str(a.batch), "--quiet", "--out",
                     fresh_dir(os.path.join(work, f"rss_out_{n}"))], a.threads, rss=True)
        print(f"| {n} | {r['own']:.1f} | {n / r['own']:.1f} | {r['rss'] / 2**20:.0f} |")
        sys.stdout.flush()


def case_costs(a, work: str) -> None:
    from daam_fast.outputs import ExplainOptions
    from daam_fast.outputs.store import MapStore
    from daam_fast.outputs.writer import PICTURES, ImageJob, write_batch
    from daam_fast.zoo.shapes import make_shapes
    print("\n### costs: CPU ms per image of each output, one thread, batches of 16 (median of "
          f"{max(3, a.reps)} runs; files in {work})")
    print("| output | 640 x 480 photo, 12 blocks | 64 x 64 shapes image, 6 blocks |\n|---|---:|---:|")
    g = torch.Generator().manual_seed(0)
    kinds = {"photo": ([torch.from_numpy(make_photo(i)).permute(2, 0, 1).contiguous() for i in range(16)], 12, 14),
             "shapes": (list(make_shapes(16, seed=1).images), 6, 8)}
    rows = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)               # one writer thread's cost (the kernel and torch ops on one core)
    cases = [("overlay",), ("overlay png",), ("overlay webp",), ("maps",), ("grid",), ("gif",), ("mp4",),
             ("overlay", "maps", "grid", "gif", "mp4")]
    for name, (pics, L, h) in kinds.items():
        maps = torch.rand(16, L, h, h, generator=g).cumsum(1)
        for outs in cases:
            fmt = outs[0].split()[1] if " " in outs[0] else "jpg"
            kinds_ = [o.split()[0] for o in outs]
            ts = []
            for r in range(max(3, a.reps)):
                out = fresh_dir(os.path.join(work, f"costs_{name}"))
                for o in kinds_:
                    if o in PICTURES:
                        os.makedirs(os.path.join(out, o))
                t0 = time.process_time()
                if "maps" in kinds_:
                    store = MapStore(os.path.join(out, "maps"), [f"{i}.png" for i in range(16)])
                    store.write(list(range(16)), {"maps": maps.numpy(), "block_maps": maps.numpy(),
                                                  "targets": np.zeros(16, np.int64)})
                    store.close()
                pictures = [o for o in kinds_ if o in PICTURES]
                if pictures:
                    jobs = [ImageJob(f"{i}.png", f"im{i}", out, i, p, maps[i], 0, "c") for i, p in enumerate(pics)]
                    errs = [e for e in write_batch(jobs, ExplainOptions(image_format=fmt), pictures)
                            if isinstance(e, Exception)]
                    assert not errs, errs[0]
                ts.append((time.process_time() - t0) / 16 * 1e3)
            rows.setdefault(",".join(outs) if len(outs) < 5 else "every per-image output", []).append(statistics.median(ts))
    torch.set_num_threads(threads)
    for k, (p, sh) in rows.items():
        print(f"| {k} | {p:.2f} | {sh:.2f} |")
    sys.stdout.flush()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {','.join(CASES)}")
    ap.add_argument("--quick", action="store_true", help="small sizes, one round (a smoke run, noisy figures)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=None, help="rounds after the warm-up (default 3; --quick 1)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--video-batch", type=int, default=8)
    ap.add_argument("--photos", type=int, default=None, help="default 64 (--quick 16)")
    ap.add_argument("--shapes", type=int, default=None, help="default 500 (--quick 96)")
    ap.add_argument("--frames720", type=int, default=None, help="default 96 (--quick 24)")
    ap.add_argument("--frames1080", type=int, default=None, help="default 64 (--quick 16)")
    ap.add_argument("--frames256", type=int, default=None, help="default 400 (--quick 96)")
    ap.add_argument("--rss-images", default=None, help="default 200,2000 (--quick 100,400)")
    ap.add_argument("--per-output", action="store_true",
                    help="also time overlay,maps plus each other output alone (the cost of each)")
    ap.add_argument("--video-args", default="",
                    help="extra arguments for `daam-fast video` (e.g. '--preset veryfast')")
    ap.add_argument("--workdir", default=None, help="keep the generated inputs and outputs here")
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-model", nargs=argparse.REMAINDER, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return _child(a)
    q = a.quick
    a.reps = a.reps if a.reps is not None else (1 if q else 3)
    a.photos = a.photos or (16 if q else 64)
    a.shapes = a.shapes or (96 if q else 500)
    a.frames720 = a.frames720 or (24 if q else 96)
    a.frames1080 = a.frames1080 or (16 if q else 64)
    a.frames256 = a.frames256 or (96 if q else 400)
    a.rss_images = [int(v) for v in (a.rss_images or ("100,400" if q else "200,2000")).split(",")]
    a.video_args = a.video_args.split()
    torch.set_num_threads(a.threads)
    import daam_fast
    outs = cli_outputs()
    print(f"daam_fast from {os.path.dirname(daam_fast.__file__)}; torch {torch.__version__}, {a.threads} threads "
          f"(both sides), {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; CPU figures")
    cases = [c for c in a.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}: choose from {CASES}")
    ctx = tempfile.TemporaryDirectory() if a.workdir is None else None
    work = a.workdir or ctx.name
    os.makedirs(work, exist_ok=True)
    try:
        for c in cases:
            if c in ("photos", "shapes"):
                case_images(c, a, work, outs)
            elif c == "rss":
                case_rss(a, work)
            elif c == "costs":
                case_costs(a, work)
            else:
                case_video(c, a, work)
    finally:
        empty_trash(work)
        if ctx is not None:
            ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
