"""``daam-fast bank build IMG_DIR --out bank.pt``: a memory bank of features for self-supervised models."""
from __future__ import annotations

import json
import os

import torch

from .options import EXIT_USAGE, UsageError, add_model_args, add_quiet, default_param, finish, load_model

__all__ = ["add_cli"]


def _cmd_bank_build(args) -> int:
    """Features of the images under IMG_DIR (labels = sub-folder names) -> MemoryBank file."""
    from tqdm import tqdm
    from ..bank import MemoryBank
    from ..io import ImageReadError, expand_inputs, read_image
    from ..preprocess import input_spec, prepare
    model, _ = load_model(args, headless=True)
    paths, problems = expand_inputs([args.img_dir])
    root = os.path.abspath(args.img_dir)
    folders = sorted({os.path.relpath(os.path.dirname(os.path.abspath(p)), root) for p in paths})
    if len(folders) < 2 and not args.labels_from_names:
        raise UsageError("bank build needs IMG_DIR/<class>/<image> (at least 2 class folders), "
                         "or --labels-from-names to take the last _token of each file name as the label")
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
        raise UsageError("no readable images")
    bank = MemoryBank.from_features(torch.cat(feats), torch.tensor(labels), k=args.k, temperature=args.temperature)
    bank.save(args.out)
    with open(os.path.splitext(args.out)[0] + "_labels.json", "w") as f:
        json.dump({v: k for k, v in labels_map.items()}, f, indent=1)
    return finish(failed, f"bank: {len(labels)} features of dim {bank.dim}, {len(labels_map)} classes -> {args.out}; "
                          f"failed {len(failed)}")


def add_cli(sub) -> None:
    """Register ``daam-fast bank build``."""
    from ..bank import MemoryBank
    p = sub.add_parser("bank", help="memory banks for self-supervised models")
    bsub = p.add_subparsers(dest="bank_command", metavar="ACTION")
    b = bsub.add_parser("build", help="features of IMG_DIR/<class>/<image> -> bank.pt")
    b.add_argument("img_dir")
    add_model_args(b, bank=False, daam=False)
    b.add_argument("--out", required=True)
    b.add_argument("--k", type=int, default=default_param(MemoryBank.from_features, "k"))
    b.add_argument("--temperature", type=float, default=default_param(MemoryBank.from_features, "temperature"))
    b.add_argument("--labels-from-names", action="store_true", help="label = last _token of each file name")
    add_quiet(b)
    b.set_defaults(func=_cmd_bank_build)
    p.set_defaults(func=lambda a: (p.print_help(), EXIT_USAGE)[1])
