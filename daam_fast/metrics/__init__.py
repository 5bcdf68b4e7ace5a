"""Metrics for saliency maps, batched on the maps' device: faithfulness, localisation, boxes,
sanity (model-parameter randomisation), robustness and complexity.

Every function takes saliency maps at any resolution (e.g. ``res.final``, (B, h, w) on the
patch grid) and, where pixels are needed, upsamples them bilinearly
(``align_corners=False``) to the image / mask size. Nothing leaves the maps' device.

- Faithfulness (:mod:`.perturbation`): :func:`deletion`, :func:`insertion` (RISE),
  :func:`confidence_change` (average drop / increase, Grad-CAM++).
- Localisation (:mod:`.localisation`): :func:`pointing_game`, :func:`energy_pointing_game`,
  :func:`max_box_acc` (MaxBoxAccV2), :func:`pxap`; boxes from maps in :mod:`daam_fast.boxes`.
- Sanity (:mod:`.randomisation`): :func:`randomisation` (Adebayo et al. 2018), cascading and
  independent, scored with :func:`spearman`, :func:`ssim`, :func:`topk_intersection` (:mod:`.similarity`).
- Robustness (:mod:`.robustness`): :func:`max_sensitivity`, :func:`local_lipschitz`, :func:`stability`.
- Complexity (:mod:`.complexity`): :func:`sparseness` (Gini index), :func:`complexity` (entropy).

Example:
    >>> from daam_fast import DAAM, metrics
    >>> with DAAM(model) as daam:
    ...     res = daam(x)                                        # x (B, 3, H, W) normalised
    >>> d = metrics.deletion(model, x, res.final, res.targets)    # d.auc (B,), d.curve (B, steps + 1)
    >>> hit = metrics.pointing_game(res.final, masks)             # masks (B, H, W) bool
    >>> gini = metrics.sparseness(res.final)                      # (B,)
"""
from ._checks import upsample
from .localisation import (THRESHOLDS, BoxAccuracy, PixelAP, box_ious, boxes_to_masks, energy_pointing_game,
                           max_box_acc, pointing_game, pxap)
from .complexity import complexity, sparseness
from .perturbation import (BASELINES, ORDERS, ConfidenceChange, PerturbationResult, auc, confidence_change, deletion,
                           insertion, make_baseline, perturbation_curve, perturbation_ranks)
from .randomisation import SIMILARITIES, Randomisation, randomisation, randomisation_layers, randomise_
from .robustness import (ExplainFn, Robustness, Stability, explain_batched, local_lipschitz, max_sensitivity,
                         photometric_copies, robustness, stability)
from .similarity import rank_with_ties, spearman, ssim, topk_intersection

__all__ = [
    "PerturbationResult", "ConfidenceChange", "upsample", "make_baseline", "perturbation_ranks",
    "perturbation_curve", "auc", "deletion", "insertion", "confidence_change", "boxes_to_masks",
    "pointing_game", "energy_pointing_game", "BoxAccuracy", "PixelAP", "box_ious", "max_box_acc", "pxap",
    "Randomisation", "randomisation", "randomisation_layers", "randomise_", "explain_batched",
    "Robustness", "robustness", "max_sensitivity", "local_lipschitz", "Stability", "stability", "photometric_copies",
    "spearman", "ssim", "topk_intersection", "rank_with_ties", "sparseness", "complexity",
]
