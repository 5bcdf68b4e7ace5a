"""What an evaluation runs: the method names (DAAM's are the explainer's method table), the table
rows, :class:`EvalOptions` (every default typed once; the ``daam-fast eval`` flags are derived from
it) and the report's file names."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence, Tuple

from ..baselines import HEAD_FUSIONS
from ..explainer import METHODS as _EXPLAINER_METHODS
from ..metrics import BASELINES as _PIXEL_BASELINES
from ..metrics import ORDERS

# The DAAM methods, in the explainer's order ("grad", "direct", ...): a method added to the
# explainer's table is evaluated without other edits.
DAAM_METHODS: Tuple[str, ...] = tuple(_EXPLAINER_METHODS)
BASELINE_METHODS = ("rollout", "grad_rollout", "attention", "gradcam")
METHODS = DAAM_METHODS + BASELINE_METHODS + ("random",)
DEFAULT_METHODS = tuple(m for m in METHODS if m != "random")
# names that were renamed: old -> new
RENAMED_METHODS = {"daam": "grad"}
LABELS = {**{m: ("DAAM (grad)" if m == "grad" else f"DAAM {m}") for m in DAAM_METHODS},
          "rollout": "rollout", "grad_rollout": "grad rollout", "attention": "attention", "gradcam": "Grad-CAM",
          "random": "random"}
# DAAM options that only apply to "grad" (dropped for the other DAAM methods of one run)
GRAD_ONLY_OPTIONS = ("activation_checkpointing",)


def check_methods(methods: Sequence[str]) -> Tuple[str, ...]:
    """``methods`` as a tuple, checked: each one of :data:`METHODS`, at least one.

    Raises:
        ValueError: naming the unknown methods (and the new name of a renamed one).
    """
    methods = tuple(methods)
    renamed = [f"'{m}' is now '{RENAMED_METHODS[m]}'" for m in methods if m in RENAMED_METHODS]
    if renamed:
        raise ValueError(f"renamed method: {'; '.join(renamed)} (DAAM with method='grad')")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown method(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(METHODS)}")
    return methods


def _comma_list(text: str) -> Tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())
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
class EvalOptions:
    """Options of one evaluation (every method gets the same); the flags of ``daam-fast eval``.

    Attributes:
        methods: names from :data:`METHODS` (DAAM's "grad", "direct", ..., the baselines, "random").
        target: "pred" (each image's prediction) or "label" (the data's labels).
        data: "shapes" (generated, with masks and labels) or a directory of images.
        masks: directory of masks for ``data`` = a directory, or None.
        num_images: images to use (None: shapes 500, a directory all).
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

    data: str = field(default="shapes", metadata={
        "help": "'shapes' (generated, with masks and labels) or a directory of images"})
    masks: Optional[str] = field(default=None, metadata={
        "help": "directory of masks <stem>.png or <stem>_mask.png (for --data DIR)"})
    num_images: Optional[int] = field(default=None, metadata={"help": "images to use (shapes: default 500; DIR: all)"})
    seed: int = field(default=0, metadata={"help": "seed of the shapes data and of the 'random' method"})
    methods: Tuple[str, ...] = field(default=DEFAULT_METHODS, metadata={
        "type": _comma_list, "metavar": "LIST",
        "help": f"comma-separated from {', '.join(METHODS)} (default: all but random)"})
    target: Literal["pred", "label"] = field(default="pred", metadata={
        "help": "explain the prediction or the label"})
    steps: int = field(default=16, metadata={"help": "deletion / insertion steps"})
    order: str = field(default="pixel", metadata={"choices": ORDERS})
    baseline: str = field(default="blur", metadata={"choices": _PIXEL_BASELINES, "help": "deletion / insertion baseline"})
    drop_baseline: str = field(default="zero", metadata={"choices": _PIXEL_BASELINES, "help": "average drop baseline"})
    tolerance: float = field(default=0.0, metadata={"help": "pointing game tolerance (pixels)"})
    rollout_discard: float = 0.9
    rollout_fusion: str = field(default="mean", metadata={"choices": HEAD_FUSIONS})
    batch_size: int = field(default=16, metadata={"help": "images explained per call"})
    perturb_batch: int = field(default=256, metadata={"help": "perturbed images per forward pass"})
    metrics: str = field(default=ALL_METRICS, metadata={
        "help": "comma-separated metric groups (default: all): faithfulness (deletion, insertion, average "
                "drop, increase), localisation (pointing games), boxes (MaxBoxAccV2, PxAP; need masks), "
                "randomisation (model-parameter randomisation, cascading and independent), robustness "
                "(max-sensitivity, local Lipschitz, stability), complexity (Gini sparseness, entropy)"})
    box_thresholds: int = field(default=100, metadata={
        "help": "map thresholds of MaxBoxAccV2 / PxAP in [0, 1) (100: steps of 0.01)"})
    noise_samples: int = field(default=8, metadata={
        "help": "noise samples per image of max-sensitivity / local Lipschitz"})
    noise_sigma: float = field(default=0.1, metadata={"help": "their noise std (model-input units)"})
    topk: float = field(default=0.1, metadata={"help": "share of cells of the randomisation top-k intersection"})

    def check(self) -> None:
        """Raises ValueError naming the first option out of its range (methods, metrics, counts)."""
        self.methods = check_methods(self.methods)
        metric_groups(self.metrics)
        if self.num_images is not None and self.num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {self.num_images}")
        if self.box_thresholds < 1 or self.noise_samples < 1 or not self.noise_sigma > 0 or not 0 < self.topk <= 1:
            raise ValueError("need box_thresholds >= 1, noise_samples >= 1, noise_sigma > 0 and 0 < topk <= 1")
