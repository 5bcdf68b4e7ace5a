"""How faithful is method="direct" to method="grad"? Spearman correlation of the final map D_L.

    .venv/bin/python benchmarks/direct_fidelity.py                 # shipped shapes model, 64 images
    .venv/bin/python benchmarks/direct_fidelity.py --model deit_small_patch16_224 --num-images 64

Prints the mean (and quartiles) over images of Spearman's rho between direct's and grad's
D_L, and the same per block for D_b, so the README reports it as measured, never assumed.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch
from scipy.stats import spearmanr

from daam_fast import DAAM


def load(name: str):
    if name == "shapes_vit":
        from daam_fast.zoo import load_model
        from daam_fast.zoo.shapes import make_shapes
        from daam_fast.preprocess import input_spec, prepare
        model = load_model(name)
        return model, lambda n: prepare(make_shapes(n, seed=12345).images, input_spec(model))[0]
    import timm
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    H, W = model.patch_embed.img_size
    return model, lambda n: torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(7))


def rho(a: torch.Tensor, b: torch.Tensor) -> float:
    r = spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic
    return float("nan") if r != r else float(r)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes_vit")
    ap.add_argument("--num-images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    model, images = load(a.model)
    x = images(a.num_images)
    grads, directs = [], []
    g, d = DAAM(model, method="grad"), DAAM(model, method="direct")
    for i in range(0, len(x), a.batch_size):
        xb = x[i:i + a.batch_size]
        grads.append(g(xb).maps)
        directs.append(d(xb).maps)
    G, D = torch.cat(grads), torch.cat(directs)
    final = [rho(D[i, -1], G[i, -1]) for i in range(len(G))]
    final = [r for r in final if r == r]
    q = statistics.quantiles(final, n=4)
    print(f"{a.model}, {len(G)} images: Spearman rho(direct D_L, grad D_L) mean {statistics.mean(final):.3f}, "
          f"median {statistics.median(final):.3f}, quartiles {q[0]:.3f} / {q[2]:.3f}, min {min(final):.3f}")
    per_block = []
    for b in range(G.shape[1]):
        rs = [rho(D[i, b], G[i, b]) for i in range(len(G))]
        rs = [r for r in rs if r == r]
        per_block.append(statistics.mean(rs) if rs else float("nan"))
    print("per block (D_b): " + " ".join(f"{r:.2f}" for r in per_block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
