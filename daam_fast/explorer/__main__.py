"""A demo page from the shipped model: ``python -m daam_fast.explorer out.html``.

Explains shapes images with ``shapes_vit`` (top-2 classes, per-head maps where the explainer
records them) by DAAM grad, DAAM direct and attention rollout, and writes the explorer page.
The README's screenshot (docs/explorer.png) is this page, image 1, threshold 0.6.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(prog="python -m daam_fast.explorer", description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the .html file to write")
    ap.add_argument("--images", type=int, default=8, help="number of shapes images (default 8)")
    ap.add_argument("--seed", type=int, default=3, help="seed of the shapes images (default 3)")
    ap.add_argument("--side", type=int, default=256, help="display size of the pictures in pixels (default 256)")
    a = ap.parse_args(argv)

    from .. import baselines
    from ..explainer import DAAM
    from ..preprocess import prepare
    from ..targets import TopK
    from ..zoo import CLASSES, load_model
    from ..zoo.shapes import make_shapes
    from . import explore

    model = load_model("shapes_vit")
    data = make_shapes(a.images, seed=a.seed)
    x, rgb = prepare(list(data.images), model)
    results = {}
    for method in ("grad", "direct"):
        results[method] = DAAM(model, method=method, heads=True)(x, target=TopK(2))
    results["rollout"] = baselines.explain(model, x, "rollout", target=TopK(2))
    pics = F.interpolate(rgb.float(), size=(a.side, a.side), mode="bicubic", align_corners=False)
    pics = pics.round().clamp(0, 255).to(torch.uint8)
    path = explore(results["grad"], pics, a.out, methods={k: v for k, v in results.items() if k != "grad"},
                   class_names=list(CLASSES), names=[f"shapes #{i}" for i in range(a.images)],
                   title="daam_fast explorer: shapes_vit")
    print(path)
    return path


if __name__ == "__main__":
    main()
