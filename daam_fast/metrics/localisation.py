"""Localisation: maps against ground-truth masks or boxes.

- :func:`pointing_game` (Zhang et al., IJCV 2018) and :func:`energy_pointing_game`
  (Wang et al., Score-CAM, CVPR-W 2020); :func:`boxes_to_masks` turns boxes into masks.
- :func:`max_box_acc` (MaxBoxAccV2, Choe et al., CVPR 2020): boxes from the map at every
  threshold (:mod:`daam_fast.boxes`), IoU with the object box, best threshold over the data.
- :func:`pxap` (pixel average precision, Choe et al. 2020) against object masks.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..boxes import box_iou, boxes_from_masks, boxes_over_thresholds
from ._checks import _minmax, upsample

__all__ = ["boxes_to_masks", "pointing_game", "energy_pointing_game", "BoxAccuracy", "box_ious", "max_box_acc",
           "PixelAP", "pxap", "THRESHOLDS"]

THRESHOLDS = 100          # map thresholds 0, 0.01, ..., 0.99 (Choe et al.'s cam_curve_interval = 0.01)


# ---------------------------------------------------------------------------------- pointing games
def boxes_to_masks(boxes: Tensor, size: Tuple[int, int]) -> Tensor:
    """Boxes to pixel masks.

    Args:
        boxes: (B, 4) or (B, K, 4) as (x0, y0, x1, y1) in pixels, x1 / y1 exclusive; a box with
            x1 <= x0 or y1 <= y0 is empty (use it to pad images with fewer boxes).
        size: (H, W).

    Returns:
        (B, H, W) bool: pixel (y, x) is True if x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1 for
        some box (pixel centres inside).
    """
    b = torch.as_tensor(boxes).float()
    if b.dim() == 2:
        b = b[:, None]
    if b.dim() != 3 or b.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, 4) or (B, K, 4) as x0, y0, x1, y1; got {tuple(b.shape)}")
    H, W = size
    ys = torch.arange(H, device=b.device, dtype=torch.float32) + 0.5
    xs = torch.arange(W, device=b.device, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = (b[..., i][..., None, None] for i in range(4))            # (B, K, 1, 1)
    inside = (xs.view(1, 1, 1, W) >= x0) & (xs.view(1, 1, 1, W) < x1) & (ys.view(1, 1, H, 1) >= y0) & \
             (ys.view(1, 1, H, 1) < y1)
    return inside.any(dim=1)


def _check_masks(masks: Tensor, B: int, device) -> Tensor:
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        raise ValueError(f"masks must be (B, H, W), got "
                         f"{tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__}")
    if masks.shape[0] != B:
        raise ValueError(f"{masks.shape[0]} masks for {B} maps")
    return (masks > 0.5 if masks.is_floating_point() else masks.bool()).to(device)


def _maps_and_masks(saliency: Tensor, masks: Tensor) -> Tuple[Tensor, Tensor]:
    if not isinstance(saliency, Tensor) or saliency.dim() not in (3, 4):
        raise ValueError("saliency must be (B, h, w) or (B, L, h, w)")
    if not torch.isfinite(saliency).all():
        raise ValueError("saliency contains NaN or inf")
    m = _check_masks(masks, saliency.shape[0], saliency.device)
    s = upsample(saliency, tuple(m.shape[-2:]))
    if s.dim() == 4:
        m = m[:, None]
    return s, m


def pointing_game(saliency: Tensor, masks: Tensor, tolerance: float = 0.0) -> Tensor:
    """Pointing game (Zhang et al. 2018): does the map's maximum fall on the object?

    hit_i = [argmax_p upsample(S_i)[p] lies in mask_i dilated by ``tolerance`` pixels]
    (Euclidean disk; the authors use 15 px at 224 x 224). The first maximum in raster
    order is taken; a constant map points nowhere (a miss). An image with an empty mask
    has no answer: NaN (aggregate with ``nanmean``).

    Args:
        saliency: (B, h, w) or (B, L, h, w) maps (e.g. ``res.maps`` for one result per block).
        masks: (B, H, W) bool (or 0/1) object masks, e.g. ``make_shapes(n).masks`` or
            :func:`boxes_to_masks`.
        tolerance: dilation radius in pixels.

    Returns:
        (B,) or (B, L) float32: 1.0 hit, 0.0 miss, NaN for an empty mask.
    """
    s, m = _maps_and_masks(saliency, masks)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if tolerance > 0:
        r = int(math.floor(tolerance))
        t = torch.arange(-r, r + 1, device=m.device, dtype=torch.float32)
        disk = ((t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) <= tolerance ** 2).float()
        mm = m.reshape(-1, 1, *m.shape[-2:]).float()
        m = (F.conv2d(mm, disk[None, None], padding=r) > 0.5).reshape(m.shape)
    flat = s.flatten(-2)
    idx = flat.argmax(dim=-1, keepdim=True)
    mflat = m.flatten(-2).expand_as(flat)
    hit = mflat.gather(-1, idx)[..., 0].float()
    constant = flat.amax(dim=-1) == flat.amin(dim=-1)
    hit = torch.where(constant, torch.zeros_like(hit), hit)
    empty = ~m.flatten(-2).any(dim=-1).expand_as(hit)
    return torch.where(empty, torch.full_like(hit, float("nan")), hit)


def energy_pointing_game(saliency: Tensor, masks: Tensor) -> Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM, 2020): the share of the map inside the mask.

    E_i = sum_{p in mask_i} S+_i[p] / sum_p S+_i[p], with S+ = max(upsample(S), 0). A map that
    is zero everywhere scores 0; an image with an empty mask gives NaN. A uniform map
    scores the mask's area fraction (the chance level).

    Args:
        saliency: (B, h, w) or (B, L, h, w) maps.
        masks: (B, H, W) bool (or 0/1) object masks.

    Returns:
        (B,) or (B, L) float32 in [0, 1] (NaN for an empty mask).
    """
    s, m = _maps_and_masks(saliency, masks)
    s = s.clamp_min(0)
    total = s.sum(dim=(-2, -1))
    inside = (s * m).sum(dim=(-2, -1))
    e = torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(total))
    empty = ~m.flatten(-2).any(dim=-1).expand_as(e)
    return torch.where(empty, torch.full_like(e, float("nan")), e)


# ---------------------------------------------------------------------------------- boxes: MaxBoxAccV2
class BoxAccuracy(NamedTuple):
    """MaxBoxAccV2 and what it is made of.

    value () the mean over IoU thresholds of the best box accuracy; per_iou (D,) the best box
    accuracy at each IoU threshold; best_threshold (D,) the map threshold reaching it; curve (D, T)
    the box accuracy at every map threshold; thresholds (T,); hits (B,) per image, the share of the
    IoU thresholds its box passes at their best map thresholds (``hits.mean() == value``);
    ious (B, T) per image, the best IoU at every map threshold.
    """

    value: Tensor
    per_iou: Tensor
    best_threshold: Tensor
    curve: Tensor
    thresholds: Tensor
    hits: Tensor
    ious: Tensor


def _thresholds(thresholds: Union[int, Sequence[float], Tensor], device) -> Tensor:
    if isinstance(thresholds, int):
        if thresholds < 1:
            raise ValueError(f"thresholds must be >= 1, got {thresholds}")
        return torch.arange(thresholds, device=device, dtype=torch.float32) / thresholds
    t = torch.as_tensor(thresholds, dtype=torch.float32, device=device).flatten()
    if t.numel() == 0 or (t < 0).any() or (t > 1).any():
        raise ValueError("thresholds must be values in [0, 1]")
    return t


def _check_gt_boxes(gt_boxes: Tensor, B: int, device) -> Tensor:
    g = torch.as_tensor(gt_boxes, device=device).float()
    if g.dim() == 2:
        g = g[:, None]
    if g.dim() != 3 or g.shape[-1] != 4 or g.shape[0] != B:
        raise ValueError(f"gt_boxes must be (B, 4) or (B, G, 4) x0, y0, x1, y1 with B = {B}, got {tuple(g.shape)}")
    return g


@torch.no_grad()
def box_ious(maps: Tensor, gt_boxes: Tensor, size: Tuple[int, int],
             thresholds: Union[int, Sequence[float], Tensor] = THRESHOLDS, max_boxes: Optional[int] = None,
             connectivity: int = 8, chunk_pixels: int = 1 << 23) -> Tensor:
    """Per image and map threshold, the best IoU of a box from the map with a ground-truth box.

    Each map is upsampled to ``size`` and min-max normalised to [0, 1] (a constant map becomes 0);
    at threshold t the pixels with value >= t and > 0 are kept and the box of the largest
    connected component is taken (:func:`daam_fast.boxes.boxes_over_thresholds`, all thresholds
    in one union-find pass); with ``max_boxes`` = K, the K largest components each give a box
    (:func:`daam_fast.boxes.boxes_from_masks` per threshold) and the best one counts.

    Args:
        maps: (B, h, w).  gt_boxes: (B, 4) or (B, G, 4) (x0, y0, x1, y1, x1 / y1 exclusive; pad with
            empty boxes).  size: (H, W) of the boxes.  thresholds: T, for 0, 1/T, ..., (T-1)/T, or values.
        connectivity: 8 or 4.  chunk_pixels: pixels labelled at once (memory bound).

    Returns:
        (B, T) float32 IoU.
    """
    if not isinstance(maps, Tensor) or maps.dim() != 3:
        raise ValueError("maps must be (B, h, w)")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or inf")
    B = maps.shape[0]
    g = _check_gt_boxes(gt_boxes, B, maps.device)
    t = _thresholds(thresholds, maps.device)
    H, W = (int(v) for v in size)
    n = _minmax(upsample(maps, (H, W)))                                           # (B, H, W) in [0, 1]
    T = t.numel()
    if max_boxes is None:                                    # nested superlevel sets: one union-find pass
        bx = boxes_over_thresholds(n, t, connectivity)                             # (B, T, 4)
        return box_iou(bx[:, :, None], g[:, None]).amax(dim=2)
    step = max(1, int(chunk_pixels) // (T * H * W))
    out = []
    for s in range(0, B, step):
        nb = n[s:s + step]
        keep = (nb[:, None] >= t.view(1, T, 1, 1)) & (nb[:, None] > 0)            # (b, T, H, W)
        bx = boxes_from_masks(keep.reshape(-1, H, W), max_boxes or 1, connectivity)   # (b T, K, 4)
        bx = bx.reshape(nb.shape[0], T, -1, 1, 4)
        iou = box_iou(bx, g[s:s + step, None, None])                              # (b, T, K, G)
        out.append(iou.flatten(2).amax(dim=2))
    return torch.cat(out)


def max_box_acc(maps: Tensor, gt_boxes: Tensor, size: Tuple[int, int],
                thresholds: Union[int, Sequence[float], Tensor] = THRESHOLDS,
                iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7), max_boxes: Optional[int] = None,
                connectivity: int = 8) -> BoxAccuracy:
    """MaxBoxAccV2 (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR 2020).

    BoxAcc(t, d) = mean_i [IoU_i(t) >= d], with IoU_i(t) from :func:`box_ious`;
    MaxBoxAccV2 = mean_d max_t BoxAcc(t, d) over d in ``iou_thresholds`` (0.3, 0.5, 0.7). The
    best map threshold is chosen over all the images given (pass the whole data set at once).
    Differences from the authors' OpenCV code: components of the kept pixels, not contours
    (a component's pixel count, not its contour's polygon area, picks the largest); thresholds
    on the float map (``>= t``), not on its 8-bit copy (``> int(255 t)``); boxes with exclusive
    x1 / y1 on both sides, not inclusive ones clipped to W - 1.

    Args:
        maps: (B, h, w) maps.  gt_boxes: (B, 4) or (B, G, 4) object boxes in pixels of ``size``.
        size: (H, W) image size.  thresholds: map thresholds (count or values in [0, 1]).
        iou_thresholds: the IoU levels d.  max_boxes: None (largest component) or K boxes per map
            (the authors' multi-contour evaluation).  connectivity: 8 or 4.

    Returns:
        :class:`BoxAccuracy`.
    """
    ious = box_ious(maps, gt_boxes, size, thresholds, max_boxes, connectivity)     # (B, T)
    d = torch.as_tensor(list(iou_thresholds), dtype=torch.float32, device=ious.device)
    if d.numel() == 0 or (d <= 0).any() or (d > 1).any():
        raise ValueError(f"iou_thresholds must be in (0, 1], got {list(iou_thresholds)}")
    passed = ious[None] >= d.view(-1, 1, 1)                                        # (D, B, T)
    curve = passed.float().mean(dim=1)                                             # (D, T)
    per_iou, best = curve.max(dim=1)
    t = _thresholds(thresholds, ious.device)
    hits = passed.gather(2, best.view(-1, 1, 1).expand(-1, ious.shape[0], 1))[..., 0].float().mean(dim=0)
    return BoxAccuracy(per_iou.mean(), per_iou, t[best], curve, t, hits, ious)


# ---------------------------------------------------------------------------------- masks: PxAP
class PixelAP(NamedTuple):
    """pxap () Choe et al.'s PxAP, all pixels of all images pooled; per_image (B,) exact average
    precision of each image's pixels (NaN for an empty mask); precision, recall (T + 1,) the pooled
    curve from the highest threshold down."""

    pxap: Tensor
    per_image: Tensor
    precision: Tensor
    recall: Tensor


def _per_image_ap(scores: Tensor, positive: Tensor) -> Tensor:
    """Exact AP per row: sum over distinct score levels (high to low) of precision x recall gained."""
    v, order = scores.sort(dim=1, descending=True, stable=True)
    pos = positive.gather(1, order).float()
    P = v.shape[1]
    tp = pos.cumsum(dim=1)
    k = torch.arange(1, P + 1, device=v.device, dtype=torch.float32)
    npos = tp[:, -1:]
    prec, rec = tp / k, tp / npos.clamp_min(1)
    end = torch.ones_like(pos, dtype=torch.bool)
    end[:, :-1] = v[:, 1:] != v[:, :-1]                                             # last of a tied group
    cm = torch.where(end, rec, torch.zeros_like(rec)).cummax(dim=1).values
    prev = torch.cat([torch.zeros_like(cm[:, :1]), cm[:, :-1]], dim=1)
    ap = torch.where(end, prec * (rec - prev), torch.zeros_like(rec)).sum(dim=1)
    return torch.where(npos[:, 0] > 0, ap, torch.full_like(ap, float("nan")))


@torch.no_grad()
def pxap(maps: Tensor, masks: Tensor, thresholds: Union[int, Sequence[float], Tensor] = THRESHOLDS) -> PixelAP:
    """Pixel average precision of maps against object masks (Choe et al., CVPR 2020).

    Maps are upsampled to the mask size and min-max normalised per image (as for
    :func:`max_box_acc`). Pooled (the authors' PxAP): with the thresholds e_1 > ... (1 and the
    given thresholds, high to low), TP(e) / FP(e) count the object / background pixels of all
    images with value >= e; PxAP = sum_j P(e_j) (R(e_j) - R(e_{j-1})), R(e_0) = 0. Per image: the
    exact AP over the image's distinct values (no binning).

    Args:
        maps: (B, h, w).  masks: (B, H, W) bool.  thresholds: count or values in [0, 1].

    Returns:
        :class:`PixelAP`.
    """
    s, m = _maps_and_masks(maps, masks)
    if s.dim() != 3:
        raise ValueError("pxap takes (B, h, w) maps")
    n = _minmax(s).flatten(1)
    m = m.flatten(1)
    t = _thresholds(thresholds, n.device)
    asc = torch.cat([t, t.new_ones(1)]).sort().values                              # (T + 1,) edges, low to high
    E = asc.numel()
    c = torch.searchsorted(asc, n.flatten().contiguous(), right=True)              # edges <= value: 0..E
    mf = m.flatten()
    hist_t = torch.bincount(c[mf], minlength=E + 1).double()
    hist_f = torch.bincount(c[~mf], minlength=E + 1).double()
    # pixels with value >= asc[i] are those with c > i; from the highest edge down
    tp = hist_t.flip(0).cumsum(0)[:E]
    fp = hist_f.flip(0).cumsum(0)[:E]
    npos = m.sum().double()
    if npos == 0:
        raise ValueError("pxap needs at least one object pixel in the masks")
    prec = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), torch.ones_like(tp))
    rec = tp / npos
    gain = rec - torch.cat([rec.new_zeros(1), rec[:-1]])
    value = (prec * gain).sum().float()
    return PixelAP(value, _per_image_ap(n, m), prec.float(), rec.float())
