"""``daam-fast eval``: DAAM and the baselines on the same images: faithfulness, localisation, trust.

Every method explains the same images for the same target class (each image's prediction,
or its label with ``--target label``); each final map is scored with the metrics of
:mod:`daam_fast.metrics`: deletion and insertion AUC, average drop, increase in confidence,
and, where masks exist, the pointing game and the energy pointing game; then the trust
suite (``--metrics``, default all): boxes from the maps (MaxBoxAccV2) and pixel AP against the
masks, the model-parameter randomisation test (cascading and independent: Spearman, SSIM and
top-k intersection with the original maps), max-sensitivity, local Lipschitz and stability
under small input changes, and the sparseness (Gini) and complexity (entropy) of the maps.
The output is a Markdown table (metric x method, mean +- standard error over images, with
the cost of each metric in ms per image), ``results.json``, and two figures: ``eval.png``, the
mean deletion / insertion curves and the per-block energy pointing game of the methods that
give one map per block (DAAM's D_b and L_b: how localisation forms through the blocks), and
``randomisation.png``, the cascading and independent randomisation curves per method. With
both "daam" and "direct", the report also says how closely the forward-only "direct" maps
follow the exact "grad" ones. The DAAM methods are the explainer's method table
("daam" = grad, "direct", ...), so a method added there is evaluated without other edits.

Modules: ``config`` (method keys, :class:`EvalConfig`), ``runner`` (:func:`explain`,
:func:`evaluate`), ``statistics`` (:func:`spearman`, :func:`summarize`), ``report``
(:func:`write_report`), ``loader`` (:func:`load_data`); the command is :mod:`daam_fast.cli.eval`.

Example:
    daam-fast eval --model shapes_vit --data shapes --num-images 500 --out eval_out/
    daam-fast eval --model deit_small_patch16_224 --checkpoint w.pth --data photos/ --masks masks/ --out e/
"""
from .config import (ALL_METRICS, BASELINE_METHODS, DAAM_METHODS, DEFAULT_METHODS, EVAL_DEFAULTS,  # noqa: F401
                     EVAL_FIELDS, GRAD_ONLY_OPTIONS, LABELS, METHODS, METRIC_GROUPS, OUTPUT_FILES, ROWS, EvalConfig,
                     metric_groups)
from .loader import EvalData, _load_dir, load_data  # noqa: F401
from .report import _figure, _fmt, _table_md, write_report  # noqa: F401
from .runner import _predict, evaluate, explain  # noqa: F401
from .statistics import _mean_se, spearman, summarize  # noqa: F401

__all__ = ["METHODS", "EvalConfig", "explain", "evaluate", "summarize", "spearman", "write_report", "load_data"]


def __getattr__(name: str):
    if name == "add_cli":              # the sub-command moved to daam_fast.cli.eval; kept for old callers
        from ..cli.eval import add_cli
        return add_cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
