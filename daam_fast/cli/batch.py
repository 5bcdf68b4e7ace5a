"""``daam-fast batch SRC --out DIR``: explain many images on Ray (:mod:`daam_fast.distributed`)."""
from __future__ import annotations

import sys

from .._extras import require
from ..distributed.options import BatchOptions
from .options import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, add_model_args, add_options, add_quiet, daam_args,
                      default_of, from_args, model_spec)

__all__ = ["add_cli"]


def _cmd_batch(args) -> int:
    require("ray", "this command")
    from ..distributed.results import load_errors
    from ..distributed.run import explain_dataset
    from ..models import ModelLoadError
    src = args.src[0] if len(args.src) == 1 else list(args.src)
    problems = []
    if isinstance(src, list):
        from ..io import expand_inputs
        paths, problems = expand_inputs(src)
        for p, r in problems:
            print(f"daam-fast batch: {p}: {r}", file=sys.stderr)
        if not paths:
            raise UsageError("no input images")
        src = paths
    daam = daam_args(args)
    opts = from_args(BatchOptions, args, progress=not args.quiet, daam_options=daam.keywords())
    if args.device == "cuda" and opts.num_gpus_per_actor == 0:
        opts.num_gpus_per_actor = 1.0
    try:
        m = explain_dataset(src, args.out, model_spec(args), opts)
    except (ValueError, ModelLoadError, FileNotFoundError, RuntimeError) as e:
        raise UsageError(str(e)) from None
    if not args.quiet:
        for e in load_errors(args.out):
            print(f"failed: {e['id']}: {e['reason']}", file=sys.stderr)
    print(f"inputs {m['inputs']}: results {m['results']}, errors {m['errors']}, missing {m['missing']} "
          f"({len(m['shards'])} shards, {m['last_run']['seconds']:.1f} s) -> {args.out}")
    if not m["complete"]:
        return EXIT_USAGE
    return EXIT_FAILED if m["errors"] or problems else EXIT_OK


def add_cli(sub) -> None:
    """Register ``daam-fast batch SRC --out DIR [--ray-address auto] [--num-actors N]``: its flags
    are :class:`daam_fast.distributed.options.BatchOptions`' fields, with their defaults."""
    p = sub.add_parser("batch", help="explain many images on Ray (sharded maps folders, resumable)",
                       description="Explain images with a Ray Data actor pool; writes shards/shard-*/ (maps "
                                   "folders), errors.json and manifest.json to --out. Rerun to resume.")
    p.add_argument("src", nargs="+", help="a folder, glob patterns or image files")
    add_model_args(p, batch_size=default_of(BatchOptions, "batch_size"))     # --method is the DAAM options'
    p.add_argument("--out", required=True, help="output directory (reused to resume)")
    add_options(p.add_argument_group("run"), BatchOptions, exclude=("method", "batch_size"))
    add_quiet(p)
    p.set_defaults(func=_cmd_batch)
