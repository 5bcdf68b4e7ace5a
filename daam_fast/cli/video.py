"""``daam-fast video IN --out OUT.mp4``: explain every frame of a video (:mod:`daam_fast.video`)."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

from ..video.compose import BlockSpec
from ..video.options import VideoOptions
from .options import (EXIT_FAILED, EXIT_OK, UsageError, add_model_args, add_options, add_overwrite, add_quiet,
                      daam_args, default_of, from_args, load_model, refuse_existing)

__all__ = ["add_cli"]


def _parse_blocks(items: Optional[List[str]]) -> BlockSpec:
    if not items:
        return default_of(VideoOptions, "block")
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
    refuse_existing(args.out, args.overwrite)
    try:
        blocks = _parse_blocks(args.blocks)
    except ValueError as e:
        raise UsageError(str(e)) from None
    daam = daam_args(args)
    opt = from_args(VideoOptions, args, method=daam.method, block=blocks,
                    corrupt="keep" if args.keep_corrupt else default_of(VideoOptions, "corrupt"))
    try:
        opt.check()
    except ValueError as e:
        raise UsageError(str(e)) from None
    model, bank = load_model(args)
    before = os.path.getmtime(args.out) if os.path.exists(args.out) else None
    try:
        s = explain_video(args.input, args.out, model, opt, bank=bank, maps_out=args.maps, progress=not args.quiet,
                          daam_options=daam.keywords())
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
    """Register ``daam-fast video IN --out OUT.mp4 [--blocks ...] [--batch-size B]``; the flags and
    defaults are :class:`daam_fast.video.VideoOptions`' fields."""
    p = sub.add_parser("video", help="explain every frame of a video -> MP4 overlay (and maps)",
                       description="Explain every frame of a video; write an MP4 at the input's frame rate "
                                   "and size, with its sound (docs: Video).")
    p.add_argument("input", help="input video (any format FFmpeg/PyAV reads)")
    p.add_argument("--out", required=True, help="output video (.mp4)")
    add_model_args(p, batch_size=default_of(VideoOptions, "batch_size"))
    p.add_argument("--blocks", nargs="+", default=None,
                   help="accumulated maps to show, 0-based (negative from the end): '-1' (default, the final map), "
                        "'0 2 -1' (side by side) or 'all' (the attention flow as a grid)")
    add_options(p, VideoOptions)
    p.add_argument("--maps", default=None, metavar="FOLDER",
                   help="also write the per-frame maps into this folder (maps.npy, targets.npy, time.npy, index.json)")
    p.add_argument("--keep-corrupt", action="store_true", help="explain frames the decoder flags as corrupt")
    add_overwrite(p, "replace an existing --out")
    add_quiet(p)
    p.set_defaults(func=_cmd_video)
