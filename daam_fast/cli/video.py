"""``daam-fast video IN --out OUT.mp4``: explain every frame of a video (:mod:`daam_fast.video`)."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import numpy as np

from ..video.compose import BlockSpec
from .options import (EXIT_FAILED, EXIT_OK, UsageError, add_mode, add_model_args, add_overwrite, add_quiet,
                      daam_args, load_model)

__all__ = ["add_cli"]


def _parse_blocks(items: Optional[List[str]]) -> BlockSpec:
    if not items:
        from ..video.options import DEFAULTS
        return DEFAULTS.block
    if len(items) == 1 and items[0] == "all":
        return "all"
    out = []
    for it in items:
        for tok in it.split(","):
            tok = tok.strip()
            if not tok:
                continue
            try:
                out.append(int(tok))
            except ValueError:
                raise ValueError(f"--blocks: {tok!r} is not a block index (integers, 0-based, negative from "
                                 f"the end, or 'all')") from None
    return out[0] if len(out) == 1 else out


def _cmd_video(args) -> int:
    from ..video import VideoDecodeError, explain_video
    if not os.path.isfile(args.input):
        raise UsageError(f"{args.input}: no such file")
    if os.path.exists(args.out) and not args.overwrite:
        raise UsageError(f"{args.out} exists: pass --overwrite to replace it")
    try:
        blocks = _parse_blocks(args.blocks)
    except ValueError as e:
        raise UsageError(str(e)) from None
    daam = daam_args(args)
    model, bank = load_model(args)
    before = os.path.getmtime(args.out) if os.path.exists(args.out) else None
    try:
        s = explain_video(args.input, args.out, model, method=daam.method, block=blocks, layout=args.layout,
                          scale=args.scale, mode=args.mode, batch_size=args.batch_size, target=args.target,
                          bank=bank, smoothing=args.smoothing, maps_out=args.maps,
                          maps_dtype=np.float16 if args.maps_float16 else np.float32, codec=args.codec,
                          crf=args.crf, preset=args.preset, corrupt="keep" if args.keep_corrupt else "error",
                          progress=not args.quiet, daam_options=daam.keywords(), audio=not args.no_audio,
                          boxes=args.boxes, overlap={"auto": None, "on": True, "off": False}[args.overlap])
    except VideoDecodeError as e:
        kept = (f"; the {e.frame_index} frames before it are in {args.out}" if e.frame_index else "")
        print(f"daam-fast video: {e}{kept}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as e:
        if os.path.exists(args.out) and os.path.getmtime(args.out) != before:    # stopped mid-run: say what is kept
            print(f"daam-fast video: {e}; {args.out} holds the frames written before it", file=sys.stderr)
            return EXIT_FAILED
        raise UsageError(str(e)) from None
    except RuntimeError as e:                          # the output could not be written
        print(f"daam-fast video: {e}", file=sys.stderr)
        return EXIT_FAILED
    extra = f", maps -> {s.maps_out}" if s.maps_out else ""
    extra += f"; audio: {s.audio}"
    if s.corrupt_frames:
        extra += f"; {len(s.corrupt_frames)} corrupt frames kept: {s.corrupt_frames[:10]}"
    print(f"video: {s.frames} frames, {s.size[1]}x{s.size[0]} at {float(s.fps):.3g} fps ({s.codec}), "
          f"{s.frames_per_second:.1f} frames/s -> {s.out}{extra}")
    return EXIT_OK


def add_cli(sub) -> None:
    """Register ``daam-fast video IN --out OUT.mp4 [--blocks ...] [--batch-size B]``; the defaults
    are :class:`daam_fast.video.VideoOptions`'."""
    from ..video.codec import X264_PRESETS
    from ..video.compose import LAYOUTS
    from ..video.options import CODECS, VideoOptions
    d = VideoOptions()
    p = sub.add_parser("video", help="explain every frame of a video -> MP4 overlay (and maps)",
                       description="Explain every frame of a video; write an MP4 at the input's frame rate "
                                   "and size, with its sound (README, section Video).")
    p.add_argument("input", help="input video (any format FFmpeg/PyAV reads)")
    p.add_argument("--out", required=True, help="output video (.mp4)")
    add_model_args(p, batch_size=d.batch_size)
    p.add_argument("--blocks", nargs="+", default=None,
                   help="accumulated maps to show, 0-based (negative from the end): '-1' (default, the final map), "
                        "'0 2 -1' (side by side) or 'all' (the attention flow as a grid)")
    p.add_argument("--layout", default=d.layout, choices=LAYOUTS)
    p.add_argument("--scale", type=float, default=d.scale, help="panel size relative to the frame")
    add_mode(p, d.mode)
    p.add_argument("--smoothing", type=float, default=d.smoothing,
                   help="EMA over frames: S_t = (1-s) D_t + s S_(t-1), s in [0, 1); 0 = off")
    p.add_argument("--target", type=int, default=d.target, help="class to explain in every frame (default: prediction)")
    p.add_argument("--maps", default=None, help="also write the per-frame maps to this .npz (or .zarr)")
    p.add_argument("--maps-float16", action="store_true", help="store the maps as float16")
    p.add_argument("--codec", default=d.codec, choices=CODECS)
    p.add_argument("--crf", type=int, default=d.crf, help=f"quality 0 (best) .. 51 (default {d.crf})")
    p.add_argument("--preset", default=d.preset, choices=X264_PRESETS, help=f"libx264 speed preset (default {d.preset})")
    p.add_argument("--keep-corrupt", action="store_true", help="explain frames the decoder flags as corrupt")
    p.add_argument("--no-audio", action="store_true", help="leave out the input's sound (default: kept)")
    p.add_argument("--boxes", type=float, default=d.boxes, metavar="THRESHOLD",
                   help="draw on each panel the box of its map's salient region (threshold: a fraction of the "
                        "map's maximum, e.g. 0.5)")
    p.add_argument("--overlap", default="auto", choices=("auto", "on", "off"),
                   help="decode and encode in their own threads, beside the model (auto, the default: where they "
                        "have a core of their own, i.e. on a GPU or with fewer model threads than cores; else the "
                        "stages take turns with the model, which is faster there; the next batch is then decoded beside the "
                        "drawing and encoding of this one, never while the model runs)")
    add_overwrite(p, "replace an existing --out")
    add_quiet(p)
    p.set_defaults(func=_cmd_video)
