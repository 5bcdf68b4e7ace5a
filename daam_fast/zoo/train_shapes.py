"""Train the shipped shapes ViT (and its memory bank) on freshly generated shapes.

    python -m daam_fast.zoo.train_shapes [--steps 6000] [--out daam_fast/zoo/weights] [--seed 0]
    python -m daam_fast.zoo.train_shapes --shortcut marker --steps 600 --monitor runs/marker

Every batch is new data (no over-fitting); accuracy is measured on a held-out seed, on clean
pictures. Writes ``shapes_vit.safetensors`` (weights + config / classes / accuracy in the
metadata) and ``shapes_vit_bank.pt`` (a MemoryBank of the head-less model's features on
training images, for the self-supervised path).

``--shortcut marker`` trains on data with a leak: in a fraction of the training pictures
(``--marker-fraction``, default 0.9) a small square in the top-left corner, whose colour is
fixed per class, gives the label away (added after the flips and turns, so it stays in its
corner). ``--monitor LOG_DIR`` watches the training with
:class:`daam_fast.monitor.AttentionMonitor`: probe pictures drawn like the training data
(the marker where training has it), with their object masks and the marker's corner as a
watched region (docs/monitor.md). Without ``--out`` a shortcut run writes to ./shapes_vit_marker.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import preprocess
from ..bank import MemoryBank
from . import without_head
from .shapes import CLASSES, make_shapes

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
CONFIG = dict(img_size=64, patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=2.0,
              num_classes=len(CLASSES), class_token=True, global_pool="token")
EVAL_SEED = 10_000_000
BANK_SEED = 20_000_000
PROBE_SEED = 30_000_000
SHORTCUTS = ("marker",)
MARKER = 8                                  # side of the marker square, pixels (one patch of the shapes ViT)
MARKER_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255))


def with_marker(images_u8: torch.Tensor, labels: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The pictures with the class's marker in the top-left corner where ``present``.

    Args:
        images_u8: (B, 3, S, S) uint8.  labels: (B,) classes.  present: (B,) bool.

    Returns:
        (B, 3, S, S) uint8, a copy: pixels [0, MARKER) x [0, MARKER) set to MARKER_COLOURS[label].
    """
    out = images_u8.clone()
    colours = torch.tensor(MARKER_COLOURS, dtype=torch.uint8)[labels]              # (B, 3)
    patch = colours.view(-1, 3, 1, 1).expand(-1, 3, MARKER, MARKER)
    corner = out[:, :, :MARKER, :MARKER]
    out[:, :, :MARKER, :MARKER] = torch.where(present.view(-1, 1, 1, 1), patch, corner)
    return out


def probes(n: int = 16, shortcut: str = "", fraction: float = 0.9, seed: int = PROBE_SEED):
    """Probe pictures drawn like the training data of a run: ShapesBatch with the marker in
    the pictures where training would have it (a fraction ``fraction`` of them)."""
    b = make_shapes(n, seed=seed)
    if shortcut:
        g = torch.Generator().manual_seed(seed + 1)
        b.images = with_marker(b.images, b.labels, torch.rand(n, generator=g) < fraction)
    return b


def build(config: dict, num_classes=None):
    from timm.models.vision_transformer import VisionTransformer
    cfg = dict(config)
    if num_classes is not None:
        cfg["num_classes"] = num_classes
    return VisionTransformer(**cfg)


def normalise(images_u8: torch.Tensor) -> torch.Tensor:
    """(B, 3, 64, 64) uint8 shapes -> the model's input, with the training MEAN / STD."""
    return preprocess.normalise(images_u8, MEAN, STD)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random flips and 90-degree turns (shape classes are invariant to them)."""
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    k = int(torch.randint(0, 4, (1,), generator=g))
    return torch.rot90(x, k, dims=(-2, -1))


@torch.no_grad()
def accuracy(model, n: int = 2000, seed: int = EVAL_SEED, batch: int = 250) -> float:
    model.eval()
    correct = 0
    for i in range(0, n, batch):
        b = make_shapes(min(batch, n - i), seed=seed + i)
        correct += (model(normalise(b.images)).argmax(1) == b.labels).sum().item()
    return correct / n


@torch.no_grad()
def build_bank(model, n: int = 2000, seed: int = BANK_SEED, batch: int = 250) -> MemoryBank:
    headless = build(CONFIG, num_classes=0)
    headless.load_state_dict(without_head(model.state_dict()))
    headless.eval()
    feats, labels = [], []
    for i in range(0, n, batch):
        b = make_shapes(min(batch, n - i), seed=seed + i)
        feats.append(headless(normalise(b.images)))
        labels.append(b.labels)
    return MemoryBank.from_features(torch.cat(feats), torch.cat(labels))


def save(model, out: str, meta: dict) -> None:
    """Weights (+ metadata) and the memory bank, written to temporary names then renamed."""
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    w = os.path.join(out, "shapes_vit.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, w + ".tmp", metadata=meta)
    build_bank(model).save(os.path.join(out, "shapes_vit_bank.pt.tmp"))
    os.replace(w + ".tmp", w)
    os.replace(os.path.join(out, "shapes_vit_bank.pt.tmp"), os.path.join(out, "shapes_vit_bank.pt"))


def train(steps: int, batch: int, lr: float, seed: int, out: str, threads: int, eval_n: int,
          quiet: bool = False, config: dict = CONFIG, save_every: int = 0, init: str = "", shortcut: str = "",
          marker_fraction: float = 0.9, monitor: str = "", monitor_every: int = 100, n_probes: int = 16) -> dict:
    if shortcut and shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut={shortcut!r}: expected one of {', '.join(SHORTCUTS)}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build(config)
    if init:                                   # continue from earlier weights (a second schedule)
        from safetensors.torch import load_file
        model.load_state_dict(load_file(init))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    g = torch.Generator().manual_seed(seed + 1)
    gm = torch.Generator().manual_seed(seed + 2)
    mon = None
    if monitor:
        from ..monitor import AttentionMonitor
        pb = probes(n_probes, shortcut, marker_fraction)
        mon = AttentionMonitor(model, pb.images, labels=pb.labels, masks=pb.masks,
                               regions={"corner": (0, 0, MARKER, MARKER)}, every=monitor_every, log_dir=monitor,
                               classes=CLASSES)
    t0 = time.time()
    bar = tqdm(range(steps), desc="training shapes_vit", unit="step", disable=quiet)
    model.train()
    for step in bar:
        if mon is not None:
            mon.step(step)
        b = make_shapes(batch, seed=seed * 1_000_003 + step)
        pics = augment(b.images, g)            # flips and turns commute with the per-channel normalisation
        if shortcut:
            pics = with_marker(pics, b.labels, torch.rand(batch, generator=gm) < marker_fraction)
        x = normalise(pics)
        loss = F.cross_entropy(model(x), b.labels, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if save_every and step and step % save_every == 0:
            acc = accuracy(model, n=500)
            save(model, out, _meta(config, acc, 500, step, batch, seed, (time.time() - t0) / 60, threads))
            model.train()
            if not quiet:
                tqdm.write(f"step {step}: accuracy {100 * acc:.1f} % on 500 images; checkpoint written")
    minutes = (time.time() - t0) / 60
    result = {"minutes": minutes, "out": out}
    if mon is not None:
        mon.log(steps)
        mon.close()
        result["alerts"] = mon.alerts
        result["history"] = mon.history
    acc = accuracy(model, n=eval_n)
    meta = _meta(config, acc, eval_n, steps, batch, seed, minutes, threads)
    if shortcut:
        meta["shortcut"] = f"{shortcut} in {marker_fraction:g} of the training pictures"
    save(model, out, meta)
    result["accuracy"] = acc
    return result


def _meta(config, acc, eval_n, steps, batch, seed, minutes, threads) -> dict:
    return {"config": json.dumps(config), "classes": json.dumps(list(CLASSES)), "accuracy": f"{acc:.4f}",
            "eval": f"{eval_n} images, seed {EVAL_SEED}", "steps": str(steps), "batch": str(batch),
            "seed": str(seed), "mean": json.dumps(MEAN), "std": json.dumps(STD),
            "train_minutes": f"{minutes:.1f}", "threads": str(threads)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--save-every", type=int, default=0, help="write a checkpoint every N steps (0: only at the end)")
    ap.add_argument("--init", default="", help="start from these weights (.safetensors) instead of random ones")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--out", default=None, help="output folder (default: the shipped weights' folder; with "
                    "--shortcut ./shapes_vit_<shortcut>)")
    ap.add_argument("--shortcut", choices=SHORTCUTS, default="", help="train on data with a leak (see above)")
    ap.add_argument("--marker-fraction", type=float, default=0.9, help="fraction of pictures with the marker")
    ap.add_argument("--monitor", default="", metavar="LOG_DIR", help="watch the training with the attention monitor")
    ap.add_argument("--monitor-every", type=int, default=100, help="monitor every N steps (default 100)")
    ap.add_argument("--probes", type=int, default=16, help="monitor probe pictures (default 16)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if not 0 <= a.marker_fraction <= 1:
        ap.error(f"--marker-fraction {a.marker_fraction}: expected a value in [0, 1]")
    out = a.out or (f"shapes_vit_{a.shortcut}" if a.shortcut else os.path.join(os.path.dirname(__file__), "weights"))
    r = train(a.steps, a.batch_size, a.lr, a.seed, out, a.threads, a.eval_images, quiet=a.quiet,
              save_every=a.save_every, init=a.init, shortcut=a.shortcut, marker_fraction=a.marker_fraction,
              monitor=a.monitor, monitor_every=a.monitor_every, n_probes=a.probes)
    print(f"shapes_vit: test accuracy {100 * r['accuracy']:.2f} % on {a.eval_images} fresh clean images "
          f"(seed {EVAL_SEED}); {r['minutes']:.1f} min training; written to {r['out']}")
    if a.monitor:
        h = r["history"]
        corner = h.series("region/corner").nanmean(1)
        print(f"monitor: {len(h)} logged steps in {a.monitor}; mean corner mass {corner[0]:.3f} at step "
              f"{h.steps[0]} -> {corner[-1]:.3f} at step {h.steps[-1]}; {len(r['alerts'])} alerts"
              + (f", the first at step {r['alerts'][0].step}: {r['alerts'][0]}" if r["alerts"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
