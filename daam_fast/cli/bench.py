"""``daam-fast bench``: time DAAM against plain inference (and other tools) on your model (:mod:`daam_fast.bench`)."""
from __future__ import annotations

import argparse
import os

from .options import EXIT_OK, add_quiet

__all__ = ["add_cli"]


def _cmd_bench(args) -> int:
    from ..bench import run_bench
    names = [n.strip() for n in args.providers.split(",") if n.strip()]
    print(run_bench(args.model, args.batch_size, args.reps, args.threads, names, memory=args.memory,
                    progress=not args.quiet))
    return EXIT_OK


def add_cli(sub) -> None:
    """Register ``daam-fast bench``."""
    from .. import bench
    p = sub.add_parser("bench", help="time DAAM against plain inference (and other tools) on your model",
                       description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="deit_small_patch16_224", help="timm model name (random weights) or shapes_vit")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--providers", default=",".join(bench.PROVIDERS),
                   help="comma-separated; known: " + ", ".join(bench.KNOWN).replace("%", "%%"))
    p.add_argument("--memory", action="store_true", help="also measure peak memory per provider (subprocesses)")
    add_quiet(p)
    p.set_defaults(func=_cmd_bench)
