"""Boxes from saliency maps: threshold, connected components, bounding boxes, batched in torch.

A map is upsampled to the image size, thresholded at a fraction of its maximum, and the
connected components of the kept pixels are labelled for the whole batch at once (label
propagation with max-pooling plus pointer jumping, on the maps' device; no per-image Python
loop). The box of the largest component (or of the ``k`` largest) is returned as pixel
coordinates (x0, y0, x1, y1) with x1 / y1 exclusive, the convention of
:func:`daam_fast.metrics.boxes_to_masks`: the box of a rectangular map is the rectangle.

Example:
    >>> from daam_fast import DAAM
    >>> from daam_fast.boxes import boxes_from_maps
    >>> res = DAAM(model)(x)                                   # x (B, 3, 224, 224)
    >>> boxes = boxes_from_maps(res.final, 0.5, (224, 224))    # (B, 4) x0, y0, x1, y1
    >>> several = boxes_from_maps(res.final, 0.5, (224, 224), max_boxes=3)   # (B, 3, 4), empty boxes padded
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["boxes_from_maps", "boxes_from_masks", "connected_components", "masks_to_boxes", "box_iou"]


def connected_components(masks: Tensor, connectivity: int = 8) -> Tensor:
    """Label the connected components of a batch of binary masks.

    Every foreground pixel starts with its own flat index as label; each step takes the
    maximum label over the pixel's neighbourhood (a 3 x 3 max-pool, or a cross for
    4-connectivity) inside the foreground, then jumps pointers (label <- label of the pixel
    the label names, a pixel of the same component with a label at least as large), until
    nothing changes. Each component ends labelled by the largest flat index of its pixels.

    Args:
        masks: (N, H, W) bool (or 0 / 1) masks.
        connectivity: 8 (diagonal neighbours touch, as OpenCV's contours) or 4.

    Returns:
        (N, H, W) long labels: -1 on the background, else the component's largest flat index y * W + x.
    """
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        raise ValueError(f"masks must be (N, H, W), got "
                         f"{tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    fg = masks.bool()
    N, H, W = fg.shape
    if H * W >= 2 ** 24:
        raise ValueError(f"masks of {H}x{W} pixels: labels would not be exact in float32 (at most 2**24 pixels)")
    idx = torch.arange(H * W, device=fg.device, dtype=torch.float32).view(1, H, W)
    lab = torch.where(fg, idx, torch.full_like(idx, -1.0))[:, None]              # (N, 1, H, W)
    flat_fg = fg.reshape(N, H * W)
    while True:
        if connectivity == 8:
            spread = F.max_pool2d(lab, 3, stride=1, padding=1)
        else:
            spread = torch.maximum(F.max_pool2d(lab, (3, 1), stride=1, padding=(1, 0)),
                                   F.max_pool2d(lab, (1, 3), stride=1, padding=(0, 1)))
        spread = torch.where(fg[:, None], spread, lab)
        li = spread.reshape(N, H * W).long()
        jumped = li.gather(1, li.clamp_min(0))                                       # pointer jumping
        new = torch.where(flat_fg, jumped, li).float().reshape(N, 1, H, W)
        if torch.equal(new, lab):
            break
        lab = new
    return lab[:, 0].long()


def boxes_from_masks(masks: Tensor, max_boxes: Optional[int] = None, connectivity: int = 8) -> Tensor:
    """The bounding boxes of the largest connected components of binary masks.

    Args:
        masks: (N, H, W) bool masks.
        max_boxes: None: the box of the largest component, (N, 4); an int K: the boxes of the K
            largest components, largest first, (N, K, 4), padded with the empty box (0, 0, 0, 0).
        connectivity: 8 or 4 (see :func:`connected_components`).

    Returns:
        float32 boxes (x0, y0, x1, y1) in pixels, x1 / y1 exclusive; an empty mask gives (0, 0, 0, 0).
        Ties in component size go to the component with the smaller label.
    """
    K = 1 if max_boxes is None else int(max_boxes)
    if K < 1:
        raise ValueError(f"max_boxes must be >= 1, got {max_boxes}")
    lab = connected_components(masks, connectivity)
    N, H, W = lab.shape
    flat = lab.reshape(N, H * W)
    fg = flat >= 0
    li = flat.clamp_min(0)
    dev = lab.device
    pix = torch.arange(H * W, device=dev)
    ys, xs = (pix // W).expand(N, -1), (pix % W).expand(N, -1)
    big = torch.full((N, H * W), H * W, device=dev, dtype=torch.long)
    neg = torch.full((N, H * W), -1, device=dev, dtype=torch.long)
    size = torch.zeros(N, H * W, device=dev).scatter_add_(1, li, fg.float())
    x0 = big.scatter_reduce(1, li, torch.where(fg, xs, big), "amin")
    y0 = big.scatter_reduce(1, li, torch.where(fg, ys, big), "amin")
    x1 = neg.scatter_reduce(1, li, torch.where(fg, xs, neg), "amax") + 1
    y1 = neg.scatter_reduce(1, li, torch.where(fg, ys, neg), "amax") + 1
    top_size, top = size.sort(dim=1, descending=True, stable=True)
    top_size, top = top_size[:, :K], top[:, :K]
    boxes = torch.stack([x0.gather(1, top), y0.gather(1, top), x1.gather(1, top), y1.gather(1, top)], dim=-1)
    boxes = torch.where((top_size > 0)[..., None], boxes, torch.zeros_like(boxes)).float()
    if K > H * W:
        boxes = torch.cat([boxes, boxes.new_zeros(N, K - H * W, 4)], dim=1)
    return boxes[:, 0] if max_boxes is None else boxes


def boxes_from_maps(maps: Tensor, threshold: float = 0.5, size: Optional[Tuple[int, int]] = None,
                    max_boxes: Optional[int] = None, connectivity: int = 8) -> Tensor:
    """Boxes around the salient region of each map.

    The map is upsampled bilinearly to ``size`` (``align_corners=False``); the pixels p with
    S[p] >= threshold * max(S) and S[p] > 0 are kept; the box is the bounding box of the
    largest connected component of the kept pixels (8-connected by default), or of the
    ``max_boxes`` largest. A map with no positive value gives the empty box (0, 0, 0, 0).

    Args:
        maps: (B, h, w) maps (e.g. ``res.final``).
        threshold: fraction of each map's maximum, in [0, 1].
        size: (H, W) image size of the boxes; None: the map's own grid.
        max_boxes: None: one box per map, (B, 4); K: the K largest components, (B, K, 4).
        connectivity: 8 or 4.

    Returns:
        float32 (B, 4) or (B, K, 4) boxes (x0, y0, x1, y1) in pixels of ``size``, x1 / y1 exclusive,
        on the maps' device.
    """
    if not isinstance(maps, Tensor) or maps.dim() != 3:
        raise ValueError(f"maps must be (B, h, w), got "
                         f"{tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a fraction of the map's maximum in [0, 1], got {threshold}")
    s = maps.float()
    if not torch.isfinite(s).all():
        raise ValueError("maps contain NaN or inf")
    if size is not None and tuple(size) != tuple(s.shape[-2:]):
        s = F.interpolate(s[:, None], size=tuple(int(v) for v in size), mode="bilinear", align_corners=False)[:, 0]
    peak = s.amax(dim=(-2, -1), keepdim=True)
    keep = (s >= float(threshold) * peak) & (s > 0)
    return boxes_from_masks(keep, max_boxes, connectivity)


def masks_to_boxes(masks: Tensor) -> Tensor:
    """The tight box of every mask (all its pixels, one box per mask).

    Args:
        masks: (B, H, W) bool.

    Returns:
        (B, 4) float32 (x0, y0, x1, y1), x1 / y1 exclusive; (0, 0, 0, 0) for an empty mask.
    """
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        raise ValueError("masks must be (B, H, W)")
    m = masks.bool()
    rows, cols = m.any(dim=2), m.any(dim=1)                                      # (B, H), (B, W)
    H, W = m.shape[-2:]
    y0 = rows.float().argmax(dim=1)
    y1 = H - rows.flip(1).float().argmax(dim=1)
    x0 = cols.float().argmax(dim=1)
    x1 = W - cols.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(rows.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of boxes, element-wise with broadcasting.

    Args:
        a, b: (..., 4) boxes (x0, y0, x1, y1), x1 / y1 exclusive (area (x1 - x0) (y1 - y0)).

    Returns:
        (...) IoU in [0, 1]; 0 where the union is empty.
    """
    a, b = a.float(), b.float()
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_min(0)
    inter = iw * ih
    area = lambda z: (z[..., 2] - z[..., 0]).clamp_min(0) * (z[..., 3] - z[..., 1]).clamp_min(0)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))
