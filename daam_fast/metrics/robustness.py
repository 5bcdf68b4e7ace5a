"""Robustness of explanations to small input changes, batched over images and samples.

- :func:`max_sensitivity` (Yeh et al., NeurIPS 2019) and :func:`local_lipschitz`
  (Alvarez-Melis and Jaakkola, 2018) under Gaussian input noise, from the same samples
  (:func:`robustness` gives both for the price of one).
- :func:`stability`: Spearman correlation between the map of an image and the maps of its
  brightness / contrast-changed copies that keep the model's prediction.

An explainer is any callable ``explain(model, images (b, C, H, W), targets (b,)) -> maps (b, h, w)``;
each image is explained for its own target, the same target on every perturbed copy.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

from ._checks import _check_images, _check_targets
from .similarity import spearman

__all__ = ["explain_batched", "Robustness", "robustness", "max_sensitivity", "local_lipschitz",
           "Stability", "stability", "photometric_copies"]

ExplainFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def explain_batched(explain: ExplainFn, model: nn.Module, images: Tensor, targets: Tensor, batch_size: int) -> Tensor:
    """``explain`` over ``images`` in chunks of ``batch_size``: (n, h, w) float32 maps, detached."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = []
    for s in range(0, images.shape[0], int(batch_size)):
        m = explain(model, images[s:s + batch_size], targets[s:s + batch_size])
        if not isinstance(m, Tensor) or m.dim() != 3 or m.shape[0] != images[s:s + batch_size].shape[0]:
            raise ValueError(f"explain must return (b, h, w) maps, got "
                             f"{tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__}")
        out.append(m.detach().float())
    return torch.cat(out)


def _unit_max(maps: Tensor) -> Tensor:
    peak = maps.abs().flatten(-2).amax(dim=-1)[..., None, None]
    return torch.where(peak > 0, maps / peak.clamp_min(1e-30), torch.zeros_like(maps))


class Robustness(NamedTuple):
    """max_sensitivity (B,); local_lipschitz (B,); the largest over the noise samples (lower is more robust)."""

    max_sensitivity: Tensor
    local_lipschitz: Tensor


def robustness(model: nn.Module, explain: ExplainFn, images: Tensor, targets, samples: int = 8, sigma: float = 0.1,
               batch_size: int = 32, seed: int = 0, maps: Optional[Tensor] = None,
               normalise: bool = True) -> Robustness:
    """Max-sensitivity and local Lipschitz estimate from the same Gaussian noise samples.

    For image x with map e(x) (each map divided by its maximum |value| when ``normalise``, so
    methods with different scales compare), and n samples delta_j ~ N(0, sigma^2 I) in
    model-input space:

        max_sensitivity = max_j ||e(x + delta_j) - e(x)||_2 / ||e(x)||_2        (Yeh et al. 2019)
        local_lipschitz = max_j ||e(x + delta_j) - e(x)||_2 / ||delta_j||_2     (Alvarez-Melis and Jaakkola 2018)

    Yeh et al. sample the noise uniformly in a ball and Quantus by default uniformly in
    [-0.2, 0.2]; here both scores use the same Gaussian samples (Quantus' local Lipschitz
    default, std 0.1). A map that is zero everywhere gives NaN sensitivity.

    Args:
        model: the model passed to ``explain``.
        explain: ``explain(model, images, targets) -> (b, h, w)``.
        images: (B, C, H, W) normalised model input.  targets: (B,) classes (or an int).
        samples: noise samples n per image.  sigma: noise std in model-input units.
        batch_size: images per ``explain`` call.  seed: noise seed.
        maps: (B, h, w) maps of the clean images, if already computed.
        normalise: divide every map by its maximum |value| first.

    Returns:
        :class:`Robustness` (max_sensitivity (B,), local_lipschitz (B,)).
    """
    _check_images(images)
    B = images.shape[0]
    t = _check_targets(targets, B, images.device)
    n = int(samples)
    if n < 1 or not sigma > 0:
        raise ValueError(f"need samples >= 1 and sigma > 0, got samples={samples}, sigma={sigma}")
    e0 = explain_batched(explain, model, images, t, batch_size) if maps is None else maps.detach().float()
    if e0.shape[0] != B or e0.dim() != 3:
        raise ValueError(f"maps must be (B, h, w) with B = {B}, got {tuple(e0.shape)}")
    if normalise:
        e0 = _unit_max(e0)
    g = torch.Generator().manual_seed(int(seed))
    diffs, norms = [], []
    step = max(1, int(batch_size) // n)
    for s in range(0, B, step):
        x = images[s:s + step]
        b = x.shape[0]
        noise = (torch.randn((b, n) + tuple(x.shape[1:]), generator=g) * float(sigma)).to(x.device, x.dtype)
        e = explain_batched(explain, model, (x[:, None] + noise).flatten(0, 1), t[s:s + step].repeat_interleave(n),
                            batch_size).reshape(b, n, *e0.shape[1:])
        if normalise:
            e = _unit_max(e)
        diffs.append((e - e0[s:s + step, None]).flatten(2).norm(dim=2))          # (b, n)
        norms.append(noise.flatten(2).norm(dim=2).float())
    diff, dn = torch.cat(diffs), torch.cat(norms)
    ref = e0.flatten(1).norm(dim=1)
    sens = torch.where(ref > 0, diff.amax(dim=1) / ref.clamp_min(1e-30), torch.full_like(ref, float("nan")))
    return Robustness(sens, (diff / dn).amax(dim=1))


def max_sensitivity(model: nn.Module, explain: ExplainFn, images: Tensor, targets, **kw) -> Tensor:
    """Max-sensitivity (Yeh et al. 2019), (B,): :func:`robustness`'s first score (same keywords)."""
    return robustness(model, explain, images, targets, **kw).max_sensitivity


def local_lipschitz(model: nn.Module, explain: ExplainFn, images: Tensor, targets, **kw) -> Tensor:
    """Local Lipschitz estimate (Alvarez-Melis and Jaakkola 2018), (B,): :func:`robustness`'s second score."""
    return robustness(model, explain, images, targets, **kw).local_lipschitz


def photometric_copies(images: Tensor, brightness: Sequence[float] = (-0.1, 0.1),
                       contrast: Sequence[float] = (0.8, 1.2), mean: Optional[Sequence[float]] = None,
                       std: Optional[Sequence[float]] = None) -> Tensor:
    """Brightness- and contrast-changed copies of normalised images.

    In pixel space p = x std + mean (p = x without ``mean`` / ``std``): brightness beta gives
    p + beta, contrast alpha gives alpha (p - m) + m with m the image's mean grey level
    (torchvision's ``adjust_contrast``); with ``mean`` / ``std`` the copy is clipped to [0, 1].

    Args:
        images: (B, C, H, W) normalised model input.
        brightness: offsets beta in pixel units (1 = white).  contrast: factors alpha.
        mean, std: the per-channel normalisation of the model input.

    Returns:
        (B, V, C, H, W) copies, V = len(brightness) + len(contrast), brightness first.
    """
    _check_images(images)
    C = images.shape[1]
    known = mean is not None and std is not None
    m = torch.as_tensor(mean if known else [0.0] * C, dtype=images.dtype, device=images.device).view(1, C, 1, 1)
    s = torch.as_tensor(std if known else [1.0] * C, dtype=images.dtype, device=images.device).view(1, C, 1, 1)
    p = images * s + m
    grey = p.mean(dim=(1, 2, 3), keepdim=True) if C != 3 else \
        (0.299 * p[:, 0] + 0.587 * p[:, 1] + 0.114 * p[:, 2]).mean(dim=(1, 2))[:, None, None, None]
    outs = [p + float(b) for b in brightness] + [float(a) * (p - grey) + grey for a in contrast]
    if not outs:
        raise ValueError("no brightness or contrast change given")
    out = torch.stack(outs, dim=1)
    if known:
        out = out.clamp(0, 1)
    return (out - m[:, None]) / s[:, None]


class Stability(NamedTuple):
    """score (B,) mean Spearman over the kept copies (NaN if none kept); per_copy (B, V) Spearman
    (NaN where the copy changed the prediction); kept (B, V) bool."""

    score: Tensor
    per_copy: Tensor
    kept: Tensor


def stability(model: nn.Module, explain: ExplainFn, images: Tensor, targets, maps: Optional[Tensor] = None,
              predict: Optional[Callable[[Tensor], Tensor]] = None, batch_size: int = 32,
              brightness: Sequence[float] = (-0.1, 0.1), contrast: Sequence[float] = (0.8, 1.2),
              mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> Stability:
    """Spearman correlation between an image's map and the maps of its photometric copies.

    The copies (:func:`photometric_copies`) whose predicted class (argmax of ``predict``) equals
    the image's are kept; each is explained for the image's target and compared with the
    image's map by :func:`daam_fast.metrics.spearman` on the map grid. Higher is more stable.

    Args:
        model: the model passed to ``explain``.  explain: ``explain(model, images, targets) -> (b, h, w)``.
        images: (B, C, H, W) normalised model input.  targets: (B,) classes.
        maps: (B, h, w) maps of the images, if already computed.
        predict: images -> logits (default ``model``).  batch_size: images per call.
        brightness, contrast, mean, std: see :func:`photometric_copies`.

    Returns:
        :class:`Stability`.
    """
    _check_images(images)
    B = images.shape[0]
    t = _check_targets(targets, B, images.device)
    predict = predict or model
    e0 = explain_batched(explain, model, images, t, batch_size) if maps is None else maps.detach().float()
    copies = photometric_copies(images, brightness, contrast, mean, std)             # (B, V, C, H, W)
    V = copies.shape[1]
    flat = copies.flatten(0, 1)
    with torch.no_grad():
        def pred(x):
            outs = []
            for s in range(0, x.shape[0], int(batch_size)):
                o = predict(x[s:s + batch_size])
                outs.append((o[0] if isinstance(o, tuple) else o).argmax(dim=-1))
            return torch.cat(outs)
        kept = (pred(flat).view(B, V) == pred(images)[:, None])
    keep = kept.flatten()                                                            # explain the kept copies only
    rho = torch.full((B * V,), float("nan"), device=e0.device)
    if keep.any():
        e = explain_batched(explain, model, flat[keep], t.repeat_interleave(V)[keep], batch_size)
        rho[keep.to(rho.device)] = spearman(e, e0.repeat_interleave(V, dim=0)[keep.to(e0.device)])
    rho = rho.view(B, V)
    return Stability(torch.nanmean(rho, dim=1), rho, kept)
