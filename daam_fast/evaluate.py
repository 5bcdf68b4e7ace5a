"""``daam-fast eval``: DAAM and the baselines on the same images, faithfulness and localisation.

Every method explains the same images for the same target class (each image's prediction,
or its label with ``--target label``); each final map is scored with the metrics of
:mod:`daam_fast.metrics`: deletion and insertion AUC, average drop, increase in confidence,
and, where masks exist, the pointing game and the energy pointing game. The output is a
Markdown table (metric x method, mean +- standard error over images), ``results.json``, and
one figure: the mean deletion / insertion curves and the per-block energy pointing game of
the methods that give one map per block (DAAM's D_b and L_b: how localisation forms through
the blocks). With both "daam" and "direct", the report also says how closely the forward-only
"direct" maps follow the exact "grad" ones.

Example:
    daam-fast eval --model shapes_vit --data shapes --num-images 500 --out eval_out/
    daam-fast eval --model deit_small_patch16_224 --checkpoint w.pth --data photos/ --masks masks/ --out e/
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import baselines as _baselines
from . import metrics as M
from .result import DAAMResult

__all__ = ["METHODS", "EvalConfig", "explain", "evaluate", "summarize", "spearman", "write_report", "add_cli"]

METHODS = ("daam", "direct", "rollout", "grad_rollout", "attention", "gradcam", "random")
DEFAULT_METHODS = ("daam", "direct", "rollout", "grad_rollout", "attention", "gradcam")
LABELS = {"daam": "DAAM (grad)", "direct": "DAAM direct", "rollout": "rollout", "grad_rollout": "grad rollout",
          "attention": "attention", "gradcam": "Grad-CAM", "random": "random"}
# key, row label, scale for the table, whether it needs masks
ROWS = (
    ("deletion", "Deletion AUC (lower is better)", 1.0, False),
    ("insertion", "Insertion AUC (higher is better)", 1.0, False),
    ("avg_drop", "Average drop % (lower is better)", 100.0, False),
    ("increase", "Increase in confidence % (higher is better)", 100.0, False),
    ("pointing", "Pointing game % (higher is better)", 100.0, True),
    ("energy", "Energy pointing game (higher is better)", 1.0, True),
)


@dataclass
class EvalConfig:
    """Options of one evaluation (every method gets the same).

    Attributes:
        steps: deletion / insertion steps.  order: "pixel" or "patch".
        baseline: what deleted (or not yet inserted) pixels become: "blur", "mean", "zero".
        drop_baseline: the baseline of average drop / increase ("zero": x' = E x).
        batch_size: images explained per call.  perturb_batch: perturbed images per forward.
        tolerance: pointing-game tolerance in pixels.
        rollout_discard, rollout_fusion: rollout options.  seed: the "random" method's seed.
    """

    steps: int = 16
    order: str = "pixel"
    baseline: str = "blur"
    drop_baseline: str = "zero"
    batch_size: int = 16
    perturb_batch: int = 256
    tolerance: float = 0.0
    rollout_discard: float = 0.9
    rollout_fusion: str = "mean"
    seed: int = 0


def explain(model: nn.Module, images: Tensor, method: str, target=None, config: Optional[EvalConfig] = None,
            daam=None, generator: Optional[torch.Generator] = None) -> DAAMResult:
    """One method's explanation of a batch, as a DAAMResult.

    Args:
        model: a timm ViT with a classifier head.
        images: (B, C, H, W) normalised model input.
        method: one of :data:`METHODS` ("daam" is DAAM with method="grad").
        target: None, int or (B,) classes.
        config: rollout options and the seed of "random".
        daam: an entered :class:`daam_fast.DAAM` to reuse for "daam" / "direct" (optional).
        generator: CPU generator of the "random" maps (default: one seeded with ``config.seed``).

    Returns:
        DAAMResult with maps (B, L, h, w).
    """
    from .explainer import DAAM
    cfg = config or EvalConfig()
    if method in ("daam", "direct"):
        if daam is not None:
            return daam(images, target=target)
        return DAAM(model, method="grad" if method == "daam" else "direct")(images, target=target)
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
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row, ties given their average rank.

    rho = Pearson(rank(a), rank(b)); a constant row gives NaN.

    Args:
        a, b: (B, M) (or (B, ...), flattened per row).

    Returns:
        (B,) float32.
    """
    a, b = a.reshape(a.shape[0], -1).float(), b.reshape(b.shape[0], -1).float()

    def ranks(x: Tensor) -> Tensor:
        B, Mn = x.shape
        v, idx = x.sort(dim=1)
        new = torch.ones_like(v, dtype=torch.bool)
        new[:, 1:] = v[:, 1:] != v[:, :-1]
        gid = new.long().cumsum(dim=1) - 1 + torch.arange(B, device=x.device)[:, None] * Mn   # group ids, unique per row
        pos = torch.arange(Mn, device=x.device, dtype=torch.float32).expand(B, Mn)
        tot = torch.zeros(B * Mn, device=x.device).index_add_(0, gid.flatten(), pos.flatten())
        cnt = torch.zeros(B * Mn, device=x.device).index_add_(0, gid.flatten(), torch.ones(B * Mn, device=x.device))
        avg = (tot / cnt.clamp_min(1))[gid]
        out = torch.empty_like(avg)
        out.scatter_(1, idx, avg)
        return out

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    den = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    return torch.where(den > 0, (ra * rb).sum(1) / den.clamp_min(1e-30), torch.full_like(den, float("nan")))


@torch.no_grad()
def _predict(model, images: Tensor, batch_size: int) -> Tensor:
    outs = []
    for s in range(0, images.shape[0], batch_size):
        o = model(images[s:s + batch_size])
        outs.append((o[0] if isinstance(o, tuple) else o).float())
    return torch.cat(outs)


def evaluate(model: nn.Module, images: Tensor, masks: Optional[Tensor] = None, methods: Sequence[str] = DEFAULT_METHODS,
             targets: Optional[Tensor] = None, config: Optional[EvalConfig] = None, progress: bool = True,
             daam_options: Optional[dict] = None) -> dict:
    """Explain ``images`` with every method and score every final map.

    Args:
        model: a timm ViT with a classifier head (eval mode).
        images: (n, C, H, W) normalised model input (on the model's device).
        masks: (n, H, W) bool object masks, or None (no pointing games).
        methods: names from :data:`METHODS`.
        targets: (n,) classes to explain, or None for each image's prediction.
        config: :class:`EvalConfig`.
        progress: tqdm progress bars.
        daam_options: extra :class:`daam_fast.DAAM` keywords for "daam" / "direct" (``compile``;
            ``checkpoint`` for "daam" only). They change the cost, not the maps.

    Returns:
        dict with "per_image" {method: {metric: (n,) tensor}}, "curves" {method: {"deletion",
        "insertion": (n, steps + 1)}}, "fractions" (steps + 1,), "blocks" {method: {"accumulated",
        "per_block": (n, L) energy pointing game per block}} for methods with L > 1,
        "final" {method: (n, h, w)} for "daam" / "direct", "seconds" {method: explain time},
        "targets", "predictions", "config", "methods".
    """
    from tqdm import tqdm
    from .explainer import DAAM
    from ._model import inspect_vit
    cfg = config or EvalConfig()
    methods = list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {', '.join(bad)}; expected from {', '.join(METHODS)}")
    if not methods:
        raise ValueError("no methods to evaluate")
    adapter = inspect_vit(model)
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
           "targets": targets, "predictions": preds, "config": asdict(cfg), "methods": methods, "n": n}

    score_fn = adapter.run                                  # logits (B, K) for every model family

    for meth in methods:
        per: Dict[str, List[Tensor]] = {k: [] for k, *_ in ROWS}
        curves: Dict[str, List[Tensor]] = {"deletion": [], "insertion": []}
        blocks: Dict[str, List[Tensor]] = {"accumulated": [], "per_block": []}
        finals, secs = [], 0.0
        opts = dict(daam_options or {})
        if meth == "direct":
            opts.pop("checkpoint", None)                            # a grad-only option
        daam = DAAM(model, method="grad" if meth == "daam" else "direct", **opts) if meth in ("daam", "direct") else None
        gen = torch.Generator().manual_seed(cfg.seed)               # "random": one stream over all images
        bar = tqdm(total=n, desc=f"{meth:>12}", unit="img", disable=not progress, leave=True)
        try:
            if daam is not None:
                daam.__enter__()
            for s in range(0, n, cfg.batch_size):
                x, t = images[s:s + cfg.batch_size], targets[s:s + cfg.batch_size]
                t0 = time.perf_counter()
                res = explain(model, x, meth, t, cfg, daam=daam, generator=gen)
                secs += time.perf_counter() - t0
                sal = res.final.detach()
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
                if masks is not None:
                    mk = masks[s:s + cfg.batch_size]
                    per["pointing"].append(M.pointing_game(sal, mk, tolerance=cfg.tolerance))
                    per["energy"].append(M.energy_pointing_game(sal, mk))
                    if res.maps.shape[1] > 1:
                        blocks["accumulated"].append(M.energy_pointing_game(res.maps, mk))
                        blocks["per_block"].append(M.energy_pointing_game(res.block_maps, mk))
                if meth in ("daam", "direct"):
                    finals.append(sal)
                bar.update(x.shape[0])
        finally:
            if daam is not None:
                daam.__exit__(None, None, None)
            bar.close()
        out["per_image"][meth] = {k: torch.cat(v).float().cpu() for k, v in per.items() if v}
        out["curves"][meth] = {k: torch.cat(v).float().cpu() for k, v in curves.items()}
        if blocks["accumulated"]:
            out["blocks"][meth] = {k: torch.cat(v).float().cpu() for k, v in blocks.items()}
        if finals:
            out["final"][meth] = torch.cat(finals).float().cpu()
        out["seconds"][meth] = secs
    return out


def _mean_se(v: Tensor) -> Tuple[float, float, int]:
    v = v[~torch.isnan(v)].double()
    k = v.numel()
    if k == 0:
        return float("nan"), float("nan"), 0
    se = float(v.std(unbiased=True) / math.sqrt(k)) if k > 1 else float("nan")
    return float(v.mean()), se, k


def summarize(results: dict) -> dict:
    """Means and standard errors: {metric: {method: (mean, se, count)}} plus "direct_vs_grad" and timings."""
    table: Dict[str, Dict[str, Tuple[float, float, int]]] = {}
    for key, _label, scale, _ in ROWS:
        for meth in results["methods"]:
            v = results["per_image"][meth].get(key)
            if v is None:
                continue
            m, se, k = _mean_se(v * scale)
            table.setdefault(key, {})[meth] = (m, se, k)
    summary = {"table": table, "ms_per_image": {m: 1000 * s / results["n"] for m, s in results["seconds"].items()}}
    if "daam" in results["final"] and "direct" in results["final"]:
        g, d = results["final"]["daam"], results["final"]["direct"]
        rho = spearman(d, g)
        same = (g.flatten(1).argmax(1) == d.flatten(1).argmax(1)).float()
        q = torch.nanquantile(rho.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
        summary["direct_vs_grad"] = {"spearman": _mean_se(rho), "spearman_quartiles": q,
                                     "same_argmax_patch_pct": _mean_se(100 * same)}
    return summary


def _fmt(m: float, se: float, digits: int) -> str:
    if math.isnan(m):
        return "n/a"
    return f"{m:.{digits}f} ± {se:.{digits}f}" if not math.isnan(se) else f"{m:.{digits}f}"


def _table_md(results: dict, summary: dict) -> str:
    methods = results["methods"]
    head = "| metric | " + " | ".join(LABELS[m] for m in methods) + " |"
    sep = "|---|" + "---:|" * len(methods)
    lines = [head, sep]
    for key, label, scale, _ in ROWS:
        row = summary["table"].get(key)
        if row is None:
            continue
        digits = 1 if scale == 100.0 else 3
        lines.append(f"| {label} | " + " | ".join(_fmt(*row[m][:2], digits) if m in row else "n/a"
                                                  for m in methods) + " |")
    lines.append("| explain time, ms / image (info) | " + " | ".join(
        f"{summary['ms_per_image'][m]:.1f}" for m in methods) + " |")
    return "\n".join(lines)


def _figure(results: dict, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = results["methods"]
    has_blocks = bool(results["blocks"])
    ncols = 3 if has_blocks else 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.6 * ncols, 3.9))
    x = results["fractions"].numpy()
    colors = {m: c for m, c in zip(METHODS, ["C3", "C1", "C0", "C2", "C4", "C5", "0.6"])}
    for ax, kind in zip(axes[:2], ("deletion", "insertion")):
        for m in methods:
            c = results["curves"][m][kind]
            aucs = results["per_image"][m][kind]
            ax.plot(x, c.mean(0).numpy(), color=colors[m], lw=2 if m in ("daam", "direct") else 1.3,
                    ls="--" if m == "direct" else "-", label=f"{LABELS[m]} ({aucs.mean():.3f})")
        ax.set_xlabel(f"fraction of {results['config']['order']}s {'removed' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel("target probability (mean)")
        ax.set_title(f"{kind.capitalize()} ({'lower' if kind == 'deletion' else 'higher'} AUC is better)", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="method (AUC)", title_fontsize=7)
    if has_blocks:
        ax = axes[2]
        for m, blk in results["blocks"].items():
            L = blk["accumulated"].shape[1]
            b = range(1, L + 1)
            for key, ls, lab in (("accumulated", "-", "D_b (accumulated)" if m in ("daam", "direct") else "through b"),
                                 ("per_block", ":", "L_b (block alone)" if m in ("daam", "direct") else "block alone")):
                if key == "per_block" and m not in ("daam",):
                    continue
                v = blk[key]
                mean = torch.nanmean(v, 0).numpy()
                se = (torch.stack([torch.tensor(_mean_se(v[:, j])[1]) for j in range(L)])).numpy()
                ax.plot(b, mean, ls=ls, marker="o", ms=3, color=colors[m], lw=2 if m in ("daam", "direct") else 1.2,
                        label=f"{LABELS[m]}: {lab}")
                ax.fill_between(b, mean - se, mean + se, color=colors[m], alpha=0.15)
        chance = results.get("chance_energy")
        if chance is not None:
            ax.axhline(chance, color="k", lw=0.8, ls="--", label=f"uniform map (mask area) {chance:.3f}")
        ax.set_xlabel("block b")
        ax.set_ylabel("energy pointing game (mean ± s.e.)")
        ax.set_title("How localisation forms through the blocks", fontsize=10)
        ax.set_xticks(list(range(1, L + 1)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


OUTPUT_FILES = ("results.md", "results.json", "eval.png", "per_image.csv")


def write_report(results: dict, out: str, meta: dict, per_image: bool = False) -> dict:
    """Write ``results.md`` (table + notes), ``results.json`` (aggregates, mean curves), ``eval.png``
    and, with ``per_image``, ``per_image.csv`` into ``out``. Returns the summary."""
    os.makedirs(out, exist_ok=True)
    summary = summarize(results)
    methods = results["methods"]
    n = results["n"]
    acc = meta.get("accuracy")
    cfg = results["config"]
    title = (f"{meta.get('model', 'model')} on {n} images of {meta.get('data', 'data')} "
             f"({cfg['steps']} {cfg['order']} steps, {cfg['baseline']} baseline)")
    _figure(results, os.path.join(out, "eval.png"), title)
    md = [f"# Evaluation: {meta.get('model', 'model')} on {n} images of {meta.get('data', 'data')}", ""]
    if meta.get("command"):
        md += ["```", meta["command"], "```", ""]
    md += [f"Explained class: {meta.get('target', 'prediction')}. "
           + (f"Model accuracy on these images: {100 * acc:.1f} %. " if acc is not None else "")
           + f"Mean ± standard error over images; deletion / insertion: {cfg['steps']} steps in {cfg['order']} order, "
           f"perturbed pixels replaced by the '{cfg['baseline']}' baseline, score = softmax probability of the "
           f"target; average drop / increase: x' = E x + (1 - E) '{cfg['drop_baseline']}' with E the min-max "
           f"normalised map; pointing games against the object masks (tolerance {cfg['tolerance']:g} px). "
           f"Rollout: discard ratio {cfg['rollout_discard']:g}, head fusion '{cfg['rollout_fusion']}'.", ""]
    md += [_table_md(results, summary), ""]
    if results.get("chance_energy") is not None:
        md += [f"Chance level: a uniform map scores the mean mask area, {results['chance_energy']:.3f}, in the energy "
               f"pointing game; a random point hits with about that probability ({100 * results['chance_energy']:.1f} %).", ""]
    dvg = summary.get("direct_vs_grad")
    if dvg:
        (rm, rse, _), q = dvg["spearman"], dvg["spearman_quartiles"]
        sm, sse, _ = dvg["same_argmax_patch_pct"]
        md += ["## direct vs grad", "",
               f"Spearman rank correlation between the final maps of `direct` and `grad`, per image: "
               f"{rm:.3f} ± {rse:.3f} (quartiles {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}); the two maps put their "
               f"maximum on the same patch in {sm:.1f} ± {sse:.1f} % of the images. The table compares the metrics "
               f"of both side by side.", ""]
    if results["blocks"]:
        lines = ["## Localisation through the blocks (energy pointing game per block, mean)", "",
                 "| method | " + " | ".join(f"b={b + 1}" for b in range(max(v['accumulated'].shape[1]
                                                                            for v in results['blocks'].values()))) + " |",
                 "|---|" + "---:|" * max(v["accumulated"].shape[1] for v in results["blocks"].values())]
        for m, blk in results["blocks"].items():
            acc_row = torch.nanmean(blk["accumulated"], 0).tolist()
            lines.append(f"| {LABELS[m]} (accumulated / through b) | " + " | ".join(f"{v:.3f}" for v in acc_row) + " |")
            if m in ("daam", "direct"):
                per_row = torch.nanmean(blk["per_block"], 0).tolist()
                lines.append(f"| {LABELS[m]} L_b (block alone) | " + " | ".join(f"{v:.3f}" for v in per_row) + " |")
        md += lines + [""]
    md += ["![deletion and insertion curves, per-block energy pointing game](eval.png)", ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md))
    js = {"meta": meta, "config": cfg, "n": n, "methods": methods,
          "table": {k: {m: {"mean": v[0], "se": v[1], "count": v[2]} for m, v in row.items()}
                    for k, row in summary["table"].items()},
          "ms_per_image": summary["ms_per_image"],
          "fractions": results["fractions"].tolist(),
          "mean_curves": {m: {k: c.mean(0).tolist() for k, c in cs.items()} for m, cs in results["curves"].items()},
          "blocks": {m: {k: torch.nanmean(v, 0).tolist() for k, v in b.items()} for m, b in results["blocks"].items()},
          "chance_energy": results.get("chance_energy")}
    if dvg:
        js["direct_vs_grad"] = dvg
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(js, f, indent=1, allow_nan=True)
    if per_image:
        keys = [k for k, *_ in ROWS]
        with open(os.path.join(out, "per_image.csv"), "w") as f:
            f.write("image,target,prediction,method," + ",".join(keys) + "\n")
            for m in methods:
                cols = [results["per_image"][m].get(k) for k in keys]
                for i in range(n):
                    vals = ["" if c is None else f"{float(c[i]):.6g}" for c in cols]
                    f.write(f"{i},{int(results['targets'][i])},{int(results['predictions'][i])},{m}," + ",".join(vals) + "\n")
    return summary


# ---------------------------------------------------------------------------------- data
def _load_dir(data: str, masks_dir: Optional[str], spec, num: Optional[int], device):
    from .io import ImageReadError, expand_inputs, read_image
    from .preprocess import prepare
    paths, problems = expand_inputs([data])
    paths = [p for p in paths if not os.path.splitext(os.path.basename(p))[0].endswith("_mask")]
    if num:
        paths = paths[:num]
    pics, masks, used, failed = [], [], [], list(problems)
    mask_index = {}
    if masks_dir is not None:
        mpaths, mprob = expand_inputs([masks_dir])
        failed += mprob
        for mp in mpaths:
            stem = os.path.splitext(os.path.basename(mp))[0]
            mask_index[stem[:-5] if stem.endswith("_mask") else stem] = mp
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        try:
            pic = read_image(p, max_side=4 * max(spec.size))
            mk = None
            if masks_dir is not None:
                if stem not in mask_index:
                    raise ImageReadError(f"no mask {stem}.png or {stem}_mask.png in {masks_dir}")
                m = read_image(mask_index[stem]).amax(dim=0)
                if tuple(m.shape) != tuple(pic.shape[-2:]):
                    raise ImageReadError(f"mask {mask_index[stem]} is {tuple(m.shape)}, the image {tuple(pic.shape[-2:])}")
                mk = torch.nn.functional.interpolate((m > 127).float()[None, None], size=spec.size, mode="nearest")[0, 0] > 0.5
        except ImageReadError as e:
            failed.append((p, str(e)))
            continue
        pics.append(pic)
        masks.append(mk)
        used.append(p)
    if not pics:
        return None, None, used, failed
    x, _ = prepare(pics, spec, device=device)
    return x, (torch.stack(masks).to(device) if masks_dir is not None else None), used, failed


def _command_line(args, n: int) -> str:
    """The command that reproduces this run (every option that matters spelt out)."""
    parts = ["daam-fast eval"]
    if args.model:
        parts.append(f"--model {args.model}")
    if args.checkpoint:
        parts.append(f"--checkpoint {args.checkpoint}")
    parts.append(f"--data {args.data}")
    if args.masks:
        parts.append(f"--masks {args.masks}")
    parts += [f"--num-images {n}", f"--seed {args.seed}", f"--methods {args.methods}", f"--target {args.target}",
              f"--steps {args.steps}", f"--order {args.order}", f"--baseline {args.baseline}",
              f"--drop-baseline {args.drop_baseline}", f"--tolerance {args.tolerance:g}",
              f"--rollout-discard {args.rollout_discard:g}", f"--rollout-fusion {args.rollout_fusion}",
              f"--batch-size {args.batch_size}"]
    if args.threads:
        parts.append(f"--threads {args.threads}")
    parts.append(f"--out {args.out}")
    return " ".join(parts)


def _cmd_eval(args) -> int:
    threads = torch.get_num_threads()
    try:
        return _run_eval(args)
    finally:
        torch.set_num_threads(threads)          # --threads applies to this command only


def _run_eval(args) -> int:
    from .cli import daam_options, model_from_args
    from .models import ModelLoadError
    from .preprocess import input_spec, prepare
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        print(f"daam-fast eval: unknown method(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(METHODS)}",
              file=sys.stderr)
        return 2
    if args.num_images is not None and args.num_images < 1:
        print("daam-fast eval: --num-images must be >= 1", file=sys.stderr)
        return 2
    existing = [f for f in OUTPUT_FILES if os.path.exists(os.path.join(args.out, f))]
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"daam-fast eval: --out {args.out} exists and is not a directory", file=sys.stderr)
        return 2
    if existing and not args.overwrite:
        print(f"daam-fast eval: {args.out} already holds {', '.join(existing)}: pass --overwrite to replace them",
              file=sys.stderr)
        return 2
    try:
        model = model_from_args(args)
    except (ModelLoadError, ValueError, FileNotFoundError) as e:
        print(f"daam-fast eval: {e}", file=sys.stderr)
        return 2
    from ._model import inspect_vit
    try:
        headless = inspect_vit(model).num_classes == 0
    except ValueError as e:
        print(f"daam-fast eval: {e}", file=sys.stderr)
        return 2
    if headless:
        print("daam-fast eval: the model has no classifier head; deletion / insertion need a class score", file=sys.stderr)
        return 2
    spec = input_spec(model)
    device = next(model.parameters()).device
    labels, failed = None, []
    if args.data == "shapes":
        from .zoo.shapes import make_shapes
        n = args.num_images or 500
        batch = make_shapes(n, seed=args.seed, size=spec.size[0]) if spec.size[0] == spec.size[1] else None
        if batch is None:
            print("daam-fast eval: --data shapes needs a square model input", file=sys.stderr)
            return 2
        x, _ = prepare(batch.images, spec, device=device)
        masks, labels = batch.masks.to(device), batch.labels.to(device)
        data_name = f"the shapes dataset (seed {args.seed})"
    else:
        if not os.path.isdir(args.data):
            print(f"daam-fast eval: --data must be 'shapes' or a directory, got {args.data}", file=sys.stderr)
            return 2
        x, masks, used, failed = _load_dir(args.data, args.masks, spec, args.num_images, device)
        for p, r in failed:
            print(f"skipped: {p}: {r}", file=sys.stderr)
        if x is None:
            print("daam-fast eval: no usable image", file=sys.stderr)
            return 2
        data_name = args.data
    if args.target == "label" and labels is None:
        print("daam-fast eval: --target label needs labelled data (--data shapes)", file=sys.stderr)
        return 2
    cfg = EvalConfig(steps=args.steps, order=args.order, baseline=args.baseline, drop_baseline=args.drop_baseline,
                     batch_size=args.batch_size, perturb_batch=args.perturb_batch, tolerance=args.tolerance,
                     rollout_discard=args.rollout_discard, rollout_fusion=args.rollout_fusion, seed=args.seed)
    t0 = time.time()
    try:
        res = evaluate(model, x, masks, methods, targets=labels if args.target == "label" else None, config=cfg,
                       progress=not args.quiet, daam_options=daam_options(args))
    except ValueError as e:
        print(f"daam-fast eval: {e}", file=sys.stderr)
        return 2
    if masks is not None:
        res["chance_energy"] = float(masks.float().mean())
    acc = float((res["predictions"] == labels).float().mean()) if labels is not None else None
    meta = {"model": getattr(model, "daam_name", None) or args.model or "model", "data": data_name,
            "target": "the label" if args.target == "label" else "each image's prediction", "accuracy": acc,
            "command": _command_line(args, res["n"]), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "seconds": round(time.time() - t0, 1)}
    summary = write_report(res, args.out, meta, per_image=args.per_image)
    if not args.quiet:
        print(_table_md(res, summary))
    print(f"evaluated {len(methods)} methods on {res['n']} images ({time.time() - t0:.0f} s) -> "
          f"{os.path.join(args.out, 'results.md')}, {os.path.join(args.out, 'eval.png')}")
    return 1 if failed else 0


def add_cli(subparsers) -> None:
    """Register ``daam-fast eval`` on the CLI's sub-command parsers (called by :mod:`daam_fast.cli`)."""
    from .cli import add_model_args
    p = subparsers.add_parser("eval", help="compare DAAM with baselines: deletion/insertion, drop, pointing games",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", default="shapes", help="'shapes' (generated, with masks and labels) or a directory of images")
    p.add_argument("--masks", default=None, help="directory of masks <stem>.png or <stem>_mask.png (for --data DIR)")
    p.add_argument("--num-images", type=int, default=None, help="images to use (shapes: default 500; DIR: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shapes data and of the 'random' method")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated from {', '.join(METHODS)}")
    p.add_argument("--target", default="pred", choices=["pred", "label"], help="explain the prediction or the label")
    p.add_argument("--steps", type=int, default=16, help="deletion / insertion steps")
    p.add_argument("--order", default="pixel", choices=list(M.ORDERS))
    p.add_argument("--baseline", default="blur", choices=list(M.BASELINES), help="deletion / insertion baseline")
    p.add_argument("--drop-baseline", default="zero", choices=list(M.BASELINES), help="average drop baseline")
    p.add_argument("--tolerance", type=float, default=0.0, help="pointing game tolerance (pixels)")
    p.add_argument("--rollout-discard", type=float, default=0.9)
    p.add_argument("--rollout-fusion", default="mean", choices=list(_baselines.HEAD_FUSIONS))
    p.add_argument("--perturb-batch", type=int, default=256, help="perturbed images per forward pass")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--out", required=True, help="output directory (results.md, results.json, eval.png)")
    p.add_argument("--per-image", action="store_true", help="also write per_image.csv")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_eval)
