"""``daam-fast eval``: DAAM and the baselines on the same images (:mod:`daam_fast.evaluate`)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

from ..evaluate.config import OUTPUT_FILES, EvalOptions
from ..evaluate.loader import load_data
from ..evaluate.report import table_markdown, write_report
from ..evaluate.runner import evaluate
from .options import (EXIT_FAILED, EXIT_OK, UsageError, add_model_args, add_options, add_overwrite, add_quiet,
                      daam_args, default_of, from_args, load_model, to_argv, torch_threads)

__all__ = ["add_cli"]


def _command_line(args, opts) -> str:
    """The command that reproduces this run (every option spelt out)."""
    parts = ["daam-fast eval"]
    if args.model:
        parts.append(f"--model {args.model}")
    if args.checkpoint:
        parts.append(f"--checkpoint {args.checkpoint}")
    parts += to_argv(opts)
    if args.threads:
        parts.append(f"--threads {args.threads}")
    parts.append(f"--out {args.out}")
    return " ".join(parts)


def _cmd_eval(args) -> int:
    with torch_threads(args.threads):                   # --threads applies to this command only
        return _run_eval(args)


def _run_eval(args) -> int:
    from .._extras import require
    require("matplotlib.figure", "this command")           # the report's figures: fail before any work
    from ..adapters import get_adapter
    from ..preprocess import input_spec
    opts = from_args(EvalOptions, args)
    try:
        opts.check()
    except ValueError as e:
        raise UsageError(str(e)) from None
    existing = [f for f in OUTPUT_FILES if os.path.exists(os.path.join(args.out, f))]
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} exists and is not a directory")
    if existing and not args.overwrite:
        raise UsageError(f"{args.out} already holds {', '.join(existing)}: pass --overwrite to replace them")
    daam = daam_args(args).keywords()
    model, _ = load_model(args)
    try:
        headless = get_adapter(model).num_classes == 0
    except ValueError as e:
        raise UsageError(str(e)) from None
    if headless:
        raise UsageError("the model has no classifier head; deletion / insertion need a class score")
    spec = input_spec(model)
    try:
        data = load_data(opts.data, opts.masks, spec, opts.num_images, opts.seed, next(model.parameters()).device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for p, r in data.failed:
        print(f"skipped: {p}: {r}", file=sys.stderr)
    if data.images is None:
        raise UsageError("no usable image")
    labels, masks = data.labels, data.masks
    if opts.target == "label" and labels is None:
        raise UsageError("--target label needs labelled data (--data shapes)")
    t0 = time.time()
    try:
        res = evaluate(model, data.images, masks, targets=labels if opts.target == "label" else None, options=opts,
                       progress=not args.quiet, daam_options=daam, input_norm=(spec.mean, spec.std))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if masks is not None:
        res["chance_energy"] = float(masks.float().mean())
    acc = float((res["predictions"] == labels).float().mean()) if labels is not None else None
    meta = {"model": getattr(model, "daam_name", None) or args.model or "model", "data": data.name,
            "target": "the label" if opts.target == "label" else "each image's prediction", "accuracy": acc,
            "command": _command_line(args, dataclasses.replace(opts, num_images=res["n"])),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "seconds": round(time.time() - t0, 1)}
    summary = write_report(res, args.out, meta, per_image=args.per_image)
    if not args.quiet:
        print(table_markdown(res, summary))
    print(f"evaluated {len(opts.methods)} methods on {res['n']} images ({time.time() - t0:.0f} s) -> "
          f"{os.path.join(args.out, 'results.md')}, {os.path.join(args.out, 'eval.png')}")
    return EXIT_FAILED if data.failed else EXIT_OK


def _description(doc: str) -> str:
    """The package docstring without its paragraph on modules (not for users of the command)."""
    return "\n\n".join(part for part in doc.split("\n\n") if not part.startswith("Modules:"))


def add_cli(sub) -> None:
    """Register ``daam-fast eval``: its flags are :class:`daam_fast.evaluate.config.EvalOptions`'
    fields, with their defaults."""
    from .. import evaluate
    p = sub.add_parser("eval", help="compare DAAM with baselines: faithfulness, localisation, boxes, sanity, "
                                    "robustness, complexity",
                       description=_description(evaluate.__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    # eval chooses its methods with --methods; --batch-size is EvalOptions'
    add_model_args(p, batch_size=default_of(EvalOptions, "batch_size"), bank=False, method=False)
    add_options(p.add_argument_group("evaluation"), EvalOptions, exclude=("batch_size",))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--out", required=True,
                   help="output directory (results.md, results.json, eval.png, randomisation.png)")
    p.add_argument("--per-image", action="store_true", help="also write per_image.csv")
    add_overwrite(p, "replace earlier results in --out")
    add_quiet(p)
    p.set_defaults(func=_cmd_eval)
