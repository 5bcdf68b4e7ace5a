"""Train the shipped shapes ViT (and its memory bank) on freshly generated shapes.

    python -m daam_fast.zoo.train_shapes [--steps 6000] [--out daam_fast/zoo/weights] [--seed 0]

Every batch is new data (no over-fitting); accuracy is measured on a held-out seed. Writes
``shapes_vit.safetensors`` (weights + config / classes / accuracy in the metadata) and
``shapes_vit_bank.pt`` (a MemoryBank of the head-less model's features on training images,
for the self-supervised path).
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
          quiet: bool = False, config: dict = CONFIG, save_every: int = 0, init: str = "") -> dict:
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
    t0 = time.time()
    bar = tqdm(range(steps), desc="training shapes_vit", unit="step", disable=quiet)
    model.train()
    for step in bar:
        b = make_shapes(batch, seed=seed * 1_000_003 + step)
        x = augment(normalise(b.images), g)
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
    acc = accuracy(model, n=eval_n)
    save(model, out, _meta(config, acc, eval_n, steps, batch, seed, minutes, threads))
    return {"accuracy": acc, "minutes": minutes, "out": out}


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
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "weights"))
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    r = train(a.steps, a.batch_size, a.lr, a.seed, a.out, a.threads, a.eval_images, quiet=a.quiet,
              save_every=a.save_every, init=a.init)
    print(f"shapes_vit: test accuracy {100 * r['accuracy']:.2f} % on {a.eval_images} fresh images "
          f"(seed {EVAL_SEED}); {r['minutes']:.1f} min training; written to {r['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
