"""``daam-fast explain IMG... --out DIR``: explain image files and write the chosen outputs
(default: an overlay per image, overlay/STEM.jpg, and the run's maps in maps/; also a grid, a GIF
and an MP4 per image, and one explorer page).

The work is done by :func:`daam_fast.outputs.explain_files` (a reader thread one batch ahead,
the model, a fixed pool of writer threads); this module holds the command, whose flags and
defaults are the fields of :class:`daam_fast.outputs.ExplainOptions`.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from typing import Optional

from ..outputs import ExplainOptions, explain_files
from .options import (EXIT_FAILED, EXIT_OK, UsageError, add_model_args, add_options, add_overwrite, add_quiet,
                      daam_args, default_of, from_args, load_model)

__all__ = ["add_cli"]


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


def _onnx_explainer(args, model):
    """``--onnx FILE``: the ONNX Runtime explainer, checked against ``--model`` (its input size)."""
    from ..export import OnnxExplainer
    from ..preprocess import input_spec
    try:
        explainer = OnnxExplainer(args.onnx)
    except (ValueError, OSError) as e:
        raise UsageError(f"--onnx {args.onnx}: {e}") from None
    except ImportError:
        raise
    except Exception as e:                 # ONNX Runtime's own errors (not an ONNX file, ...)
        raise UsageError(f"--onnx {args.onnx}: cannot be loaded by ONNX Runtime: {e}") from None
    size = tuple(input_spec(model).size)
    if explainer.input_size != size:
        raise UsageError(f"--onnx {args.onnx} takes {explainer.input_size} pixels, --model "
                         f"{args.model or 'shapes_vit'} {size}: give the --model it was exported from "
                         f"({explainer.model_name})")
    return explainer


def _cmd_explain(args) -> int:
    from ..io import expand_inputs
    paths, problems = expand_inputs(args.images)
    daam = daam_args(args)
    outputs = args.outputs + (",html" if args.html else "")
    if args.no_video:
        outputs = ",".join(o for o in outputs.split(",") if o.strip().lower() != "mp4") or "maps"
    opt = from_args(ExplainOptions, args, method=daam.method, outputs=outputs)
    try:
        outputs = opt.check()
    except ValueError as e:
        raise UsageError(str(e)) from None
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
    explainer = _onnx_explainer(args, model) if args.onnx else None
    if explainer is not None:
        opt = dataclasses.replace(opt, method=explainer.method)
    err = _prepare_out(args.out, args.overwrite)
    if err:
        raise UsageError(err)
    t0 = time.time()
    s = explain_files(paths, model, args.out, opt, bank=bank, quiet=args.quiet, daam_options=daam.keywords(),
                      failed_inputs=problems, explainer=explainer)
    failed = [(d["path"], d["reason"]) for d in s["failed"]]
    if (s.get("html") or {}).get("error"):
        failed.append((os.path.join(args.out, "explorer.html"), s["html"]["error"]))
    for p, r in failed:
        print(f"failed: {p}: {r}", file=sys.stderr)
    print(f"explained {len(s['explained'])}, failed {len(failed)} ({time.time() - t0:.2f} s) -> {args.out}")
    return EXIT_FAILED if failed else EXIT_OK


def add_cli(sub) -> None:
    """Register ``daam-fast explain``; its flags and defaults are :class:`ExplainOptions`' fields."""
    p = sub.add_parser("explain", help="explain image files (per image: overlay and maps; grid, GIF, MP4, html on request)")
    p.add_argument("images", nargs="+", help="files, directories or glob patterns")
    add_model_args(p, batch_size=default_of(ExplainOptions, "batch_size"))
    p.add_argument("--out", required=True, help="output directory")
    add_overwrite(p, "replace the contents of an existing --out")
    add_options(p, ExplainOptions)
    p.add_argument("--html", action="store_true",
                   help="also write the run's interactive explorer page, explorer.html (= adding html to --outputs)")
    p.add_argument("--onnx", default=None, metavar="FILE",
                   help="explain with this ONNX graph (written by daam-fast export) in ONNX Runtime instead of "
                        "PyTorch; --model names the model it was exported from (its preprocessing and class names)")
    p.add_argument("--no-video", action="store_true", help="leave the MP4s out even when --outputs has mp4")
    add_quiet(p)
    p.set_defaults(func=_cmd_explain)
