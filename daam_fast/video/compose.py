"""Composing frames: the rendered overlays of the chosen blocks laid out as one output frame."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

BlockSpec = Union[int, str, Sequence[int]]
LAYOUTS = ("auto", "single", "row", "grid")


def _resolve_blocks(block: BlockSpec, depth: int) -> Tuple[List[int], bool]:
    """-> (0-based block indices, True if ``block`` was a single int)."""
    if isinstance(block, str):
        if block != "all":
            raise ValueError(f"block must be an int, a list of ints or 'all', got {block!r}")
        return list(range(depth)), False
    single = isinstance(block, (int, np.integer)) and not isinstance(block, bool)
    items = [block] if single else list(block)
    if not items:
        raise ValueError("block: the list of blocks is empty")
    out = []
    for b in items:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise ValueError(f"block indices must be integers, got {b!r}")
        if not -depth <= int(b) < depth:
            raise ValueError(f"block {int(b)} is out of range for a model with {depth} blocks "
                             f"(use 0 .. {depth - 1} or negative indices from the end)")
        out.append(int(b) % depth)
    return out, single


def _even(n: int) -> int:
    return n + n % 2


class _Composer:
    """Rendered overlays of the chosen blocks, laid out as one frame (H', W', 3) per input frame."""

    def __init__(self, blocks: List[int], depth: int, layout: str, scale: float, mode: str, H: int, W: int,
                 boxes: Optional[float] = None):
        self.blocks, self.depth, self.layout, self.mode = blocks, depth, layout, mode
        self.boxes = boxes      # None, or the threshold of the box drawn on each panel (daam_fast.boxes)
        k = len(blocks)
        self.cols = 1 if layout == "single" else (k if layout == "row" else math.ceil(math.sqrt(k)))
        self.rows = 1 if layout in ("single", "row") else math.ceil(k / self.cols)
        self.ph, self.pw = max(2, int(round(H * scale))), max(2, int(round(W * scale)))
        self.size = (_even(self.rows * self.ph), _even(self.cols * self.pw))   # yuv420p needs even sizes
        # render() normalises with the last block it is given as D_L: always pass D_L last
        self.sel = blocks + ([depth - 1] if depth - 1 not in blocks else [])

    def __call__(self, rgb: Tensor, maps: Tensor) -> np.ndarray:
        from ..render import render
        img = rgb.to(maps.device)
        if (self.ph, self.pw) != tuple(img.shape[-2:]):
            img = F.interpolate(img.float(), size=(self.ph, self.pw), mode="bilinear", align_corners=False,
                                antialias=True).round().clamp(0, 255).to(torch.uint8)
        idx = torch.tensor(self.sel, device=maps.device)
        frames = render(maps.index_select(1, idx), images=img, mode=self.mode)      # (B, k', ph, pw, 3)
        pos = {b: j for j, b in enumerate(self.sel)}
        if self.boxes is not None:
            frames = self._draw_boxes(frames, maps, pos)
        if len(self.blocks) == 1 and self.size == (self.ph, self.pw):    # one panel, even size: the frame itself
            return frames[:, pos[self.blocks[0]]].cpu().numpy()
        B = frames.shape[0]
        out = torch.zeros(B, self.size[0], self.size[1], 3, dtype=torch.uint8, device=frames.device)
        for j, b in enumerate(self.blocks):
            r, c = divmod(j, self.cols)
            out[:, r * self.ph:(r + 1) * self.ph, c * self.pw:(c + 1) * self.pw] = frames[:, pos[b]]
        if self.size != (self.rows * self.ph, self.cols * self.pw):       # odd size: repeat the edge
            h, w = self.rows * self.ph, self.cols * self.pw
            out[:, h:, :w] = out[:, h - 1:h, :w]
            out[:, :, w:] = out[:, :, w - 1:w]
        return out.cpu().numpy()

    def _draw_boxes(self, frames: Tensor, maps: Tensor, pos: dict) -> Tensor:
        """Each shown panel with the box of its own map's salient region (largest component above
        ``boxes`` x the map's maximum, :func:`daam_fast.boxes.boxes_from_maps`)."""
        from ..boxes import boxes_from_maps, draw_boxes
        frames = frames.cpu().numpy()
        for b in self.blocks:
            bx = boxes_from_maps(maps[:, b].float(), self.boxes, (self.ph, self.pw)).cpu().numpy()
            for i in range(frames.shape[0]):
                frames[i, pos[b]] = draw_boxes(frames[i, pos[b]], bx[i])
        return torch.from_numpy(frames).to(maps.device)
