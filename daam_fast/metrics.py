"""Faithfulness and localisation metrics for saliency maps, batched on the maps' device.

Every function takes saliency maps at any resolution (e.g. ``res.final``, (B, h, w) on the
patch grid) and, where pixels are needed, upsamples them bilinearly
(``align_corners=False``) to the image / mask size. Nothing leaves the maps' device.

Faithfulness (the model is queried on perturbed inputs):

- :func:`deletion` / :func:`insertion` (Petsiuk et al., RISE, BMVC 2018): remove (or
  reveal) the most salient pixels or patches first and integrate the target score.
- :func:`confidence_change`: average drop and increase in confidence (Chattopadhay et al.,
  Grad-CAM++, WACV 2018).

Localisation (against ground-truth masks or boxes):

- :func:`pointing_game` (Zhang et al., IJCV 2018) and :func:`energy_pointing_game`
  (Wang et al., Score-CAM, CVPR-W 2020); :func:`boxes_to_masks` turns boxes into masks.

Example:
    >>> from daam_fast import DAAM, metrics
    >>> with DAAM(model) as daam:
    ...     res = daam(x)                                        # x (B, 3, H, W) normalised
    >>> d = metrics.deletion(model, x, res.final, res.targets)    # d.auc (B,), d.curve (B, steps + 1)
    >>> hit = metrics.pointing_game(res.final, masks)             # masks (B, H, W) bool
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PerturbationResult", "ConfidenceChange", "upsample", "make_baseline", "perturbation_ranks",
    "perturbation_curve", "auc", "deletion", "insertion", "confidence_change", "boxes_to_masks",
    "pointing_game", "energy_pointing_game",
]

ORDERS = ("pixel", "patch")
BASELINES = ("blur", "mean", "zero")
ScoreLike = Union[str, Callable[[Tensor, Tensor], Tensor]]
BaselineLike = Union[str, Tensor]


class PerturbationResult(NamedTuple):
    """auc (B,); curve (B, steps + 1) target scores; fractions (steps + 1,) of the image perturbed."""

    auc: Tensor
    curve: Tensor
    fractions: Tensor


class ConfidenceChange(NamedTuple):
    """drop (B,) in [0, 1]; increase (B,) bool; score (B,) on the image; masked_score (B,) on the masked image."""

    drop: Tensor
    increase: Tensor
    score: Tensor
    masked_score: Tensor


# ---------------------------------------------------------------------------------- helpers
def _check_saliency(saliency: Tensor, batch: Optional[int] = None) -> Tensor:
    if not isinstance(saliency, Tensor):
        raise TypeError(f"saliency must be a torch.Tensor (B, h, w), got {type(saliency).__name__}")
    if saliency.dim() != 3:
        raise ValueError(f"saliency must be (B, h, w), got shape {tuple(saliency.shape)} "
                         "(pass res.final, or res.maps[:, b] for block b)")
    if batch is not None and saliency.shape[0] != batch:
        raise ValueError(f"saliency has {saliency.shape[0]} maps for {batch} images")
    if not saliency.is_floating_point():
        saliency = saliency.float()
    if not torch.isfinite(saliency).all():
        raise ValueError("saliency contains NaN or inf")
    return saliency


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("images must be a float tensor (B, C, H, W) (the normalised model input), got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")


def upsample(saliency: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize of maps to a pixel size.

    Args:
        saliency: (B, h, w) or (B, L, h, w) maps.
        size: (H, W).

    Returns:
        (B, H, W) or (B, L, H, W) float32 on the maps' device (``align_corners=False``; a map
        already at ``size`` is returned as float32 unchanged).
    """
    s = saliency.float()
    if tuple(s.shape[-2:]) == tuple(size):
        return s
    lead = s.shape[:-2]
    out = F.interpolate(s.reshape(-1, 1, *s.shape[-2:]), size=tuple(size), mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


def _gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = images.shape[1]
    H, W = images.shape[-2:]
    x = images
    ph, pw = min(radius, H - 1), min(radius, W - 1)
    x = F.pad(x, (pw, pw, ph, ph), mode="reflect")
    kh = k[radius - ph: radius + ph + 1] / k[radius - ph: radius + ph + 1].sum()
    kw = k[radius - pw: radius + pw + 1] / k[radius - pw: radius + pw + 1].sum()
    x = F.conv2d(x, kw.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    x = F.conv2d(x, kh.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)
    return x


def make_baseline(images: Tensor, kind: BaselineLike = "blur", sigma: Optional[float] = None) -> Tensor:
    """The input that perturbed pixels take.

    Args:
        images: (B, C, H, W) normalised model input.
        kind: "blur": Gaussian blur of each image (std ``sigma`` pixels, default max(H, W) / 8,
            reflect padding; RISE's insertion baseline); "mean": each image's per-channel mean
            colour; "zero": 0 in model-input space (the dataset mean colour for inputs
            normalised by mean / std); or a tensor broadcastable to (B, C, H, W).
        sigma: blur std in pixels.

    Returns:
        (B, C, H, W) on the images' device.
    """
    _check_images(images)
    if isinstance(kind, Tensor):
        try:
            return torch.broadcast_to(kind.to(images.device, images.dtype), images.shape)
        except RuntimeError:
            raise ValueError(f"baseline tensor of shape {tuple(kind.shape)} does not broadcast to "
                             f"{tuple(images.shape)}") from None
    if kind == "blur":
        s = float(sigma) if sigma is not None else max(images.shape[-2:]) / 8.0
        if not s > 0:
            raise ValueError(f"blur sigma must be > 0, got {s}")
        return _gaussian_blur(images, s)
    if kind == "mean":
        return images.mean(dim=(-2, -1), keepdim=True).expand_as(images)
    if kind == "zero":
        return torch.zeros_like(images)
    raise ValueError(f"baseline={kind!r}: expected one of {', '.join(BASELINES)} or a tensor")


def perturbation_ranks(saliency: Tensor, size: Tuple[int, int], order: str = "pixel",
                       tie_seed: int = 0) -> Tuple[Tensor, int]:
    """The rank of every pixel in the perturbation order (0 = most salient, perturbed first).

    Args:
        saliency: (B, h, w) maps.
        size: (H, W) image size.
        order: "pixel": the pixels of the upsampled map, ranked one by one; "patch": the
            cells of the map's own grid (h, w), which must divide (H, W); every pixel of a
            cell gets the cell's rank.
        tie_seed: ties (e.g. the zeros after a ReLU) are broken by a fixed random order of
            the units drawn from this seed, the same for every image and method, so that
            no raster order (top rows first) favours one method.

    Returns:
        (ranks (B, H, W) long, M the number of units: H * W pixels or h * w patches).
    """
    saliency = _check_saliency(saliency)
    if order not in ORDERS:
        raise ValueError(f"order={order!r}: expected one of {', '.join(ORDERS)}")
    B, h, w = saliency.shape
    H, W = size
    if order == "pixel":
        scores = upsample(saliency, (H, W)).reshape(B, -1)
    else:
        if H % h or W % w:
            raise ValueError(f"order='patch': the map grid {h}x{w} does not divide the image size {H}x{W}")
        scores = saliency.reshape(B, -1)
    M = scores.shape[1]
    g = torch.Generator().manual_seed(int(tie_seed))
    perm = torch.randperm(M, generator=g).to(scores.device)
    idx = perm[torch.argsort(-scores[:, perm], dim=1, stable=True)]       # (B, M) most salient first
    ranks = torch.empty_like(idx)
    ranks.scatter_(1, idx, torch.arange(M, device=scores.device).expand(B, M))
    if order == "patch":
        ranks = ranks.reshape(B, h, w).repeat_interleave(H // h, dim=1).repeat_interleave(W // w, dim=2)
    return ranks.reshape(B, H, W), M


def _scores(out, targets: Tensor, score: ScoreLike) -> Tensor:
    if isinstance(out, tuple):
        out = out[0]
    if callable(score):
        return score(out, targets).float()
    if score == "prob":
        return out.float().softmax(dim=-1).gather(1, targets[:, None])[:, 0]
    if score == "logit":
        return out.float().gather(1, targets[:, None])[:, 0]
    raise ValueError(f"score={score!r}: expected 'prob', 'logit' or a callable (outputs, targets) -> (B,)")


def _check_targets(targets, B: int, device) -> Tensor:
    t = torch.as_tensor(targets, device=device)
    if t.dim() == 0:
        t = t.expand(B)
    if t.shape != (B,) or t.is_floating_point():
        raise ValueError(f"targets must be (B,) = ({B},) class indices, got {tuple(t.shape)} {t.dtype}")
    return t.long()


def auc(curve: Tensor, fractions: Optional[Tensor] = None) -> Tensor:
    """Area under curves by the trapezoidal rule.

    AUC = sum_i (x_{i+1} - x_i) (c_i + c_{i+1}) / 2, with x the fractions (default
    evenly spaced on [0, 1]).

    Args:
        curve: (..., S) values.  fractions: (S,) increasing x positions.

    Returns:
        (...) areas.
    """
    S = curve.shape[-1]
    if S < 2:
        raise ValueError("a curve needs at least 2 points")
    x = torch.linspace(0, 1, S, device=curve.device) if fractions is None else fractions.to(curve.device).float()
    dx = x[1:] - x[:-1]
    return ((curve[..., 1:] + curve[..., :-1]) * 0.5 * dx).sum(dim=-1)


# ---------------------------------------------------------------------------------- deletion / insertion
@torch.no_grad()
def perturbation_curve(model: Callable[[Tensor], Tensor], images: Tensor, saliency: Tensor, targets,
                       mode: str = "deletion", steps: int = 16, order: str = "pixel", baseline: BaselineLike = "blur",
                       score: ScoreLike = "prob", batch_size: int = 64, blur_sigma: Optional[float] = None,
                       tie_seed: int = 0) -> PerturbationResult:
    """Deletion or insertion curve (RISE, Petsiuk et al. 2018), batched.

    With ranks r (0 = most salient, :func:`perturbation_ranks`), M units and
    k_i = round(i M / steps) for i = 0..steps, the perturbed input at step i is

        deletion:  x_i = where(r < k_i, baseline, x)     (most salient removed first)
        insertion: x_i = where(r < k_i, x, baseline)     (most salient revealed first)

    and c_i = score(model(x_i))[target], by default the softmax probability. The AUC is the
    trapezoidal area of c over the fractions k_i / M (:func:`auc`). A faithful map gives a
    LOW deletion AUC and a HIGH insertion AUC.

    Args:
        model: callable (B, C, H, W) -> logits (B, K) (e.g. the model in eval mode).
        images: (B, C, H, W) normalised model input.
        saliency: (B, h, w) maps (e.g. ``res.final``).
        targets: (B,) classes whose score is tracked (or an int).
        mode: "deletion" or "insertion".
        steps: number of perturbation steps (the curve has steps + 1 points).
        order: "pixel" or "patch" (see :func:`perturbation_ranks`).
        baseline: "blur" (default), "mean", "zero" or a tensor (see :func:`make_baseline`).
        score: "prob" (softmax of the target), "logit", or a callable (outputs, targets) -> (B,).
        batch_size: perturbed images per forward pass.
        blur_sigma: for baseline="blur".
        tie_seed: see :func:`perturbation_ranks`.

    Returns:
        PerturbationResult(auc (B,), curve (B, steps + 1), fractions (steps + 1,)).
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode={mode!r}: expected 'deletion' or 'insertion'")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_images(images)
    B, C, H, W = images.shape
    saliency = _check_saliency(saliency, B).to(images.device)
    targets = _check_targets(targets, B, images.device)
    ranks, M = perturbation_ranks(saliency, (H, W), order, tie_seed)
    if steps > M:
        raise ValueError(f"steps={steps} exceeds the {M} {order}s to perturb")
    base = make_baseline(images, baseline, blur_sigma)
    ks = torch.tensor([round(i * M / steps) for i in range(steps + 1)], device=images.device)
    S = steps + 1
    curve = torch.empty(B * S, device=images.device)
    for start in range(0, B * S, int(batch_size)):
        j = torch.arange(start, min(B * S, start + int(batch_size)), device=images.device)
        img, step = j // S, j % S
        sel = (ranks[img] < ks[step].view(-1, 1, 1))[:, None]             # (n, 1, H, W): perturbed pixels
        if mode == "deletion":
            x = torch.where(sel, base[img], images[img])
        else:
            x = torch.where(sel, images[img], base[img])
        curve[j] = _scores(model(x), targets[img], score)
    curve = curve.reshape(B, S)
    fractions = ks.float() / M
    return PerturbationResult(auc(curve, fractions), curve, fractions)


def deletion(model, images: Tensor, saliency: Tensor, targets, **kw) -> PerturbationResult:
    """Deletion curve and AUC (lower is better): :func:`perturbation_curve` with mode="deletion".

    Args:
        model: callable (B, C, H, W) -> logits (B, K).  images: (B, C, H, W).
        saliency: (B, h, w).  targets: (B,).  **kw: steps, order, baseline, score, ...

    Returns:
        PerturbationResult(auc (B,), curve (B, steps + 1), fractions (steps + 1,)).
    """
    return perturbation_curve(model, images, saliency, targets, mode="deletion", **kw)


def insertion(model, images: Tensor, saliency: Tensor, targets, **kw) -> PerturbationResult:
    """Insertion curve and AUC (higher is better): :func:`perturbation_curve` with mode="insertion".

    Args:
        model: callable (B, C, H, W) -> logits (B, K).  images: (B, C, H, W).
        saliency: (B, h, w).  targets: (B,).  **kw: steps, order, baseline, score, ...

    Returns:
        PerturbationResult(auc (B,), curve (B, steps + 1), fractions (steps + 1,)).
    """
    return perturbation_curve(model, images, saliency, targets, mode="insertion", **kw)


# ---------------------------------------------------------------------------------- average drop / increase
def _minmax(s: Tensor) -> Tensor:
    lo = s.amin(dim=(-2, -1), keepdim=True)
    hi = s.amax(dim=(-2, -1), keepdim=True)
    rng = hi - lo
    return torch.where(rng > 0, (s - lo) / torch.where(rng > 0, rng, torch.ones_like(rng)), torch.zeros_like(s))


@torch.no_grad()
def confidence_change(model: Callable[[Tensor], Tensor], images: Tensor, saliency: Tensor, targets,
                      baseline: BaselineLike = "zero", score: ScoreLike = "prob",
                      blur_sigma: Optional[float] = None) -> ConfidenceChange:
    """Average drop and increase in confidence (Chattopadhay et al., Grad-CAM++, 2018).

    The explanation map E = minmax(upsample(S)) in [0, 1] per image (a constant map gives
    E = 0) keeps the image where it is high: x' = E x + (1 - E) baseline (with baseline
    "zero", x' = E x in model-input space, the authors' "image * map"). With Y = score(x)
    and O = score(x') of the target class:

        drop_i     = max(0, Y_i - O_i) / Y_i          (average drop = 100 * mean_i drop_i, lower is better)
        increase_i = [O_i > Y_i]                      (increase in confidence = 100 * mean_i, higher is better)

    Args:
        model: callable (B, C, H, W) -> logits (B, K).
        images: (B, C, H, W) normalised model input.
        saliency: (B, h, w) maps.
        targets: (B,) classes (or an int).
        baseline: "zero" (default), "blur", "mean" or a tensor (:func:`make_baseline`).
        score: "prob" (default; the ratio needs a positive score), "logit" or a callable.

    Returns:
        ConfidenceChange(drop (B,), increase (B,) bool, score (B,), masked_score (B,)).
    """
    _check_images(images)
    B, _, H, W = images.shape
    saliency = _check_saliency(saliency, B).to(images.device)
    targets = _check_targets(targets, B, images.device)
    E = _minmax(upsample(saliency, (H, W)))[:, None]                        # (B, 1, H, W)
    base = make_baseline(images, baseline, blur_sigma)
    Y = _scores(model(images), targets, score)
    O = _scores(model(E * images + (1 - E) * base), targets, score)
    drop = (Y - O).clamp_min(0) / Y.clamp_min(torch.finfo(Y.dtype).tiny)
    return ConfidenceChange(drop, O > Y, Y, O)


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
