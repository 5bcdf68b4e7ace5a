"""``daam-fast explain IMG... --out DIR``: explain image files; per image an overlay, a grid, a GIF,
an MP4 and the maps."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

from .options import (EXIT_FAILED, EXIT_OK, UsageError, add_mode, add_model_args, add_overwrite, add_quiet,
                      daam_args, default_of, load_model)

__all__ = ["ExplainOptions", "explain_files", "add_cli"]


@dataclass
class ExplainOptions:
    """How ``explain`` explains and draws (the defaults of :func:`explain_files` and of the command).

    Attributes:
        method: a DAAM method ("grad", "direct", ...).  target: class for every image (None:
        each image's prediction).  batch_size: images per model call.  mode: rendering.
        video: also write flow.mp4.
    """

    method: str = "grad"
    target: Optional[int] = None
    batch_size: int = 16
    mode: str = "nonlinear"
    video: bool = True


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


def _unique_stems(paths: List[str]) -> List[str]:
    stems, count = [], {}
    for p in paths:
        s = os.path.splitext(os.path.basename(p))[0] or "image"
        count[s] = count.get(s, 0) + 1
        stems.append(s if count[s] == 1 else f"{s}_{count[s]}")
    return stems


def explain_files(paths: List[str], model, out: str, method: str = _D.method, target: Optional[int] = _D.target,
                  bank=None, batch_size: int = _D.batch_size, mode: str = _D.mode, quiet: bool = False,
                  video: bool = _D.video, daam_options: Optional[dict] = None) -> dict:
    """Explain image files and write, per image, overlay.png, grid.png, flow.gif, flow.mp4 and maps.npz
    into ``out/<stem>/``. ``daam_options``: extra :class:`DAAM` keywords (checkpoint, compile).
    Returns a summary: {"explained": [...], "failed": [(path, reason), ...]}."""
    from tqdm import tqdm
    from .. import DAAM, render
    from ..io import ImageReadError, read_image
    from ..models import class_names
    from ..preprocess import input_spec, prepare
    from ..viz import display_size, save_gif, save_grid, save_mp4, save_png

    spec = input_spec(model)
    names = class_names(model)
    device = next(model.parameters()).device
    explained, failed = [], []
    stems = _unique_stems(paths)
    daam = DAAM(model, method=method, **(daam_options or {}))
    bar = tqdm(total=len(paths), desc="explaining", unit="img", disable=quiet)
    with daam:
        for start in range(0, len(paths), batch_size):
            chunk = list(zip(paths[start:start + batch_size], stems[start:start + batch_size]))
            pics, ok = [], []
            for path, stem in chunk:
                try:
                    pics.append(read_image(path, max_side=4 * max(spec.size)))
                    ok.append((path, stem))
                except ImageReadError as e:
                    failed.append((path, str(e)))
                    bar.update(1)
            if not ok:
                continue
            x, _ = prepare(pics, spec, device=device)
            try:
                res = daam(x, target=target, bank=bank)
            except (ValueError, RuntimeError) as e:
                for path, _ in ok:
                    failed.append((path, f"explanation failed: {e}"))
                bar.update(len(ok))
                continue
            for i, ((path, stem), pic) in enumerate(zip(ok, pics)):
                try:
                    H, W = display_size(*pic.shape[-2:])
                    rgb = torch.nn.functional.interpolate(pic[None].float(), size=(H, W), mode="bilinear",
                                                          align_corners=False).round().clamp(0, 255).to(torch.uint8)
                    frames = render(res.maps[i:i + 1], images=rgb.to(res.maps.device), mode=mode)[0].cpu()
                    d = os.path.join(out, stem)
                    os.makedirs(d, exist_ok=True)
                    t = int(res.targets[i])
                    label = (names[t] if names and 0 <= t < len(names) else str(t)) if t >= 0 else "label-free"
                    save_png(frames[-1], os.path.join(d, "overlay.png"))
                    save_grid(frames, os.path.join(d, "grid.png"), image=rgb[0].permute(1, 2, 0),
                              titles=[f"D_{b + 1}" for b in range(frames.shape[0])],
                              suptitle=f"{os.path.basename(path)}: attention flow for class {label} ({method})")
                    save_gif(frames, os.path.join(d, "flow.gif"))
                    if video:
                        save_mp4(frames, os.path.join(d, "flow.mp4"))
                    arrays = dict(block_maps=res.block_maps[i].cpu().numpy(), maps=res.maps[i].cpu().numpy(),
                                  target=np.int64(t), class_name=np.str_(label), grid=np.array(res.grid),
                                  method=np.str_(method))
                    if res.logits is not None:
                        arrays["logits"] = res.logits[i].cpu().numpy()
                    if res.features is not None:
                        arrays["features"] = res.features[i].cpu().numpy()
                        arrays["weights"] = res.weights[i].cpu().numpy()
                    np.savez_compressed(os.path.join(d, "maps.npz"), **arrays)
                    explained.append({"path": path, "out": d, "target": t, "class": label})
                except Exception as e:  # noqa: BLE001 - one bad write must not stop the batch
                    failed.append((path, f"could not write outputs: {type(e).__name__}: {e}"))
                bar.update(1)
    bar.close()
    summary = {"explained": explained, "failed": [{"path": p, "reason": r} for p, r in failed]}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def _cmd_explain(args) -> int:
    from ..io import expand_inputs
    paths, problems = expand_inputs(args.images)
    daam = daam_args(args)
    model, bank = load_model(args)
    err = _prepare_out(args.out, args.overwrite)
    if err:
        raise UsageError(err)
    if not paths and not problems:
        raise UsageError("no input images")
    t0 = time.time()
    s = explain_files(paths, model, args.out, method=daam.method, target=args.target, bank=bank,
                      batch_size=args.batch_size, mode=args.mode, quiet=args.quiet, video=not args.no_video,
                      daam_options=daam.keywords())
    failed = [(d["path"], d["reason"]) for d in s["failed"]] + problems
    for p, r in failed:
        print(f"failed: {p}: {r}", file=sys.stderr)
    print(f"explained {len(s['explained'])}, failed {len(failed)} ({time.time() - t0:.1f} s) -> {args.out}")
    return EXIT_FAILED if failed else EXIT_OK


def add_cli(sub) -> None:
    """Register ``daam-fast explain``."""
    p = sub.add_parser("explain", help="explain image files (outputs per image: overlay, grid, GIF, MP4, npz)")
    p.add_argument("images", nargs="+", help="files, directories or glob patterns")
    add_model_args(p, batch_size=_D.batch_size)
    p.add_argument("--target", type=int, default=_D.target,
                   help="class to explain (default: each image's prediction)")
    p.add_argument("--out", required=True, help="output directory")
    add_overwrite(p, "replace the contents of an existing --out")
    add_mode(p, default_of(ExplainOptions, "mode"))
    p.add_argument("--no-video", action="store_true", help="skip flow.mp4")
    add_quiet(p)
    p.set_defaults(func=_cmd_explain)
