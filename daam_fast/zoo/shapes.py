"""Synthetic shapes with ground truth: the data of the shipped model.

Each image (S x S RGB, S = 64 by default) holds one large object of the labelled class at a
random position, size, rotation and colour, over a cluttered background (smooth colour
noise, pixel noise, random lines) with 1-2 smaller distractor shapes of OTHER classes. The
mask marks the pixels of the labelled object only. Everything is vectorised torch and
deterministic from the seed.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CLASSES", "ShapesBatch", "make_shapes", "save_pngs"]

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")


@dataclass
class ShapesBatch:
    """images (n, 3, S, S) uint8, labels (n,) long, masks (n, S, S) bool (labelled object only)."""

    images: Tensor
    labels: Tensor
    masks: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def _class_masks(cls: Tensor, cx: Tensor, cy: Tensor, r: Tensor, rot: Tensor, S: int) -> Tensor:
    """(n, S, S) bool: the shape of class ``cls[i]`` centred at (cx, cy), radius r, rotation rot."""
    n = cls.shape[0]
    ys = torch.arange(S, dtype=torch.float32) + 0.5
    X = ys.view(1, 1, S).expand(n, S, S) - cx.view(n, 1, 1)
    Y = ys.view(1, S, 1).expand(n, S, S) - cy.view(n, 1, 1)
    c, s = torch.cos(rot).view(n, 1, 1), torch.sin(rot).view(n, 1, 1)
    u, v = c * X + s * Y, -s * X + c * Y                   # rotated coordinates
    R = r.view(n, 1, 1)
    dist = torch.sqrt(X * X + Y * Y)
    ang = torch.atan2(v, u)
    circle = dist <= R
    square = (u.abs() <= 0.8 * R) & (v.abs() <= 0.8 * R)
    tri = torch.ones_like(circle)
    for k in range(3):                                     # equilateral: 3 half-planes
        a = ang.new_tensor(math.pi / 2 + 2 * math.pi * k / 3)
        tri &= (u * torch.cos(a) + v * torch.sin(a)) <= 0.5 * R
    sector = torch.remainder(ang + math.pi / 2, 2 * math.pi / 5) / (2 * math.pi / 5)   # 0..1 per point
    frac = (2 * sector - 1).abs()                          # 1 at the tips, 0 between them
    star = dist <= R * (0.36 + 0.64 * frac)
    cross = ((u.abs() <= 0.22 * R) & (v.abs() <= R)) | ((v.abs() <= 0.22 * R) & (u.abs() <= R))
    ring = (dist <= R) & (dist >= 0.55 * R)
    stack = torch.stack([circle, square, tri, star, cross, ring], dim=1)        # (n, K, S, S)
    return stack.gather(1, cls.view(n, 1, 1, 1).expand(n, 1, S, S))[:, 0]


def _saturated(n: int, g: torch.Generator) -> Tensor:
    """(n, 3) vivid colours in [0, 1]: one channel high, one low, one random."""
    base = torch.rand(n, 3, generator=g)
    perm = torch.argsort(torch.rand(n, 3, generator=g), dim=1)
    hi = 0.75 + 0.25 * torch.rand(n, generator=g)
    lo = 0.2 * torch.rand(n, generator=g)
    base.scatter_(1, perm[:, :1], hi[:, None])
    base.scatter_(1, perm[:, 1:2], lo[:, None])
    return base


def make_shapes(n: int, seed: int = 0, size: int = 64, distractors: bool = True) -> ShapesBatch:
    """Generate ``n`` images deterministically from ``seed``.

    Args:
        n: number of images.  seed: generator seed.  size: S, the side in pixels.
        distractors: add 1-2 smaller shapes of other classes.

    Returns:
        ShapesBatch(images (n, 3, S, S) uint8, labels (n,) long, masks (n, S, S) bool).
    """
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    g = torch.Generator().manual_seed(int(seed))
    S, K = size, len(CLASSES)
    # background: smooth muted colour field + pixel noise + a few lines
    low = torch.rand(n, 3, 4, 4, generator=g) * 0.5 + 0.25
    bg = F.interpolate(low, size=(S, S), mode="bicubic", align_corners=False)
    bg = bg + 0.06 * torch.randn(n, 3, S, S, generator=g)
    img = bg.clamp(0, 1)
    ys = torch.arange(S, dtype=torch.float32) + 0.5
    XX, YY = ys.view(1, 1, S), ys.view(1, S, 1)
    for _ in range(3):
        th = torch.rand(n, generator=g) * math.pi
        off = (torch.rand(n, generator=g) - 0.5) * S
        d = (XX - S / 2) * torch.cos(th).view(n, 1, 1) + (YY - S / 2) * torch.sin(th).view(n, 1, 1) - off.view(n, 1, 1)
        line = (d.abs() < 0.8)[:, None]
        col = torch.rand(n, 3, 1, 1, generator=g)
        img = torch.where(line & (torch.rand(n, 1, 1, 1, generator=g) < 0.7), col, img)
    labels = torch.randint(0, K, (n,), generator=g)
    r_main = S * (0.22 + 0.12 * torch.rand(n, generator=g))
    cx = r_main + torch.rand(n, generator=g) * (S - 2 * r_main)
    cy = r_main + torch.rand(n, generator=g) * (S - 2 * r_main)
    if distractors:
        n_d = 1 + (torch.rand(n, generator=g) < 0.5).long()
        for j in range(2):
            other = (labels + 1 + torch.randint(0, K - 1, (n,), generator=g)) % K     # never the label
            rd = S * (0.07 + 0.05 * torch.rand(n, generator=g))
            dx = rd + torch.rand(n, generator=g) * (S - 2 * rd)
            dy = rd + torch.rand(n, generator=g) * (S - 2 * rd)
            m = _class_masks(other, dx, dy, rd, torch.rand(n, generator=g) * 2 * math.pi, S)
            m &= (j < n_d).view(n, 1, 1)
            img = torch.where(m[:, None], _saturated(n, g).view(n, 3, 1, 1), img)
    rot = (torch.rand(n, generator=g) - 0.5) * (2 * math.pi)
    rot = torch.where(labels == CLASSES.index("square"), rot * 0.1, rot)
    mask = _class_masks(labels, cx, cy, r_main, rot, S)
    shade = _saturated(n, g).view(n, 3, 1, 1)
    img = torch.where(mask[:, None], shade * (0.9 + 0.1 * torch.rand(n, 3, S, S, generator=g)), img)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return ShapesBatch(images=images, labels=labels, masks=mask)


def save_pngs(batch: ShapesBatch, out_dir: str, prefix: str = "shape", masks: bool = False) -> list:
    """Write each image as ``{prefix}_{i:04d}_{class}.png`` (and its mask if asked); returns the paths."""
    from PIL import Image
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in range(len(batch)):
        name = f"{prefix}_{i:04d}_{CLASSES[int(batch.labels[i])]}"
        p = os.path.join(out_dir, name + ".png")
        Image.fromarray(batch.images[i].permute(1, 2, 0).numpy()).save(p)
        if masks:
            Image.fromarray(batch.masks[i].numpy().astype("uint8") * 255).save(os.path.join(out_dir, name + "_mask.png"))
        paths.append(p)
    return paths
