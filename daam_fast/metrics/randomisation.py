"""Model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

A map that explains the model must change when the model's weights are destroyed. One copy
of the model is re-randomised in place, step by step:

- cascading: the head (final norm and classifier), then block L, L-1, ..., 1, then the
  embedding, each step keeping the earlier ones random (from the output to the input);
- independent: each of those layers alone, restored from a saved copy of its own parameters
  before the next one.

At every step all images are explained again (each for its original target, the same as on
the trained model) and compared with the trained model's maps by Spearman rank correlation,
SSIM and top-k intersection (:mod:`.similarity`). Similarity near 1 after randomisation
means the map does not depend on those weights: the method fails the check.
"""
from __future__ import annotations

import copy
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ._checks import _check_images, _check_targets, upsample
from .robustness import ExplainFn, explain_batched
from .similarity import spearman, ssim, topk_intersection

__all__ = ["Randomisation", "randomisation", "randomisation_layers", "randomise_", "SIMILARITIES"]

SIMILARITIES = ("spearman", "ssim", "topk")
_EMBED = ("embed", "cls_token", "class_token", "reg_token", "dist_token", "mask_token", "pos_", "position", "conv_proj")


class Randomisation(NamedTuple):
    """Result of :func:`randomisation`.

    steps: names of the cascading steps, "original" first, then the layer randomised at each
    step (cumulative); cascading {similarity: (B, S)} per image and step (column 0: the trained
    model's maps against themselves, 1 unless a map is constant); layers: names of the independent steps; independent
    {similarity: (B, len(layers))}: that layer alone randomised.
    """

    steps: List[str]
    cascading: Dict[str, Tensor]
    layers: List[str]
    independent: Dict[str, Tensor]


def randomisation_layers(model: nn.Module) -> List[Tuple[str, List[str]]]:
    """The layers of a ViT in cascading order, as (name, parameter names).

    "head": every parameter outside the blocks that is not part of the embedding (final
    norm, pooling norm, classifier); "block b" (1-based, from the last); "embedding": patch
    projection, position embedding and prefix tokens. The blocks come from the model's
    adapter (:mod:`daam_fast.adapters`), so every supported family works.

    Returns:
        [(name, [parameter names of ``model.named_parameters()``])...], head first.
    """
    from ..adapters import get_adapter
    adapter = get_adapter(model)
    names = {id(m): n for n, m in model.named_modules()}
    prefixes = []
    for blk in adapter.blocks:
        if id(blk) not in names:
            raise ValueError("a block of the adapter is not a sub-module of the model")
        prefixes.append(names[id(blk)] + ".")
    params = [n for n, _ in model.named_parameters()]
    in_block = [[n for n in params if n.startswith(p)] for p in prefixes]
    inside = {n for b in in_block for n in b}
    outside = [n for n in params if n not in inside]
    embed = [n for n in outside if any(k in n for k in _EMBED)]
    head = [n for n in outside if n not in embed]
    layers = [("head", head)] if head else []
    layers += [(f"block {b + 1}", in_block[b]) for b in reversed(range(len(prefixes)))]
    if embed:
        layers.append(("embedding", embed))
    return layers


@torch.no_grad()
def randomise_(params: Sequence[nn.Parameter], seed: int) -> None:
    """Re-draw parameters in place: p <- N(mean(p), std(p)^2) per tensor (its scale kept, its structure gone).

    Adebayo et al. re-draw from the initialisation distribution; Quantus calls each layer's
    ``reset_parameters``. Keeping each tensor's own mean and std keeps the activations in the
    range the rest of the network expects (a layer norm's gain stays near 1), so the maps stay
    defined while the learnt weights are gone. Deterministic in ``seed``.
    """
    for i, p in enumerate(params):
        g = torch.Generator(device=p.device).manual_seed(int(seed) * 1000003 + i)
        mu = p.float().mean()
        sd = p.float().std(unbiased=False) if p.numel() > 1 else torch.zeros((), device=p.device)
        p.copy_((torch.randn(p.shape, generator=g, device=p.device) * sd + mu).to(p.dtype))


def _similarities(ref: Tensor, maps: Tensor, size: Optional[Tuple[int, int]], k: int,
                  which: Sequence[str]) -> Dict[str, Tensor]:
    out = {}
    if "spearman" in which:
        out["spearman"] = spearman(maps, ref)
    if "topk" in which:
        out["topk"] = topk_intersection(maps, ref, k)
    if "ssim" in which:
        a, b = (upsample(maps, size), upsample(ref, size)) if size is not None else (maps, ref)
        w = min(7, min(a.shape[-2:]) - (1 - min(a.shape[-2:]) % 2))
        out["ssim"] = ssim(a, b, win_size=w)
    return out


def randomisation(model: nn.Module, explain: ExplainFn, images: Tensor, targets, modes: Sequence[str] = ("cascading",
                  "independent"), similarities: Sequence[str] = SIMILARITIES, size: Optional[Tuple[int, int]] = None,
                  topk: float = 0.1, batch_size: int = 32, seed: int = 0, maps: Optional[Tensor] = None,
                  layers: Optional[List[Tuple[str, List[str]]]] = None) -> Randomisation:
    """Cascading and independent model-parameter randomisation (Adebayo et al. 2018), batched.

    One deep copy of ``model`` is made; its layers (:func:`randomisation_layers`) are
    re-drawn in place (:func:`randomise_`, layer j always with the same draw, so the
    independent step j and the cascading step j share weights). After every step all images
    are explained by ``explain(copy, images, targets)`` in chunks of ``batch_size`` and compared
    with the trained model's maps. The copy is discarded at the end (also on error); ``model``
    is never touched.

    Args:
        model: the trained model.  explain: ``explain(model, images, targets) -> (b, h, w)``.
        images: (B, C, H, W) normalised input.  targets: (B,) classes, kept at every step.
        modes: "cascading" and / or "independent".
        similarities: from "spearman" (rank correlation on the map grid), "ssim" (on maps
            upsampled to ``size``; skimage's definition, 7 x 7 window, maps min-max normalised),
            "topk" (intersection of the ``topk`` share of most salient cells, at least 1).
        size: (H, W) for SSIM (default: the map grid).  topk: share of cells for "topk".
        batch_size: images per ``explain`` call.  seed: seed of the re-draws.
        maps: (B, h, w) trained-model maps, if already computed.  layers: override the layers.

    Returns:
        :class:`Randomisation`.
    """
    _check_images(images)
    B = images.shape[0]
    t = _check_targets(targets, B, images.device)
    bad = [m for m in modes if m not in ("cascading", "independent")] + \
        [s for s in similarities if s not in SIMILARITIES]
    if bad or not modes or not similarities:
        raise ValueError(f"unknown or missing modes / similarities {bad}; modes from cascading, independent; "
                         f"similarities from {', '.join(SIMILARITIES)}")
    ref = explain_batched(explain, model, images, t, batch_size) if maps is None else maps.detach().float()
    k = max(1, int(round(float(topk) * ref[0].numel())))
    layers = layers if layers is not None else randomisation_layers(model)
    work = copy.deepcopy(model)
    try:
        params = dict(work.named_parameters())
        cascading: Dict[str, List[Tensor]] = {s: [] for s in similarities}
        steps: List[str] = []
        if "cascading" in modes:
            steps.append("original")                     # the copy is the model: its maps are ``ref``
            for s, v in _similarities(ref, ref, size, k, similarities).items():
                cascading[s].append(v)
            for j, (name, names) in enumerate(layers):
                randomise_([params[n] for n in names], seed + j)
                steps.append(name)
                for s, v in _similarities(ref, explain_batched(explain, work, images, t, batch_size), size, k,
                                          similarities).items():
                    cascading[s].append(v)
            work.load_state_dict(model.state_dict())                              # back to trained weights
        independent: Dict[str, List[Tensor]] = {s: [] for s in similarities}
        if "independent" in modes:
            for j, (name, names) in enumerate(layers):
                saved = [params[n].detach().clone() for n in names]
                randomise_([params[n] for n in names], seed + j)
                try:
                    maps_j = explain_batched(explain, work, images, t, batch_size)
                finally:
                    with torch.no_grad():
                        for n, v in zip(names, saved):
                            params[n].copy_(v)
                for s, v in _similarities(ref, maps_j, size, k, similarities).items():
                    independent[s].append(v)
    finally:
        del work
    stack = lambda d: {s: torch.stack(v, dim=1) for s, v in d.items() if v}  # noqa: E731
    return Randomisation(steps, stack(cascading), [n for n, _ in layers] if "independent" in modes else [],
                         stack(independent))
