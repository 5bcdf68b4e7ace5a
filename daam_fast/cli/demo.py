"""``daam-fast demo``: generated shapes explained with the shipped model, supervised and self-supervised."""
from __future__ import annotations

import importlib.util
import os
import shutil

import torch

from .._extras import MissingExtra, install_hint, require
from .explain import explain_files
from .options import EXIT_FAILED, EXIT_OK, add_quiet

__all__ = ["add_cli"]


def _cmd_demo(args) -> int:
    """Generated shapes explained with the shipped model, supervised and self-supervised."""
    from .. import DAAM, render, zoo
    from ..targets import BankTarget
    from ..zoo.shapes import CLASSES, make_shapes, save_pngs
    out = args.out
    os.makedirs(out, exist_ok=True)
    for sub in ("inputs", "supervised", "self_supervised"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    batch = make_shapes(args.num_images, seed=args.seed)
    paths = save_pngs(batch, os.path.join(out, "inputs"), masks=True)
    model = zoo.load_model("shapes_vit")
    info = zoo.model_info("shapes_vit")
    q = args.quiet
    every = ["overlay", "maps", "grid", "gif", "mp4"]          # a handful of images: every per-image output
    skipped = []
    if importlib.util.find_spec("av") is None:                  # the core alone: no MP4s
        every.remove("mp4")
        skipped.append(f"mp4 (needs av: {install_hint('video')})")
    every = ",".join(every)
    s1 = explain_files(paths, model, os.path.join(out, "supervised"), method="grad", quiet=q, outputs=every)
    ssl = zoo.load_model("shapes_vit_ssl")
    s2 = explain_files(paths, ssl, os.path.join(out, "self_supervised"), bank=zoo.load_bank("shapes_vit"), quiet=q,
                       outputs=every)
    # one figure for the README: each image's attention flow (supervised) and final maps
    from ..preprocess import input_spec, prepare
    x, rgb = prepare(batch.images, input_spec(model))
    with DAAM(model) as daam:
        res = daam(x)
    with DAAM(ssl) as daam:
        res_ssl = daam(x, target=BankTarget(zoo.load_bank("shapes_vit")))
    big = torch.nn.functional.interpolate(rgb.float(), scale_factor=3, mode="nearest").to(torch.uint8)
    flow = render(res.maps, images=big)                                   # (B, L, H, W, 3)
    final_ssl = render(res_ssl.maps[:, -1:], images=big)[:, 0]
    figure = os.path.join(out, "demo.png")
    try:
        _demo_figure(big, flow, final_ssl, res, res_ssl, [CLASSES[int(t)] for t in batch.labels], CLASSES,
                     figure, info)
    except MissingExtra as e:
        figure = f"skipped ({e})"
    fails = len(s1["failed"]) + len(s2["failed"])
    print(f"demo: shipped model shapes_vit (test accuracy {100 * float(info['accuracy']):.1f} %), "
          f"{len(paths)} generated images")
    print(f"  inputs:           {os.path.join(out, 'inputs')}")
    sup = os.path.join(out, "supervised")
    files = s1["explained"][0]["files"] if s1["explained"] else []
    stem = os.path.splitext(os.path.basename(s1["explained"][0]["path"]))[0] if files else ""
    print(f"  supervised:       {sup}/" + " ".join(f.replace(stem, "<image>") for f in files) + " maps/")
    print(f"  self-supervised:  {os.path.join(out, 'self_supervised')}/... (memory bank k-NN weights)")
    print(f"  overview figure:  {figure}")
    for s in skipped:
        print(f"  skipped:          {s}")
    return EXIT_FAILED if fails else EXIT_OK


def _demo_figure(images, flow, final_ssl, res, res_ssl, truth, classes, path, info) -> None:
    Figure = require("matplotlib.figure", "the overview figure").Figure      # no pyplot state
    B, L = flow.shape[:2]
    cols = L + 2
    fig = Figure(figsize=(1.6 * cols, 1.7 * B + 0.6))
    axes = fig.subplots(B, cols, squeeze=False)
    for i in range(B):
        panels = [images[i].permute(1, 2, 0)] + [flow[i, b] for b in range(L)] + [final_ssl[i]]
        pred = classes[int(res.targets[i])]
        titles = [f"{truth[i]}"] + [f"D_{b + 1}" for b in range(L)] + ["self-sup. D_L"]
        for j, (ax, p, t) in enumerate(zip(axes[i], panels, titles)):
            ax.imshow(p.numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0 or j == 0:
                ax.set_title(t if i == 0 or j == 0 else "", fontsize=8)
        axes[i, 0].set_ylabel(f"pred: {pred}", fontsize=8)
    fig.suptitle("DAAM attention flow (D_1 ... D_L, accumulated over blocks) on the shipped shapes ViT", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def add_cli(sub) -> None:
    """Register ``daam-fast demo``."""
    p = sub.add_parser("demo", help="explain generated shapes with the shipped model -> daam_out/")
    p.add_argument("--out", default="daam_out")
    p.add_argument("--num-images", type=int, default=6)
    p.add_argument("--seed", type=int, default=2025)
    add_quiet(p)
    p.set_defaults(func=_cmd_demo)
