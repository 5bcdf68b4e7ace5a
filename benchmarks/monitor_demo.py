"""The monitor's demonstration: a shapes ViT learning a shortcut, beside a clean run (docs/monitor.md).

Trains the shapes ViT twice with the attention monitor (``daam_fast.zoo.train_shapes``): once
with the marker shortcut (``--shortcut marker``), once on clean data, same seed and schedule;
then prints the figures (first alert, mass in the marker's corner at the first and last
logged steps, accuracy on clean held-out pictures) and draws docs/monitor.png.

    .venv/bin/python benchmarks/monitor_demo.py --runs runs/demo --steps 400 --batch 32 --every 25
    .venv/bin/python benchmarks/monitor_demo.py --runs runs/demo --no-train   # figures of runs already made

Each run writes ``<runs>/<name>`` (the monitor's log folder) and ``<runs>/w_<name>`` (the weights,
whose metadata holds the clean accuracy).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from daam_fast.monitor import load_history  # noqa: E402

RUNS = (("marker", "marker"), ("clean", ""))


def figures(runs: str) -> dict:
    from safetensors import safe_open
    out = {}
    for name, _ in RUNS:
        h = load_history(os.path.join(runs, name))
        with safe_open(os.path.join(runs, f"w_{name}", "shapes_vit.safetensors"), framework="pt") as f:
            meta = f.metadata()
        corner = h.series("region/corner").mean(1)
        outside = 1 - h.series("mask_energy").mean(1)
        out[name] = {"history": h, "first_alert": h.alerts[0] if h.alerts else None, "alerts": len(h.alerts),
                     "corner": corner, "outside": outside, "accuracy": float(meta["accuracy"]), "eval": meta["eval"]}
    return out


def draw(fig_path: str, r: dict, images=(0, 1, 2, 3), corner_box=(0, 0, 8, 8)) -> None:
    """The figure: the corner's and the outside's mass over the steps for both runs, and D_L of
    a few probes (jet, each map min-max; the marker's corner dashed) at the
    first step, the first alert and the last step of the shortcut run, and the clean run's last."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.patches  # noqa: F401
    import matplotlib.pyplot as plt
    mk, cl = r["marker"], r["clean"]
    hm, hc = mk["history"], cl["history"]
    alert = mk["first_alert"]
    t_alert = hm.steps.index(alert.step) if alert else len(hm.steps) // 2
    cols = [("shortcut run", hm, 0), ("shortcut run", hm, t_alert), ("shortcut run", hm, len(hm) - 1),
            ("clean run", hc, len(hc) - 1)]
    fig = plt.figure(figsize=(9, 10.5), dpi=100)
    gs = fig.add_gridspec(1 + len(images), 5, height_ratios=[1.6] + [1] * len(images), hspace=0.6, wspace=0.08)
    for j, (key, title) in enumerate((("corner", "mass in the marker's corner (mean of 16 probes)"),
                                      ("outside", "mass outside the object masks (mean)"))):
        ax = fig.add_subplot(gs[0, 3:5] if j else gs[0, 0:2])
        ax.plot(hm.steps, mk[key].numpy(), "-o", ms=3, color="#d0312d", label="shortcut (--shortcut marker)")
        ax.plot(hc.steps, cl[key].numpy(), "-o", ms=3, color="#2f6fdb", label="clean")
        if alert:
            ax.axvline(alert.step, color="#d0312d", ls="--", lw=1)
            ax.text(alert.step, ax.get_ylim()[1], f" first alert, step {alert.step}", color="#d0312d", va="top",
                    fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.legend(fontsize=7, loc="lower right")
    for i, k in enumerate(images):
        ax = fig.add_subplot(gs[1 + i, 0])
        ax.imshow(hm.pictures[k].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.set_title("probe picture\n(marker top left)", fontsize=8)
    for c, (label, h, t) in enumerate(cols):
        for i, k in enumerate(images):
            ax = fig.add_subplot(gs[1 + i, 1 + c])
            H, W = h.pictures.shape[-2:]
            m = h.maps[t][k, -1].float()
            m = (m - m.min()) / (m.max() - m.min() + 1e-10)
            ax.imshow(m.numpy(), cmap="jet", extent=(0, W, H, 0), interpolation="nearest", vmin=0, vmax=1)
            ax.add_patch(matplotlib.patches.Rectangle((0, 0), corner_box[2], corner_box[3], fill=False, ec="white",
                                                      lw=1.5, ls="--"))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{label}\nstep {h.steps[t]}", fontsize=8)
    fig.suptitle("AttentionMonitor on the shapes ViT: D_L of probe pictures drawn like the training data", fontsize=10)
    fig.savefig(fig_path, bbox_inches="tight")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/monitor_demo")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-train", action="store_true", help="only the figures of runs already in --runs")
    ap.add_argument("--figure", default="docs/monitor.png")
    a = ap.parse_args(argv)
    if not a.no_train:
        from daam_fast.zoo.train_shapes import train
        for name, shortcut in RUNS:
            train(a.steps, a.batch, 1.5e-3, 0, os.path.join(a.runs, f"w_{name}"), a.threads, 1000, quiet=True,
                  shortcut=shortcut, monitor=os.path.join(a.runs, name), monitor_every=a.every)
    r = figures(a.runs)
    summary = {}
    for name, _ in RUNS:
        x = r[name]
        summary[name] = {"first_alert": str(x["first_alert"]) if x["first_alert"] else None, "alerts": x["alerts"],
                         "corner_first": round(float(x["corner"][0]), 4), "corner_last": round(float(x["corner"][-1]), 4),
                         "steps": [x["history"].steps[0], x["history"].steps[-1]],
                         "clean_accuracy": x["accuracy"], "eval": x["eval"]}
    print(json.dumps(summary, indent=1))
    if a.figure:
        draw(a.figure, r)
        print(f"figure: {a.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
