"""What an evaluation runs: the method keys (DAAM's generated from the explainer's method table),
the table rows, :class:`EvalConfig` (every default typed once) and the report's file names."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict


def _daam_key(method: str) -> str:
    """Eval key of a DAAM method: "daam" for the paper's "grad", the method's own name otherwise."""
    return "daam" if method == "grad" else method


def _daam_methods() -> Dict[str, str]:
    from ..explainer import METHODS as _EXPLAINER_METHODS
    return {_daam_key(m): m for m in _EXPLAINER_METHODS}


# eval key -> DAAM method, in the explainer's order ("daam" -> "grad", "direct" -> "direct", ...):
# a method added to the explainer's table is evaluated without other edits.
DAAM_METHODS: Dict[str, str] = _daam_methods()
BASELINE_METHODS = ("rollout", "grad_rollout", "attention", "gradcam")
METHODS = tuple(DAAM_METHODS) + BASELINE_METHODS + ("random",)
DEFAULT_METHODS = tuple(m for m in METHODS if m != "random")
LABELS = {**{k: ("DAAM (grad)" if m == "grad" else f"DAAM {m}") for k, m in DAAM_METHODS.items()},
          "rollout": "rollout", "grad_rollout": "grad rollout", "attention": "attention", "gradcam": "Grad-CAM",
          "random": "random"}
# DAAM options that only apply to "grad" (dropped for the other DAAM methods of one run)
GRAD_ONLY_OPTIONS = ("activation_checkpointing",)
# key, row label, scale for the table, whether it needs masks
ROWS = (
    ("deletion", "Deletion AUC (lower is better)", 1.0, False),
    ("insertion", "Insertion AUC (higher is better)", 1.0, False),
    ("avg_drop", "Average drop % (lower is better)", 100.0, False),
    ("increase", "Increase in confidence % (higher is better)", 100.0, False),
    ("pointing", "Pointing game % (higher is better)", 100.0, True),
    ("energy", "Energy pointing game (higher is better)", 1.0, True),
    ("max_box_acc", "MaxBoxAccV2 % (higher is better)", 100.0, True),
    ("pxap", "PxAP, pixel average precision (higher is better)", 1.0, True),
    ("randomisation", "Randomisation: Spearman to the original map, all layers random (lower is better)", 1.0, False),
    ("randomisation_ssim", "Randomisation: SSIM, all layers random (lower is better)", 1.0, False),
    ("randomisation_topk", "Randomisation: top-k intersection, all layers random (lower is better)", 1.0, False),
    ("randomisation_independent", "Randomisation: Spearman, one layer random, mean over layers (lower is better)",
     1.0, False),
    ("max_sensitivity", "Max-sensitivity (lower is better)", 1.0, False),
    ("local_lipschitz", "Local Lipschitz estimate (lower is better)", 1.0, False),
    ("stability", "Stability: Spearman under brightness / contrast (higher is better)", 1.0, False),
    ("sparseness", "Sparseness, Gini index (higher is sparser)", 1.0, False),
    ("complexity", "Complexity, entropy (lower is simpler)", 1.0, False),
)
# --metrics groups and the table rows each one fills
METRIC_GROUPS = {
    "faithfulness": ("deletion", "insertion", "avg_drop", "increase"),
    "localisation": ("pointing", "energy"),
    "boxes": ("max_box_acc", "pxap"),
    "randomisation": ("randomisation", "randomisation_ssim", "randomisation_topk", "randomisation_independent"),
    "robustness": ("max_sensitivity", "local_lipschitz", "stability"),
    "complexity": ("sparseness", "complexity"),
}
ALL_METRICS = ",".join(METRIC_GROUPS)


def metric_groups(spec: str) -> tuple:
    """The groups named in a comma-separated ``--metrics`` value ("all": every group), in table order."""
    names = [m.strip() for m in str(spec).split(",") if m.strip()]
    if names == ["all"]:
        names = list(METRIC_GROUPS)
    bad = [m for m in names if m not in METRIC_GROUPS]
    if bad or not names:
        raise ValueError(f"unknown metric group(s) {', '.join(bad) or '(none given)'}; choose from "
                         f"{', '.join(METRIC_GROUPS)} (or all)")
    return tuple(m for m in METRIC_GROUPS if m in names)

OUTPUT_FILES = ("results.md", "results.json", "eval.png", "randomisation.png", "per_image.csv")


@dataclass
class EvalConfig:
    """Options of one evaluation (every method gets the same).

    Attributes:
        steps: deletion / insertion steps.  order: "pixel" or "patch".
        baseline: what deleted (or not yet inserted) pixels become: "blur", "mean", "zero".
        drop_baseline: the baseline of average drop / increase ("zero": x' = E x).
        batch_size: images explained per call.  perturb_batch: perturbed images per forward.
        tolerance: pointing-game tolerance in pixels.
        rollout_discard, rollout_fusion: rollout options.  seed: the "random" method's seed.
        metrics: comma-separated groups from :data:`METRIC_GROUPS` (default: all).
        box_thresholds: map thresholds of MaxBoxAccV2 and PxAP (0, 1/T, ..., (T-1)/T).
        noise_samples, noise_sigma: Gaussian input noise of max-sensitivity / local Lipschitz
            (samples per image, std in model-input units).
        topk: share of the map's cells compared by the randomisation test's top-k intersection.
    """

    steps: int = 16
    order: str = "pixel"
    baseline: str = "blur"
    drop_baseline: str = "zero"
    batch_size: int = 16
    perturb_batch: int = 256
    tolerance: float = 0.0
    rollout_discard: float = 0.9
    rollout_fusion: str = "mean"
    seed: int = 0
    metrics: str = ALL_METRICS
    box_thresholds: int = 100
    noise_samples: int = 8
    noise_sigma: float = 0.1
    topk: float = 0.1


EVAL_DEFAULTS = EvalConfig()
EVAL_FIELDS = tuple(f.name for f in dataclasses.fields(EvalConfig))
