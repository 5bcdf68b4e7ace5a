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
both "grad" and "direct", the report also says how closely the forward-only "direct" maps
follow the exact "grad" ones. The DAAM methods are the explainer's method table
("grad", "direct", ...), so a method added there is evaluated without other edits.

Modules: ``config`` (method names, :class:`EvalOptions`: every option and its default, from
which the command's flags are derived), ``runner`` (:func:`explain`, :func:`evaluate`),
``statistics`` (:func:`summarize`), ``report`` (:func:`write_report`), ``loader``
(:func:`load_data`).

Example:
    daam-fast eval --model shapes_vit --data shapes --num-images 500 --out eval_out/
    daam-fast eval --model deit_small_patch16_224 --checkpoint w.pth --data photos/ --masks masks/ --out e/
"""
from .config import DAAM_METHODS, METHODS, EvalOptions
from .loader import EvalData, load_data
from .report import table_markdown, write_report
from .runner import evaluate, explain
from .statistics import summarize

__all__ = ["METHODS", "DAAM_METHODS", "EvalOptions", "EvalData", "explain", "evaluate", "summarize", "write_report",
           "table_markdown", "load_data"]
