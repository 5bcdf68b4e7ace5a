"""``daam-fast batch SRC --out DIR``: explain many images on Ray (:mod:`daam_fast.distributed`)."""
from __future__ import annotations

import sys

from .._extras import require
from .options import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, add_model_args, add_overwrite, add_quiet,
                      daam_args, default_param, model_spec)

__all__ = ["add_cli"]


def _cmd_batch(args) -> int:
    require("ray", "this command")
    from ..distributed import explain_dataset, load_errors
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
    gpus = args.gpus_per_actor if args.device != "cuda" or args.gpus_per_actor > 0 else 1.0
    try:
        m = explain_dataset(src, args.out, model_spec(args), method=daam.method, target=args.target,
                            num_actors=args.num_actors, num_cpus_per_actor=args.cpus_per_actor,
                            num_gpus_per_actor=gpus, shard_size=args.shard_size,
                            batch_size=args.batch_size, overwrite=args.overwrite, ray_address=args.ray_address,
                            num_cpus=args.num_cpus, progress=not args.quiet, daam_options=daam.keywords())
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
    """Register ``daam-fast batch SRC --out DIR [--ray-address auto] [--num-actors N]``; the defaults
    are :func:`daam_fast.distributed.explain_dataset`'s."""
    from ..distributed import explain_dataset

    def d(name):
        return default_param(explain_dataset, name)
    p = sub.add_parser("batch", help="explain many images on Ray (sharded Parquet, resumable)",
                       description="Explain images with a Ray Data actor pool; writes shards/*.parquet, "
                                   "errors.parquet and manifest.json to --out. Rerun to resume.")
    p.add_argument("src", nargs="+", help="a folder, glob patterns or image files")
    add_model_args(p, batch_size=d("batch_size"))
    p.add_argument("--out", required=True, help="output directory (reused to resume)")
    p.add_argument("--ray-address", default=d("ray_address"),
                   help="Ray cluster to join ('auto'); default: start a local Ray")
    p.add_argument("--num-actors", type=int, default=d("num_actors"), help="actors in the pool (one model each)")
    p.add_argument("--num-cpus", type=int, default=d("num_cpus"), help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--cpus-per-actor", type=float, default=d("num_cpus_per_actor"), help="CPUs (torch threads) per actor")
    p.add_argument("--gpus-per-actor", type=float, default=d("num_gpus_per_actor"),
                   help="GPUs per actor (--device cuda implied)")
    p.add_argument("--shard-size", type=int, default=d("shard_size"), help="images per shard file")
    p.add_argument("--target", type=int, default=d("target"), help="class to explain (default: each image's prediction)")
    add_overwrite(p, "replace results of a run with other settings")
    add_quiet(p)
    p.set_defaults(func=_cmd_batch)
