"""Faithfulness: the model is queried on inputs perturbed in the order the map gives.

- :func:`deletion` / :func:`insertion` (Petsiuk et al., RISE, BMVC 2018): remove (or
  reveal) the most salient pixels or patches first and integrate the target score.
- :func:`confidence_change`: average drop and increase in confidence (Chattopadhay et al.,
  Grad-CAM++, WACV 2018).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import ScoreLike, _check_images, _check_saliency, _check_targets, _minmax, _scores, upsample

__all__ = ["PerturbationResult", "ConfidenceChange", "make_baseline", "perturbation_ranks", "perturbation_curve",
           "auc", "deletion", "insertion", "confidence_change"]

ORDERS = ("pixel", "patch")
BASELINES = ("blur", "mean", "zero")
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


def _one_mode(mode: str, better: str) -> Callable[..., PerturbationResult]:
    """:func:`perturbation_curve` with ``mode`` fixed, as the public function named after it."""
    def curve(model, images: Tensor, saliency: Tensor, targets, **kw) -> PerturbationResult:
        return perturbation_curve(model, images, saliency, targets, mode=mode, **kw)

    curve.__name__ = curve.__qualname__ = mode
    curve.__doc__ = f"""{mode.capitalize()} curve and AUC ({better} is better): :func:`perturbation_curve` with mode="{mode}".

    Args:
        model: callable (B, C, H, W) -> logits (B, K).  images: (B, C, H, W).
        saliency: (B, h, w).  targets: (B,).  **kw: steps, order, baseline, score, ...

    Returns:
        PerturbationResult(auc (B,), curve (B, steps + 1), fractions (steps + 1,)).
    """
    return curve


deletion = _one_mode("deletion", "lower")
insertion = _one_mode("insertion", "higher")


# ---------------------------------------------------------------------------------- average drop / increase
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


