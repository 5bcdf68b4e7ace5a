"""``daam-fast export --model NAME --out model.onnx``: DAAM of a model as an ONNX graph
(:func:`daam_fast.export.to_onnx`), to run in ONNX Runtime without PyTorch.

The graph reads ``pixels`` (B, C, H, W), normalised as the model expects, and returns
``logits`` (or ``features`` for a model without a head), ``maps`` (B, L, h, w) and
``targets``; ``daam-fast explain --onnx model.onnx`` explains pictures with it.
"""
from __future__ import annotations

import os
import time

from .options import EXIT_OK, UsageError, add_model_args, add_overwrite, load_model

__all__ = ["add_cli"]


def _cmd_export(args) -> int:
    from ..export import to_onnx               # a missing onnx: main() names the extra
    if os.path.exists(args.out) and not args.overwrite:
        raise UsageError(f"--out {args.out} exists: pass --overwrite to replace it")
    model, bank = load_model(args, headless=False)
    from ..targets import BankTarget
    target = BankTarget(bank) if bank is not None else args.target
    from ..preprocess import input_spec
    spec = input_spec(model)
    meta = {"mean": ",".join(f"{v:g}" for v in spec.mean), "std": ",".join(f"{v:g}" for v in spec.std)}
    if args.checkpoint:
        meta["checkpoint"] = os.path.basename(args.checkpoint)
    t0 = time.time()
    try:
        to_onnx(model, args.out, method=args.method, opset=args.opset, target=target, block_maps=args.block_maps,
                model_name=args.model or "shapes_vit", metadata=meta, optimize=not args.no_optimize)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"exported {args.model or 'shapes_vit'} (method={args.method}) -> {args.out} "
          f"({os.path.getsize(args.out) / 2 ** 20:.1f} MiB, {time.time() - t0:.1f} s)")
    return EXIT_OK


def add_cli(sub) -> None:
    """Register ``daam-fast export``."""
    from ..export.onnx import DEFAULT_OPSET
    p = sub.add_parser("export", help="write DAAM of a model as an ONNX graph (runs in ONNX Runtime; needs the "
                                      "export extra)")
    add_model_args(p, daam=False)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    add_overwrite(p, "replace an existing --out")
    p.add_argument("--method", default="row", choices=["row", "grad"],
                   help="row: a forward and a backward on the rows the head reads, about one inference "
                        "(default); grad: the whole backward (mean-pooled models)")
    p.add_argument("--target", type=int, default=None,
                   help="class explained for every image (default: each image's prediction)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--block-maps", action="store_true", help="also output the per-block maps, block_maps")
    p.add_argument("--no-optimize", action="store_true",
                   help="leave out the exporter's ONNX optimiser (about half the export time; the graph keeps "
                        "about 4x the nodes, slower in ONNX Runtime for small models and batches)")
    p.set_defaults(func=_cmd_export)
