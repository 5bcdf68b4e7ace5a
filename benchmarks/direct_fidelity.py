"""How faithful are the forward-only methods ("direct", "row") to the exact "grad"?

    .venv/bin/python benchmarks/direct_fidelity.py                        # the three models below
    .venv/bin/python benchmarks/direct_fidelity.py --models shapes_vit --num-images 128
    .venv/bin/python benchmarks/direct_fidelity.py --json fidelity.json

Models: the shipped, trained ``shapes_vit`` (daam_fast.zoo), and the same network headless
(``shapes_vit_ssl``) explained with its shipped memory bank (dimension-wise weights,
docs/method.md §4); a random-weight
``deit_small_patch16_224``; and ``dino_vits16``, the DINO ViT-S/16 layout (timm
``vit_small_patch16_224`` without a head, random weights), explained self-supervised with
the label-free weights (docs/method.md §4). Inputs: generated shapes pictures
(daam_fast.zoo.shapes), prepared at each model's input size.

For each method and image it compares the method's maps with grad's: Spearman's rho of the
final map D_L (mean, median, quartiles, min over images), the share of images whose hottest
patch is the same, the relative L2 error ||D_L - D_L(grad)|| / ||D_L(grad)||, and per block the mean rho of the block maps L_b and of the accumulated
maps D_b. It also prints, per block, the mean attention the patch queries pay to the [class]
token, A_b[j, 0] for j >= P: the weight of the paths "row" drops (docs/method.md §8; 1/N
would be uniform). A map that is constant (e.g. all zero after the ReLU) has no rank correlation;
such pairs are left out and counted ("undefined"). The README and benchmarks/NOTES.md quote
these figures as measured, never assumed (docs/method.md §7, §8).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Dict, List

import torch
from scipy.stats import spearmanr

from daam_fast import DAAM

MODELS = ("shapes_vit", "shapes_vit_ssl", "deit_small_patch16_224", "dino_vits16")
METHODS = ("direct", "row")


def load(name: str):
    """(model, pictures -> normalised input, keyword arguments of each call)."""
    from daam_fast.preprocess import input_spec, prepare
    kw = {}
    if name in ("shapes_vit", "shapes_vit_ssl"):
        from daam_fast.zoo import load_bank, load_model
        model = load_model(name)
        if name.endswith("_ssl"):
            kw["bank"] = load_bank(name)
    else:
        import timm
        torch.manual_seed(0)
        if name == "dino_vits16":                     # DINO's ViT-S/16 layout, headless
            model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
        else:
            model = timm.create_model(name, pretrained=False)
    model.eval()
    spec = input_spec(model)
    return model, lambda pictures: prepare(pictures, spec)[0], kw


def cls_attention_of_patches(model, x: torch.Tensor):
    """(per block, the mean over images, heads and patch queries of A_b[j, 0] (j >= P); N tokens)."""
    import torch.nn.functional as F
    from daam_fast._session import frozen, patched
    from daam_fast.adapters import get_adapter
    adapter = get_adapter(model)
    P, sums, tokens = adapter.num_prefix, [0.0] * adapter.depth, [0]

    def make_core(b):
        def core(u, rows, ctx):
            q, k, v = adapter.qkv(b, u, rows, ctx)
            bias = adapter.attn_bias(b, ctx)
            logits = (q @ k.transpose(-2, -1)) * adapter.scale(b)
            if bias is not None:
                logits = logits + bias[:, :, :q.shape[2]]
            A = logits.softmax(dim=-1)
            sums[b] += float(A[:, :, P:, 0].mean()) * u.shape[0]
            tokens[0] = k.shape[2]
            T = (A @ v).transpose(1, 2).reshape(u.shape[0], q.shape[2], -1)
            return adapter.attn_out(b, T, u, rows)
        return core

    with torch.no_grad(), frozen(model), patched(adapter, make_core):
        adapter.run(x)
    return [t / len(x) for t in sums], tokens[0]


def rho(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    if a.max() == a.min() or b.max() == b.min():
        return float("nan")
    return float(spearmanr(a.numpy(), b.numpy()).statistic)


def summary(values: List[float]) -> Dict[str, float]:
    ok = [v for v in values if v == v]
    if len(ok) < 2:
        return dict(mean=float("nan"), n=len(ok), undefined=len(values) - len(ok))
    q = statistics.quantiles(ok, n=4)
    return dict(mean=statistics.mean(ok), median=statistics.median(ok), q1=q[0], q3=q[2], min=min(ok), n=len(ok),
                undefined=len(values) - len(ok))


def compare(model, x: torch.Tensor, batch: int, **kw) -> Dict[str, dict]:
    """Maps of grad and of each forward-only method on x; the fidelity figures per method."""
    outs = {m: [] for m in ("grad",) + METHODS}
    for method in outs:
        d = DAAM(model, method=method)
        with d:
            for i in range(0, len(x), batch):
                res = d(x[i:i + batch], **kw)
                outs[method].append((res.block_maps, res.maps))
    G_L = torch.cat([o[0] for o in outs["grad"]])
    G_D = torch.cat([o[1] for o in outs["grad"]])
    n, L = G_D.shape[:2]
    report = {}
    for method in METHODS:
        M_L = torch.cat([o[0] for o in outs[method]])
        M_D = torch.cat([o[1] for o in outs[method]])
        final = [rho(M_D[i, -1], G_D[i, -1]) for i in range(n)]
        top1 = [int(M_D[i, -1].flatten().argmax() == G_D[i, -1].flatten().argmax()) for i in range(n)]
        err = [float((M_D[i, -1] - G_D[i, -1]).norm() / G_D[i, -1].norm().clamp_min(1e-30)) for i in range(n)]
        report[method] = dict(
            final=summary(final), top1=100.0 * sum(top1) / n, rel_err=summary(err),
            block_L=[summary([rho(M_L[i, b], G_L[i, b]) for i in range(n)]) for b in range(L)],
            block_D=[summary([rho(M_D[i, b], G_D[i, b]) for i in range(n)]) for b in range(L)])
    return report


def show(name: str, n: int, report: Dict[str, dict], sink: List[float], tokens: int) -> None:
    print(f"\n{name}, {n} images: Spearman rho to grad per image")
    print("| method | D_L mean | median | quartiles | min | same top-1 patch | undefined | rel. L2 error of D_L (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for method, r in report.items():
        f = r["final"]
        print(f"| {method} | {f['mean']:.4f} | {f.get('median', float('nan')):.4f} | {f.get('q1', float('nan')):.4f} / "
              f"{f.get('q3', float('nan')):.4f} | {f.get('min', float('nan')):.4f} | {r['top1']:.0f} % | {f['undefined']} | "
              f"{r['rel_err'].get('median', float('nan')):.2g} |")
    for method, r in report.items():
        print(f"{method:>6} per block, L_b: " + " ".join(f"{s['mean']:.3f}" for s in r["block_L"]))
        print(f"{method:>6} per block, D_b: " + " ".join(f"{s['mean']:.3f}" for s in r["block_D"]))
    print(f"mean attention of patch queries to [class] per block (uniform: 1/N = {1 / tokens:.4f}): "
          + " ".join(f"{a:.4f}" for a in sink))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)} "
                    "or any timm model name (random weights)")
    ap.add_argument("--num-images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from daam_fast.zoo.shapes import make_shapes
    pictures = make_shapes(a.num_images, seed=12345).images
    out = {}
    for name in a.models.split(","):
        model, prep, kw = load(name)
        x = prep(pictures)
        report = compare(model, x, a.batch_size, **kw)
        sink, tokens = cls_attention_of_patches(model, x[:a.batch_size])
        report["cls_attention_of_patches"] = sink
        show(name, a.num_images, {m: report[m] for m in METHODS}, sink, tokens)
        out[name] = report
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
