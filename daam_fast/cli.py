"""``daam-fast``: explain images, run the demo, build memory banks, and more (see docs/cli.md)."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
from typing import List, Optional

import numpy as np
import torch

__all__ = ["main", "add_model_args", "model_from_args", "daam_options"]

# Sub-commands contributed by other modules: each exposes add_cli(subparsers).
PLUGINS = ("daam_fast.bench", "daam_fast.video", "daam_fast.evaluate", "daam_fast.distributed")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model options shared by every sub-command that explains something."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="shipped model (shapes_vit [default], shapes_vit_ssl), a timm name, "
                   "or dino / dinov2 (with --checkpoint: the original .pth)")
    g.add_argument("--checkpoint", default=None, help="weights (.safetensors/.pt/.pth) for --model, or a zoo file")
    g.add_argument("--pretrained", action="store_true", help="download timm's pretrained weights (needs network)")
    g.add_argument("--random-weights", action="store_true", help="timm model with random weights (testing only)")
    g.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    g.add_argument("--method", default="grad", choices=["grad", "direct"],
                   help="grad: the paper's exact coefficients; direct: forward-only approximation")
    g.add_argument("--bank", default=None, help="memory bank (.pt) for a model without a head")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--activation-checkpointing", action="store_true",
                   help="grad: recompute each block in the backward (less memory, about +0.7x time)")
    g.add_argument("--compile", action="store_true", help="torch.compile the blocks (first batch compiles; for GPUs)")


def daam_options(args) -> dict:
    """DAAM keyword options from the shared model arguments (--activation-checkpointing, --compile)."""
    opts = {}
    if getattr(args, "activation_checkpointing", False):
        if getattr(args, "method", "grad") != "grad":
            raise ValueError("--activation-checkpointing applies to --method grad")
        opts["checkpoint"] = True
    if getattr(args, "compile", False):
        opts["compile"] = True
    return opts


def model_from_args(args):
    from .models import load_model_spec
    return load_model_spec(args.model, args.checkpoint, args.pretrained, args.random_weights, args.device)


def _bank_from_args(args, model):
    from .bank import MemoryBank
    from . import zoo
    if args.bank:
        return MemoryBank.load(args.bank)
    name = getattr(model, "daam_name", None)
    if name == "shapes_vit_ssl":
        return zoo.load_bank(name)
    return None


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


def explain_files(paths: List[str], model, out: str, method: str = "grad", target: Optional[int] = None,
                  bank=None, batch_size: int = 16, mode: str = "nonlinear", quiet: bool = False,
                  video: bool = True, daam_options: Optional[dict] = None) -> dict:
    """Explain image files and write, per image, overlay.png, grid.png, flow.gif, flow.mp4 and maps.npz
    into ``out/<stem>/``. ``daam_options``: extra :class:`DAAM` keywords (checkpoint, compile).
    Returns a summary: {"explained": [...], "failed": [(path, reason), ...]}."""
    from tqdm import tqdm
    from . import DAAM, render
    from .io import ImageReadError, read_image
    from .models import class_names
    from .preprocess import input_spec, prepare
    from .viz import display_size, save_gif, save_grid, save_mp4, save_png

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
    from .io import expand_inputs
    from .models import ModelLoadError
    paths, problems = expand_inputs(args.images)
    try:
        opts = daam_options(args)
        model = model_from_args(args)
    except (ModelLoadError, ValueError, FileNotFoundError) as e:
        print(f"daam-fast: {e}", file=sys.stderr)
        return 2
    err = _prepare_out(args.out, args.overwrite)
    if err:
        print(f"daam-fast: {err}", file=sys.stderr)
        return 2
    if not paths and not problems:
        print("daam-fast: no input images", file=sys.stderr)
        return 2
    bank = _bank_from_args(args, model)
    t0 = time.time()
    s = explain_files(paths, model, args.out, method=args.method, target=args.target, bank=bank,
                      batch_size=args.batch_size, mode=args.mode, quiet=args.quiet, video=not args.no_video,
                      daam_options=opts)
    failed = [(d["path"], d["reason"]) for d in s["failed"]] + problems
    for p, r in failed:
        print(f"failed: {p}: {r}", file=sys.stderr)
    print(f"explained {len(s['explained'])}, failed {len(failed)} ({time.time() - t0:.1f} s) -> {args.out}")
    return 1 if failed else 0


def _cmd_demo(args) -> int:
    """Generated shapes explained with the shipped model, supervised and self-supervised."""
    from . import DAAM, render, zoo
    from .zoo.shapes import CLASSES, make_shapes, save_pngs
    out = args.out
    os.makedirs(out, exist_ok=True)
    for sub in ("inputs", "supervised", "self_supervised"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    batch = make_shapes(args.num_images, seed=args.seed)
    paths = save_pngs(batch, os.path.join(out, "inputs"), masks=True)
    paths = [p for p in paths]
    model = zoo.load_model("shapes_vit")
    info = zoo.model_info("shapes_vit")
    q = args.quiet
    s1 = explain_files(paths, model, os.path.join(out, "supervised"), method="grad", quiet=q)
    ssl = zoo.load_model("shapes_vit_ssl")
    s2 = explain_files(paths, ssl, os.path.join(out, "self_supervised"), bank=zoo.load_bank("shapes_vit"), quiet=q)
    # one figure for the README: each image's attention flow (supervised) and final maps
    from .preprocess import input_spec, prepare
    x, rgb = prepare(batch.images, input_spec(model))
    with DAAM(model) as daam:
        res = daam(x)
    with DAAM(ssl) as daam:
        res_ssl = daam(x, bank=zoo.load_bank("shapes_vit"))
    big = torch.nn.functional.interpolate(rgb.float(), scale_factor=3, mode="nearest").to(torch.uint8)
    flow = render(res.maps, images=big)                                   # (B, L, H, W, 3)
    final_ssl = render(res_ssl.maps[:, -1:], images=big)[:, 0]
    _demo_figure(big, flow, final_ssl, res, res_ssl, [CLASSES[int(t)] for t in batch.labels], CLASSES,
                 os.path.join(out, "demo.png"), info)
    fails = len(s1["failed"]) + len(s2["failed"])
    print(f"demo: shipped model shapes_vit (test accuracy {100 * float(info['accuracy']):.1f} %), "
          f"{len(paths)} generated images")
    print(f"  inputs:           {os.path.join(out, 'inputs')}")
    print(f"  supervised:       {os.path.join(out, 'supervised')}/<image>/overlay.png grid.png flow.gif flow.mp4 maps.npz")
    print(f"  self-supervised:  {os.path.join(out, 'self_supervised')}/<image>/... (memory bank k-NN weights)")
    print(f"  overview figure:  {os.path.join(out, 'demo.png')}")
    return 1 if fails else 0


def _demo_figure(images, flow, final_ssl, res, res_ssl, truth, classes, path, info) -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    B, L = flow.shape[:2]
    cols = L + 2
    fig, axes = plt.subplots(B, cols, figsize=(1.6 * cols, 1.7 * B + 0.6), squeeze=False)
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
    plt.close(fig)


def _cmd_bank_build(args) -> int:
    """Features of the images under IMG_DIR (labels = sub-folder names) -> MemoryBank file."""
    from tqdm import tqdm
    from .bank import MemoryBank
    from .io import ImageReadError, expand_inputs, read_image
    from .models import ModelLoadError, load_model_spec
    from .preprocess import input_spec, prepare
    try:
        model = load_model_spec(args.model, args.checkpoint, args.pretrained, args.random_weights, args.device,
                                headless=True)
    except (ModelLoadError, ValueError, FileNotFoundError) as e:
        print(f"daam-fast: {e}", file=sys.stderr)
        return 2
    paths, problems = expand_inputs([args.img_dir])
    root = os.path.abspath(args.img_dir)
    folders = sorted({os.path.relpath(os.path.dirname(os.path.abspath(p)), root) for p in paths})
    if len(folders) < 2 and not args.labels_from_names:
        print("daam-fast: bank build needs IMG_DIR/<class>/<image> (at least 2 class folders), "
              "or --labels-from-names to take the last _token of each file name as the label", file=sys.stderr)
        return 2
    labels_map: dict = {}
    spec = input_spec(model)
    feats, labels, failed = [], [], list(problems)
    with torch.no_grad():
        for s in tqdm(range(0, len(paths), args.batch_size), desc="bank features", unit="batch", disable=args.quiet):
            pics, labs = [], []
            for p in paths[s:s + args.batch_size]:
                key = (os.path.splitext(os.path.basename(p))[0].rsplit("_", 1)[-1] if args.labels_from_names
                       else os.path.relpath(os.path.dirname(os.path.abspath(p)), root))
                try:
                    pics.append(read_image(p, max_side=4 * max(spec.size)))
                    labs.append(labels_map.setdefault(key, len(labels_map)))
                except ImageReadError as e:
                    failed.append((p, str(e)))
            if pics:
                x, _ = prepare(pics, spec, device=next(model.parameters()).device)
                feats.append(model(x).float().cpu())
                labels += labs
    if not feats:
        print("daam-fast: no readable images", file=sys.stderr)
        return 2
    bank = MemoryBank.from_features(torch.cat(feats), torch.tensor(labels), k=args.k, temperature=args.temperature)
    bank.save(args.out)
    with open(os.path.splitext(args.out)[0] + "_labels.json", "w") as f:
        json.dump({v: k for k, v in labels_map.items()}, f, indent=1)
    for p, r in failed:
        print(f"failed: {p}: {r}", file=sys.stderr)
    print(f"bank: {len(labels)} features of dim {bank.dim}, {len(labels_map)} classes -> {args.out}; failed {len(failed)}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="daam-fast", description="Dynamic Accumulated Attention Maps for ViTs, fast.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("explain", help="explain image files (outputs per image: overlay, grid, GIF, MP4, npz)")
    p.add_argument("images", nargs="+", help="files, directories or glob patterns")
    add_model_args(p)
    p.add_argument("--target", type=int, default=None, help="class to explain (default: each image's prediction)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of an existing --out")
    p.add_argument("--mode", default="nonlinear", choices=["nonlinear", "linear", "raw"], help="rendering")
    p.add_argument("--no-video", action="store_true", help="skip flow.mp4")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("demo", help="explain generated shapes with the shipped model -> daam_out/")
    p.add_argument("--out", default="daam_out")
    p.add_argument("--num-images", type=int, default=6)
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("bank", help="memory banks for self-supervised models")
    bsub = p.add_subparsers(dest="bank_command", metavar="ACTION")
    b = bsub.add_parser("build", help="features of IMG_DIR/<class>/<image> -> bank.pt")
    b.add_argument("img_dir")
    add_model_args(b)
    b.add_argument("--out", required=True)
    b.add_argument("--k", type=int, default=20)
    b.add_argument("--temperature", type=float, default=0.07)
    b.add_argument("--labels-from-names", action="store_true", help="label = last _token of each file name")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_cmd_bank_build)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    unavailable = []
    for mod in PLUGINS:
        try:
            importlib.import_module(mod).add_cli(sub)
        except ImportError as e:
            unavailable.append(f"{mod.rsplit('.', 1)[-1]} ({e})")
    if unavailable:
        ap.epilog = "unavailable sub-commands: " + "; ".join(unavailable)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
