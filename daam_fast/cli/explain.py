"""``daam-fast explain IMG... --out DIR``: explain image files and write the chosen outputs
(default: an overlay per image, overlay/STEM.png, and the run's maps in maps/; also a grid, a GIF
and an MP4 per image, and one explorer page).

The work is done by :func:`daam_fast.outputs.explain_files` (reading ahead, explaining, and
writing in threads, each behind a bounded queue); this module holds the command.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Optional

from ..outputs import OUTPUTS, ExplainOptions, explain_files, parse_outputs
from .options import (EXIT_FAILED, EXIT_OK, UsageError, add_mode, add_model_args, add_overwrite, add_quiet,
                      daam_args, default_of, load_model)

__all__ = ["ExplainOptions", "explain_files", "add_cli"]


_D = ExplainOptions()


def _prepare_out(out: str, overwrite: bool) -> Optional[str]:
    if os.path.exists(out) and not os.path.isdir(out):
        return f"--out {out} exists and is not a directory"
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            return f"output directory {out} exists and is not empty: pass --overwrite to replace its contents"
        for name in os.listdir(out):
            p = os.path.join(out, name)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    os.makedirs(out, exist_ok=True)
    return None


def _cmd_explain(args) -> int:
    from ..io import expand_inputs
    paths, problems = expand_inputs(args.images)
    daam = daam_args(args)
    try:
        outputs = parse_outputs(args.outputs + (",html" if args.html else ""))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    if args.boxes is not None and not 0.0 <= args.boxes <= 1.0:
        raise UsageError(f"--boxes: the threshold is a fraction of the map's maximum in [0, 1], got {args.boxes}")
    if "html" in outputs:
        try:
            from ..explorer import explore  # noqa: F401
        except ImportError as e:
            raise UsageError(f"--outputs html needs daam_fast.explorer, which cannot be imported here ({e})") from None
    if not paths and not problems:
        raise UsageError("no input images")
    if args.overwrite and os.path.isdir(args.out):
        top = os.path.realpath(args.out)
        inside = [p for p in paths if os.path.commonpath([top, os.path.realpath(p)]) == top]
        if inside:
            raise UsageError(f"--out {args.out} holds input images ({inside[0]}, ...): --overwrite would delete them; "
                             "choose another --out")
    model, bank = load_model(args)
    err = _prepare_out(args.out, args.overwrite)
    if err:
        raise UsageError(err)
    t0 = time.time()
    s = explain_files(paths, model, args.out, method=daam.method, target=args.target, bank=bank,
                      batch_size=args.batch_size, mode=args.mode, quiet=args.quiet, video=not args.no_video,
                      daam_options=daam.keywords(), outputs=outputs, workers=args.workers, boxes=args.boxes,
                      max_side=args.max_side, min_side=args.min_side, failed_inputs=problems)
    failed = [(d["path"], d["reason"]) for d in s["failed"]]
    if (s.get("html") or {}).get("error"):
        failed.append((os.path.join(args.out, "explorer.html"), s["html"]["error"]))
    for p, r in failed:
        print(f"failed: {p}: {r}", file=sys.stderr)
    print(f"explained {len(s['explained'])}, failed {len(failed)} ({time.time() - t0:.2f} s) -> {args.out}")
    return EXIT_FAILED if failed else EXIT_OK


def add_cli(sub) -> None:
    """Register ``daam-fast explain``."""
    p = sub.add_parser("explain", help="explain image files (per image: overlay and maps; grid, GIF, MP4, html on request)")
    p.add_argument("images", nargs="+", help="files, directories or glob patterns")
    add_model_args(p, batch_size=_D.batch_size)
    p.add_argument("--target", type=int, default=_D.target,
                   help="class to explain (default: each image's prediction)")
    p.add_argument("--out", required=True, help="output directory")
    add_overwrite(p, "replace the contents of an existing --out")
    add_mode(p, default_of(ExplainOptions, "mode"))
    p.add_argument("--outputs", default=_D.outputs, metavar="LIST",
                   help=f"comma-separated, from {','.join(OUTPUTS)} (or all); default {_D.outputs}. One picture "
                        "per image in a folder per output: overlay/STEM.png, grid/STEM.png, gif/STEM.gif, "
                        "mp4/STEM.mp4; maps: the run's arrays in maps/ (maps.npy, block_maps.npy, targets.npy ..., "
                        "one row per image); html: one explorer.html for the run. Costs per output: docs/cli.md")
    p.add_argument("--html", action="store_true",
                   help="also write the run's interactive explorer page, explorer.html (= adding html to --outputs)")
    p.add_argument("--workers", type=int, default=_D.workers,
                   help="threads writing outputs while the next batch is explained, and one reading ahead "
                        "(0: explaining and writing take turns: while the model waits, a batch's pictures are "
                        "written side by side by as many threads as it uses, and the next batch is read; "
                        "default: 2 where the model leaves "
                        "a core free or runs on a GPU, else 0: a thread without a core of its own stalls the model; "
                        "by default a run whose writing costs more than a model thread then gives one model "
                        "thread to a writer thread, measured on its first 5 batches)")
    p.add_argument("--boxes", type=float, default=_D.boxes, metavar="THRESHOLD",
                   help="draw the box of each final map's salient region on the overlay (threshold: a fraction of "
                        "the map's maximum, e.g. 0.5); also stored in maps.npz")
    p.add_argument("--max-side", type=int, default=_D.max_side,
                   help=f"longer side of the drawn pictures, at most (default {_D.max_side}; 0: the image's own)")
    p.add_argument("--min-side", type=int, default=_D.min_side,
                   help="scale small pictures up so their shorter side is at least this (default 0: their own size)")
    p.add_argument("--no-video", action="store_true", help="leave flow.mp4 out even when --outputs has mp4")
    add_quiet(p)
    p.set_defaults(func=_cmd_explain)
