"""Running an evaluation: every method explains the same images, every final map is scored."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import baselines as _baselines
from .. import metrics as M
from ..result import DAAMResult
from .config import DAAM_METHODS, GRAD_ONLY_OPTIONS, METHODS, RENAMED_METHODS, ROWS, EvalOptions, metric_groups
from .trust import batch_metrics, dataset_metrics

__all__ = ["explain", "evaluate"]


def explain(model: nn.Module, images: Tensor, method: str, target=None, options: Optional[EvalOptions] = None,
            daam=None, generator: Optional[torch.Generator] = None) -> DAAMResult:
    """One method's explanation of a batch, as a DAAMResult.

    Args:
        model: a timm ViT with a classifier head.
        images: (B, C, H, W) normalised model input.
        method: one of :data:`METHODS`: a DAAM method of the explainer (:data:`DAAM_METHODS`:
            "grad", "direct", ...), a baseline, or "random".
        target: None, int or (B,) classes.
        options: :class:`EvalOptions` (rollout options and the seed of "random" are used).
        daam: an entered :class:`daam_fast.DAAM` to reuse for a DAAM method (optional).
        generator: CPU generator of the "random" maps (default: one seeded with ``options.seed``).

    Returns:
        DAAMResult with maps (B, L, h, w).
    """
    from ..explainer import DAAM
    cfg = options or EvalOptions()
    if method in DAAM_METHODS:
        if daam is not None:
            return daam(images, target=target)
        with DAAM(model, method=method) as d:
            return d(images, target=target)
    if method == "rollout":
        return _baselines.rollout(model, images, target, discard_ratio=cfg.rollout_discard,
                                  head_fusion=cfg.rollout_fusion)
    if method == "random":
        res = _baselines.attention_map(model, images, target)             # for the grid, targets and logits
        g = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
        r = torch.rand(res.maps.shape, generator=g).to(res.maps.device)      # uniform noise: the chance reference
        return DAAMResult(block_maps=r, maps=r, targets=res.targets, logits=res.logits, method="random", grid=res.grid)
    if method in _baselines.BASELINES:
        return _baselines.explain(model, images, method, target)
    if method in RENAMED_METHODS:
        raise ValueError(f"renamed method: {method!r} is now {RENAMED_METHODS[method]!r}")
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


@torch.no_grad()
def _predict(model, images: Tensor, batch_size: int) -> Tensor:
    outs = []
    for s in range(0, images.shape[0], batch_size):
        o = model(images[s:s + batch_size])
        outs.append((o[0] if isinstance(o, tuple) else o).float())
    return torch.cat(outs)


def evaluate(model: nn.Module, images: Tensor, masks: Optional[Tensor] = None, targets: Optional[Tensor] = None,
             options: Optional[EvalOptions] = None, *, progress: bool = True, daam_options: Optional[dict] = None,
             input_norm: Optional[Tuple[Sequence[float], Sequence[float]]] = None, **fields) -> dict:
    """Explain ``images`` with every method of ``options.methods`` and score every final map.

    The metric groups of ``options.metrics`` (:data:`~daam_fast.evaluate.config.METRIC_GROUPS`):
    faithfulness and localisation per batch (as before), robustness and complexity per batch,
    boxes (MaxBoxAccV2, PxAP) and the randomisation test over all images at once (the best box
    threshold is chosen over the data set; the model copy is re-randomised once per step).

    Args:
        model: a timm ViT with a classifier head (eval mode).
        images: (n, C, H, W) normalised model input (on the model's device).
        masks: (n, H, W) bool object masks, or None (no pointing games).
        targets: (n,) classes to explain, or None for each image's prediction.
        options: :class:`EvalOptions` (default: its defaults); its fields ``data``, ``masks``,
            ``num_images`` and ``target`` say where the images came from and are not read here.
        progress: tqdm progress bars.
        daam_options: extra :class:`daam_fast.DAAM` keywords for the DAAM methods (``compile``;
            ``activation_checkpointing`` for "grad" only, dropped for the others). They change the cost, not the maps.
        input_norm: (mean, std) of the model input, so that the stability copies change brightness
            and contrast in pixel space (clipped to [0, 1]); None: in model-input units.
        **fields: :class:`EvalOptions` fields that replace those of ``options``
            (e.g. ``methods=("grad", "rollout")``).

    Returns:
        dict with "per_image" {method: {metric: (n,) tensor}}, "curves" {method: {"deletion",
        "insertion": (n, steps + 1)}}, "fractions" (steps + 1,), "blocks" {method: {"accumulated",
        "per_block": (n, L) energy pointing game per block}} for methods with L > 1,
        "final" {method: (n, h, w)}, "seconds" {method: explain time}, "metric_seconds" {method:
        {group: seconds}}, "trust" {method: dataset-level box / PxAP / randomisation results},
        "groups", "targets", "predictions", "config", "methods".

    Raises:
        ValueError: an option out of range (:meth:`EvalOptions.check`), a model without a
            classifier head, or masks that do not match the images.
    """
    from tqdm import tqdm
    from ..adapters import get_adapter
    from ..explainer import DAAM
    cfg = dataclasses.replace(options or EvalOptions(), **fields)
    cfg.check()
    groups = metric_groups(cfg.metrics)
    methods = list(cfg.methods)
    adapter = get_adapter(model)
    if adapter.num_classes == 0:
        raise ValueError("evaluation needs a model with a classifier head (deletion / insertion track a class score)")
    n = images.shape[0]
    if masks is not None and (masks.shape[0] != n or tuple(masks.shape[-2:]) != tuple(images.shape[-2:])):
        raise ValueError(f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
    model.eval()
    logits = _predict(adapter.run, images, cfg.batch_size)
    preds = logits.argmax(1)
    targets = preds if targets is None else torch.as_tensor(targets, device=images.device).long()
    out = {"per_image": {}, "curves": {}, "blocks": {}, "final": {}, "seconds": {}, "fractions": None,
           "targets": targets, "predictions": preds, "config": asdict(cfg), "methods": methods, "n": n,
           "metric_seconds": {}, "trust": {}, "groups": groups}

    score_fn = adapter.run                                  # logits (B, K) for every model family

    for meth in methods:
        per: Dict[str, List[Tensor]] = {k: [] for k, *_ in ROWS}
        curves: Dict[str, List[Tensor]] = {"deletion": [], "insertion": []}
        blocks: Dict[str, List[Tensor]] = {"accumulated": [], "per_block": []}
        finals, secs, msecs = [], 0.0, {}
        daam = None
        if meth in DAAM_METHODS:
            opts = dict(daam_options or {})
            if meth != "grad":
                for key in GRAD_ONLY_OPTIONS:
                    opts.pop(key, None)
            daam = DAAM(model, method=meth, **opts)
        gen = torch.Generator().manual_seed(cfg.seed)               # "random": one stream over all images
        bar = tqdm(total=n, desc=f"{meth:>12}", unit="img", disable=not progress, leave=True)

        calls = [0]

        def maps_of(m, xx, tt, meth=meth, daam=daam):       # the method's explainer for the trust metrics
            calls[0] += 1                                    # "random": new noise at every call
            g = torch.Generator().manual_seed(cfg.seed + 7919 * calls[0])
            return explain(m, xx, meth, tt, cfg, daam=daam if m is model else None, generator=g).final.detach()
        with contextlib.ExitStack() as stack:
            stack.callback(bar.close)
            if daam is not None:
                stack.enter_context(daam)
            for s in range(0, n, cfg.batch_size):
                x, t = images[s:s + cfg.batch_size], targets[s:s + cfg.batch_size]
                t0 = time.perf_counter()
                res = explain(model, x, meth, t, cfg, daam=daam, generator=gen)
                secs += time.perf_counter() - t0
                sal = res.final.detach()
                if "faithfulness" in groups:
                    t1 = time.perf_counter()
                    kw = dict(steps=cfg.steps, order=cfg.order, baseline=cfg.baseline, batch_size=cfg.perturb_batch)
                    d = M.deletion(score_fn, x, sal, t, **kw)
                    i = M.insertion(score_fn, x, sal, t, **kw)
                    cc = M.confidence_change(score_fn, x, sal, t, baseline=cfg.drop_baseline)
                    out["fractions"] = d.fractions.cpu()
                    per["deletion"].append(d.auc)
                    per["insertion"].append(i.auc)
                    per["avg_drop"].append(cc.drop)
                    per["increase"].append(cc.increase.float())
                    curves["deletion"].append(d.curve)
                    curves["insertion"].append(i.curve)
                    msecs["faithfulness"] = msecs.get("faithfulness", 0.0) + time.perf_counter() - t1
                batch_metrics(groups, model, maps_of, score_fn, x, t, sal, cfg, per, msecs, input_norm,
                              seed=cfg.seed + s)
                if masks is not None and "localisation" in groups:
                    t1 = time.perf_counter()
                    mk = masks[s:s + cfg.batch_size]
                    per["pointing"].append(M.pointing_game(sal, mk, tolerance=cfg.tolerance))
                    per["energy"].append(M.energy_pointing_game(sal, mk))
                    if res.maps.shape[1] > 1:
                        blocks["accumulated"].append(M.energy_pointing_game(res.maps, mk))
                        blocks["per_block"].append(M.energy_pointing_game(res.block_maps, mk))
                    msecs["localisation"] = msecs.get("localisation", 0.0) + time.perf_counter() - t1
                finals.append(sal)
                bar.update(x.shape[0])
        out["per_image"][meth] = {k: torch.cat(v).float().cpu() for k, v in per.items() if v}
        fin = torch.cat(finals).float()

        def fresh(m, xx, tt, meth=meth):                    # no shared DAAM: the model may be a randomised copy
            calls[0] += 1
            g = torch.Generator().manual_seed(cfg.seed + 7919 * calls[0])
            return explain(m, xx, meth, tt, cfg, generator=g).final.detach()
        out["trust"][meth] = dataset_metrics(groups, model, fresh, images, targets, fin, masks, cfg,
                                             out["per_image"][meth], msecs)
        out["curves"][meth] = {k: torch.cat(v).float().cpu() for k, v in curves.items() if v}
        if blocks["accumulated"]:
            out["blocks"][meth] = {k: torch.cat(v).float().cpu() for k, v in blocks.items()}
        out["final"][meth] = fin.cpu()
        out["seconds"][meth] = secs
        out["metric_seconds"][meth] = msecs
    return out
