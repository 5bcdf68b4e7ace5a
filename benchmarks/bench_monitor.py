"""What the attention monitor costs: its share of a training run, and one logged step on deit_small.

1. Shapes training (the shipped shapes ViT's config and trainer: AdamW, batch 64, fresh
   shapes every step) with ``AttentionMonitor(every=100)`` on 16 probe pictures with masks
   and a watched region, writing its files and TensorBoard events. Every training step and
   every ``monitor.step`` call is timed in the same run; the overhead is the monitor's total
   time over the training steps' total time (target: <= 3 %).
2. deit_small_patch16_224 (timm, random weights), 16 probe pictures of 224 x 224: the time of
   one logged ``monitor.step`` (DAAM "row" of the 16 probes, statistics, files, TensorBoard
   scalars and images), beside a plain forward of the same 16 pictures in the same run.

    .venv/bin/python benchmarks/bench_monitor.py [--steps 300] [--threads 2] [--reps 3]

pytest mode (``pytest benchmarks/bench_monitor.py``): a shorter run of part 1 checks the
3 % target. Environment: DAAM_BENCH_THREADS, DAAM_BENCH_STEPS.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from daam_fast.monitor import AttentionMonitor  # noqa: E402
from daam_fast.zoo.shapes import make_shapes  # noqa: E402
from daam_fast.zoo.train_shapes import CONFIG, MARKER, augment, build, normalise, probes  # noqa: E402


def shapes_overhead(steps: int = 300, every: int = 100, n_probes: int = 16, batch: int = 64) -> dict:
    """Train the shapes ViT for ``steps`` steps with the monitor; time both parts separately."""
    torch.manual_seed(0)
    model = build(CONFIG)
    model.pretrained_cfg = dict(input_size=(3, 64, 64), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(1)
    pb = probes(n_probes, "marker")
    train_s, mon_s, logged = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        mon = AttentionMonitor(model, pb.images, labels=pb.labels, masks=pb.masks,
                               regions={"corner": (0, 0, MARKER, MARKER)}, every=every, log_dir=tmp)
        model.train()
        for step in range(steps):
            t0 = time.perf_counter()
            out = mon.step(step)
            t1 = time.perf_counter()
            b = make_shapes(batch, seed=step)
            loss = F.cross_entropy(model(augment(normalise(b.images), g)), b.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            mon_s.append(t1 - t0)
            train_s.append(t2 - t1)
            logged += out is not None
        mon.close()
    return {"steps": steps, "logged": logged, "train_s": sum(train_s), "monitor_s": sum(mon_s),
            "overhead": sum(mon_s) / sum(train_s), "train_ms_per_step": 1e3 * statistics.median(train_s),
            "monitor_ms_per_log": 1e3 * sum(mon_s) / max(1, logged)}


def deit_step(n_probes: int = 16, reps: int = 3) -> dict:
    """One logged monitor step on deit_small (random weights) vs a plain forward of the probes."""
    import timm
    torch.manual_seed(0)
    model = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
    pics = make_shapes(n_probes, seed=1, size=224)
    step_s, fwd_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        mon = AttentionMonitor(model, pics.images, masks=pics.masks, regions={"corner": (0, 0, 32, 32)},
                               every=1, log_dir=tmp)
        x = mon._x
        mon.log(0)                                               # warm-up (the writer opens its file)
        with torch.no_grad():
            model(x)
        for r in range(reps):                                    # side by side, round-robin
            t0 = time.perf_counter()
            mon.log(r + 1)
            t1 = time.perf_counter()
            with torch.no_grad():
                model(x)
            t2 = time.perf_counter()
            step_s.append(t1 - t0)
            fwd_s.append(t2 - t1)
        mon.close()
    ratios = [a / b for a, b in zip(step_s, fwd_s)]
    return {"step_ms": 1e3 * statistics.median(step_s), "forward_ms": 1e3 * statistics.median(fwd_s),
            "ratio": statistics.median(ratios), "reps": reps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-deit", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    r = shapes_overhead(a.steps, a.every, a.probes)
    print(f"shapes training, {r['steps']} steps (batch 64), monitor every {a.every} with {a.probes} probes: "
          f"{r['logged']} logged steps, {r['monitor_ms_per_log']:.0f} ms each; training {r['train_ms_per_step']:.0f} "
          f"ms/step (median); overhead {100 * r['overhead']:.2f} % of the training time (target <= 3 %)")
    if not a.skip_deit:
        d = deit_step(a.probes, a.reps)
        print(f"deit_small_patch16_224, {a.probes} probes: one logged step {d['step_ms']:.0f} ms (median of "
              f"{d['reps']}), plain forward of the probes {d['forward_ms']:.0f} ms: {d['ratio']:.2f}x")
    return 0


def test_monitor_overhead_on_shapes_training():
    torch.set_num_threads(int(os.environ.get("DAAM_BENCH_THREADS", "2")))
    r = shapes_overhead(steps=int(os.environ.get("DAAM_BENCH_STEPS", "200")))
    assert r["logged"] >= 2
    assert r["overhead"] <= 0.03, r


if __name__ == "__main__":
    sys.exit(main())
