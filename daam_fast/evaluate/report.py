"""The report of an evaluation: the Markdown table, ``results.md``, ``results.json``, ``eval.png``
and ``per_image.csv``."""
from __future__ import annotations

import json
import math
import os

import torch

from .._extras import require
from .config import DAAM_METHODS, LABELS, METHODS, ROWS
from .statistics import _mean_se, summarize

__all__ = ["write_report", "table_markdown"]

# a fixed colour per method of the figure; methods added later take the next free one
_COLORS = {"grad": "C3", "direct": "C1", "rollout": "C0", "grad_rollout": "C2", "attention": "C4", "gradcam": "C5",
           "random": "0.6"}
_SPARE = ("C6", "C7", "C8", "C9", "k")


def _colors() -> dict:
    spare = iter(_SPARE * (1 + len(METHODS) // len(_SPARE)))
    return {m: _COLORS.get(m) or next(spare) for m in METHODS}


def _fmt(m: float, se: float, digits: int) -> str:
    if math.isnan(m):
        return "n/a"
    return f"{m:.{digits}f} ± {se:.{digits}f}" if not math.isnan(se) else f"{m:.{digits}f}"


def table_markdown(results: dict, summary: dict) -> str:
    """The results table in Markdown: one row per metric of :data:`ROWS` that was measured, one
    column per method, each cell "mean ± standard error" (``results`` of :func:`evaluate`,
    ``summary`` of :func:`summarize`)."""
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


def _cost_md(results: dict, summary: dict) -> str:
    """ms per image of each metric group (the explain call of the group's own perturbed inputs included)."""
    methods = results["methods"]
    cost = summary.get("metric_ms_per_image", {})
    groups = [g for g in results.get("groups", ()) if any(g in cost.get(m, {}) for m in methods)]
    if not groups:
        return ""
    lines = ["| metric group, ms / image | " + " | ".join(LABELS[m] for m in methods) + " |",
             "|---|" + "---:|" * len(methods)]
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(f"{cost[m][g]:.1f}" if g in cost.get(m, {}) else "n/a"
                                             for m in methods) + " |")
    return "\n".join(lines)


def _randomisation_figure(results: dict, path: str, title: str) -> bool:
    """Cascading randomisation curves (Spearman, SSIM, top-k per step) and the independent test per layer."""
    rnd = {m: t["randomisation"] for m, t in results.get("trust", {}).items() if "randomisation" in t}
    if not rnd:
        return False
    fig = require("matplotlib.figure", "the evaluation report").Figure(figsize=(19, 4.2))   # no pyplot state
    axes = fig.subplots(1, 4)
    colors = _colors()
    names = {"spearman": "Spearman rank correlation", "ssim": "SSIM", "topk": "top-k intersection"}
    for ax, sim in zip(axes[:3], ("spearman", "ssim", "topk")):
        for m, r in rnd.items():
            if sim not in r["cascading"]:
                continue
            y = r["cascading"][sim]
            ax.plot(range(len(y)), y, marker="o", ms=3, color=colors[m], lw=2 if m in DAAM_METHODS else 1.2,
                    ls="--" if m in DAAM_METHODS and m != "grad" else "-", label=LABELS[m])
            steps = r["steps"]
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels([st.replace("block ", "b") for st in steps], rotation=45, fontsize=7)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("cascading randomisation: layers re-drawn, from the output down")
        ax.set_ylabel(f"{names[sim]} to the original map (mean)")
        ax.set_title(f"Cascading: {names[sim]} (lower = passes)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[3]
    for m, r in rnd.items():
        y = r["independent"].get("spearman")
        if y:
            ax.plot(range(len(y)), y, marker="s", ms=3, color=colors[m], lw=1.2, label=LABELS[m])
            layers = r["layers"]
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([st.replace("block ", "b") for st in layers], rotation=45, fontsize=7)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("independent randomisation: this layer alone re-drawn")
    ax.set_ylabel("Spearman to the original map (mean)")
    ax.set_title("Independent: one layer at a time", fontsize=10)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def _figure(results: dict, path: str, title: str) -> None:
    Figure = require("matplotlib.figure", "the evaluation report").Figure
    methods = results["methods"]
    has_blocks = bool(results["blocks"])
    kinds = ("deletion", "insertion") if results.get("fractions") is not None else ()
    ncols = len(kinds) + has_blocks
    if not ncols:
        return
    fig = Figure(figsize=(4.6 * ncols, 3.9))
    axes = fig.subplots(1, ncols, squeeze=False)
    axes = axes[0]
    x = results["fractions"].numpy() if kinds else None
    colors = _colors()
    for ax, kind in zip(axes[:len(kinds)], kinds):
        for m in methods:
            c = results["curves"][m][kind]
            aucs = results["per_image"][m][kind]
            ax.plot(x, c.mean(0).numpy(), color=colors[m], lw=2 if m in DAAM_METHODS else 1.3,
                    ls="--" if m in DAAM_METHODS and m != "grad" else "-", label=f"{LABELS[m]} ({aucs.mean():.3f})")
        ax.set_xlabel(f"fraction of {results['config']['order']}s {'removed' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel("target probability (mean)")
        ax.set_title(f"{kind.capitalize()} ({'lower' if kind == 'deletion' else 'higher'} AUC is better)", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="method (AUC)", title_fontsize=7)
    if has_blocks:
        ax = axes[len(kinds)]
        for m, blk in results["blocks"].items():
            L = blk["accumulated"].shape[1]
            b = range(1, L + 1)
            for key, ls, lab in (("accumulated", "-", "D_b (accumulated)" if m in DAAM_METHODS else "through b"),
                                 ("per_block", ":", "L_b (block alone)" if m in DAAM_METHODS else "block alone")):
                if key == "per_block" and m != "grad":
                    continue
                v = blk[key]
                mean = torch.nanmean(v, 0).numpy()
                se = (torch.stack([torch.tensor(_mean_se(v[:, j])[1]) for j in range(L)])).numpy()
                ax.plot(b, mean, ls=ls, marker="o", ms=3, color=colors[m], lw=2 if m in DAAM_METHODS else 1.2,
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



def _trust_notes(results: dict, cfg: dict) -> list:
    """How the trust rows of the table were computed (only for the groups that ran)."""
    g = results.get("groups", ())
    out = []
    if "boxes" in g and any("max_box_acc" in t for t in results.get("trust", {}).values()):
        out.append(f"MaxBoxAccV2 (Choe et al. 2020): each map upsampled to the image, min-max normalised, "
                   f"thresholded at {cfg['box_thresholds']} levels in [0, 1); the box of the largest 8-connected "
                   "component against the object's box; for each IoU level 0.3 / 0.5 / 0.7 the best threshold over "
                   "all images, then the mean of the three (per-image hits at those thresholds give the ± s.e.). "
                   "PxAP: precision-recall over all pixels of all images (pooled, no s.e.).")
    if "randomisation" in g:
        out.append("Randomisation (Adebayo et al. 2018): one copy of the model, its layers re-drawn in place from "
                   "the head down to the embedding (each tensor from a Gaussian with its own mean and std); the maps "
                   "of the fully random model against the original maps (Spearman on the patch grid, SSIM on maps "
                   f"upsampled to the image, top-{100 * cfg['topk']:g}% cells); near 1 = the map does not depend on "
                   "the weights (fails). 'One layer random': each layer alone re-drawn, mean over layers. The "
                   "'random' method draws new noise at every step, so it passes trivially: the test is a necessary "
                   "condition, not a sufficient one.")
    if "robustness" in g:
        out.append(f"Robustness: {cfg['noise_samples']} Gaussian noise samples per image (std {cfg['noise_sigma']:g} "
                   "in model-input units); maps divided by their maximum; max-sensitivity = max ||e(x+d) - e(x)|| / "
                   "||e(x)||, local Lipschitz = max ||e(x+d) - e(x)|| / ||d||. Stability: Spearman between the map "
                   "and the maps of 4 copies (brightness -0.1 / +0.1, contrast 0.8 / 1.2) that keep the prediction.")
    if "complexity" in g:
        out.append("Sparseness: Gini index of |map| over the patch grid (1 - 1/M for one cell, 0 for a flat map); "
                   "complexity: entropy of |map| / sum |map| (0 for one cell, ln M for a flat map).")
    return [p for o in out for p in (o, "")]


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
    has_rnd = _randomisation_figure(results, os.path.join(out, "randomisation.png"),
                                    f"Model-parameter randomisation: {meta.get('model', 'model')} on {n} images")
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
    md += [table_markdown(results, summary), ""]
    if results.get("chance_energy") is not None:
        md += [f"Chance level: a uniform map scores the mean mask area, {results['chance_energy']:.3f}, in the energy "
               f"pointing game; a random point hits with about that probability ({100 * results['chance_energy']:.1f} %).", ""]
    md += _trust_notes(results, cfg)
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
            if m in DAAM_METHODS:
                per_row = torch.nanmean(blk["per_block"], 0).tolist()
                lines.append(f"| {LABELS[m]} L_b (block alone) | " + " | ".join(f"{v:.3f}" for v in per_row) + " |")
        md += lines + [""]
    rnd = {m: t["randomisation"] for m, t in results.get("trust", {}).items() if "randomisation" in t}
    if rnd:
        steps = next(iter(rnd.values()))["steps"]
        md += ["## Model-parameter randomisation (cascading, Spearman to the original map, mean)", "",
               "| method | " + " | ".join(steps) + " |", "|---|" + "---:|" * len(steps)]
        md += [f"| {LABELS[m]} | " + " | ".join(f"{v:.3f}" for v in r["cascading"]["spearman"]) + " |"
               for m, r in rnd.items()]
        md += [""]
    boxes = {m: t["max_box_acc"] for m, t in results.get("trust", {}).items() if "max_box_acc" in t}
    if boxes:
        md += ["## MaxBoxAccV2 per IoU level (best map threshold in brackets)", "",
               "| method | IoU 0.3 | IoU 0.5 | IoU 0.7 | PxAP pooled | mean per-image AP |", "|---|---:|---:|---:|---:|---:|"]
        for m, b in boxes.items():
            px = results["trust"][m].get("pxap", {})
            md.append(f"| {LABELS[m]} | " + " | ".join(f"{100 * a:.1f} ({t:.2f})" for a, t in
                                                        zip(b["per_iou"], b["best_threshold"]))
                      + f" | {px.get('pooled', float('nan')):.3f} | {px.get('per_image_mean', float('nan')):.3f} |")
        md += [""]
    cost = _cost_md(results, summary)
    if cost:
        md += ["## Cost of each metric", "",
               f"Wall-clock ms per image on this run (torch threads: {meta.get('threads', '?')}), every method's "
               "own explanations of the perturbed / randomised inputs included.", "", cost, ""]
    if results.get("fractions") is not None or results["blocks"]:
        md += ["![deletion and insertion curves, per-block energy pointing game](eval.png)", ""]
    if has_rnd:
        md += ["![cascading and independent randomisation curves](randomisation.png)", ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md))
    js = {"meta": meta, "config": cfg, "n": n, "methods": methods,
          "table": {k: {m: {"mean": v[0], "se": v[1], "count": v[2]} for m, v in row.items()}
                    for k, row in summary["table"].items()},
          "ms_per_image": summary["ms_per_image"],
          "metric_ms_per_image": summary.get("metric_ms_per_image", {}),
          "metrics": list(results.get("groups", ())),
          "fractions": results["fractions"].tolist() if results.get("fractions") is not None else None,
          "mean_curves": {m: {k: c.mean(0).tolist() for k, c in cs.items()} for m, cs in results["curves"].items()},
          "blocks": {m: {k: torch.nanmean(v, 0).tolist() for k, v in b.items()} for m, b in results["blocks"].items()},
          "chance_energy": results.get("chance_energy")}
    for key in ("randomisation", "max_box_acc", "pxap"):
        per_method = {m: t[key] for m, t in results.get("trust", {}).items() if key in t}
        if per_method:
            js[key] = per_method
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
