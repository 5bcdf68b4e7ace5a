"""``daam-fast eval``: DAAM and the baselines on the same images (:mod:`daam_fast.evaluate`)."""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from .options import (EXIT_FAILED, EXIT_OK, UsageError, add_model_args, add_overwrite, add_quiet, daam_options,
                      from_args, load_model, torch_threads)

__all__ = ["add_cli"]


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
              f"--batch-size {args.batch_size}", f"--metrics {args.metrics}", f"--box-thresholds {args.box_thresholds}",
              f"--noise-samples {args.noise_samples}", f"--noise-sigma {args.noise_sigma:g}", f"--topk {args.topk:g}"]
    if args.threads:
        parts.append(f"--threads {args.threads}")
    parts.append(f"--out {args.out}")
    return " ".join(parts)


def _cmd_eval(args) -> int:
    with torch_threads(args.threads):                   # --threads applies to this command only
        return _run_eval(args)


def _run_eval(args) -> int:
    from .. import evaluate as E
    from .._extras import require
    require("matplotlib.figure", "this command")           # the report's figures: fail before any work
    from ..adapters import get_adapter
    from ..preprocess import input_spec
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in E.METHODS]
    if bad or not methods:
        raise UsageError(f"unknown method(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(E.METHODS)}")
    if args.num_images is not None and args.num_images < 1:
        raise UsageError("--num-images must be >= 1")
    try:
        E.metric_groups(args.metrics)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.box_thresholds < 1 or args.noise_samples < 1 or not args.noise_sigma > 0 or not 0 < args.topk <= 1:
        raise UsageError("need --box-thresholds >= 1, --noise-samples >= 1, --noise-sigma > 0 and 0 < --topk <= 1")
    existing = [f for f in E.OUTPUT_FILES if os.path.exists(os.path.join(args.out, f))]
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} exists and is not a directory")
    if existing and not args.overwrite:
        raise UsageError(f"{args.out} already holds {', '.join(existing)}: pass --overwrite to replace them")
    opts = daam_options(args)
    model, _ = load_model(args)
    try:
        headless = get_adapter(model).num_classes == 0
    except ValueError as e:
        raise UsageError(str(e)) from None
    if headless:
        raise UsageError("the model has no classifier head; deletion / insertion need a class score")
    try:
        data = E.load_data(args.data, args.masks, input_spec(model), args.num_images, args.seed,
                           next(model.parameters()).device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for p, r in data.failed:
        print(f"skipped: {p}: {r}", file=sys.stderr)
    if data.images is None:
        raise UsageError("no usable image")
    labels, masks = data.labels, data.masks
    if args.target == "label" and labels is None:
        raise UsageError("--target label needs labelled data (--data shapes)")
    cfg = from_args(E.EvalConfig, args)
    spec = input_spec(model)
    t0 = time.time()
    try:
        res = E.evaluate(model, data.images, masks, methods, targets=labels if args.target == "label" else None,
                         config=cfg, progress=not args.quiet, daam_options=opts, input_norm=(spec.mean, spec.std))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if masks is not None:
        res["chance_energy"] = float(masks.float().mean())
    acc = float((res["predictions"] == labels).float().mean()) if labels is not None else None
    meta = {"model": getattr(model, "daam_name", None) or args.model or "model", "data": data.name,
            "target": "the label" if args.target == "label" else "each image's prediction", "accuracy": acc,
            "command": _command_line(args, res["n"]), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "seconds": round(time.time() - t0, 1)}
    summary = E.write_report(res, args.out, meta, per_image=args.per_image)
    if not args.quiet:
        print(E._table_md(res, summary))
    print(f"evaluated {len(methods)} methods on {res['n']} images ({time.time() - t0:.0f} s) -> "
          f"{os.path.join(args.out, 'results.md')}, {os.path.join(args.out, 'eval.png')}")
    return EXIT_FAILED if data.failed else EXIT_OK


def _description(doc: str) -> str:
    """The package docstring without its paragraph on modules (not for users of the command)."""
    return "\n\n".join(part for part in doc.split("\n\n") if not part.startswith("Modules:"))


def add_cli(sub) -> None:
    """Register ``daam-fast eval``; the defaults are :class:`daam_fast.evaluate.EvalConfig`'s."""
    from .. import baselines
    from .. import evaluate as E
    from ..metrics import BASELINES, ORDERS
    d = E.EvalConfig()
    p = sub.add_parser("eval", help="compare DAAM with baselines: faithfulness, localisation, boxes, sanity, "
                                    "robustness, complexity",
                       description=_description(E.__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, batch_size=d.batch_size, bank=False, method=False)   # eval chooses its methods with --methods
    p.add_argument("--data", default="shapes", help="'shapes' (generated, with masks and labels) or a directory of images")
    p.add_argument("--masks", default=None, help="directory of masks <stem>.png or <stem>_mask.png (for --data DIR)")
    p.add_argument("--num-images", type=int, default=None, help="images to use (shapes: default 500; DIR: all)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the shapes data and of the 'random' method")
    p.add_argument("--methods", default=",".join(E.DEFAULT_METHODS), help=f"comma-separated from {', '.join(E.METHODS)}")
    p.add_argument("--target", default="pred", choices=["pred", "label"], help="explain the prediction or the label")
    p.add_argument("--steps", type=int, default=d.steps, help="deletion / insertion steps")
    p.add_argument("--order", default=d.order, choices=list(ORDERS))
    p.add_argument("--baseline", default=d.baseline, choices=list(BASELINES), help="deletion / insertion baseline")
    p.add_argument("--drop-baseline", default=d.drop_baseline, choices=list(BASELINES), help="average drop baseline")
    p.add_argument("--tolerance", type=float, default=d.tolerance, help="pointing game tolerance (pixels)")
    p.add_argument("--rollout-discard", type=float, default=d.rollout_discard)
    p.add_argument("--rollout-fusion", default=d.rollout_fusion, choices=list(baselines.HEAD_FUSIONS))
    p.add_argument("--perturb-batch", type=int, default=d.perturb_batch, help="perturbed images per forward pass")
    p.add_argument("--metrics", default=d.metrics,
                   help="comma-separated metric groups (default: all): faithfulness (deletion, insertion, average "
                        "drop, increase), localisation (pointing games), boxes (MaxBoxAccV2, PxAP; need masks), "
                        "randomisation (model-parameter randomisation, cascading and independent), robustness "
                        "(max-sensitivity, local Lipschitz, stability), complexity (Gini sparseness, entropy)")
    p.add_argument("--box-thresholds", type=int, default=d.box_thresholds,
                   help="map thresholds of MaxBoxAccV2 / PxAP in [0, 1) (100: steps of 0.01)")
    p.add_argument("--noise-samples", type=int, default=d.noise_samples,
                   help="noise samples per image of max-sensitivity / local Lipschitz")
    p.add_argument("--noise-sigma", type=float, default=d.noise_sigma, help="their noise std (model-input units)")
    p.add_argument("--topk", type=float, default=d.topk, help="share of cells of the randomisation top-k intersection")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--out", required=True,
                   help="output directory (results.md, results.json, eval.png, randomisation.png)")
    p.add_argument("--per-image", action="store_true", help="also write per_image.csv")
    add_overwrite(p, "replace earlier results in --out")
    add_quiet(p)
    p.set_defaults(func=_cmd_eval)
