"""The trust metrics of an evaluation: robustness and complexity per batch; boxes,
pixel AP and the randomisation test over the whole data set. Each group is timed per method."""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import metrics as M
from ..boxes import masks_to_boxes
from .config import EvalOptions

__all__ = ["batch_metrics", "dataset_metrics"]

ExplainMaps = Callable[[nn.Module, Tensor, Tensor], Tensor]


class _Timer:
    def __init__(self, secs: Dict[str, float], group: str):
        self.secs, self.group = secs, group

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.secs[self.group] = self.secs.get(self.group, 0.0) + time.perf_counter() - self.t0


def batch_metrics(groups: Sequence[str], model: nn.Module, explain: ExplainMaps, predict: Callable[[Tensor], Tensor],
                  x: Tensor, t: Tensor, sal: Tensor, cfg: EvalOptions, per: Dict[str, List[Tensor]],
                  secs: Dict[str, float], norm: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
                  seed: int = 0) -> None:
    """Robustness and complexity of one batch's final maps ``sal`` (B, h, w), appended to ``per``.

    ``explain(model, x, t) -> (b, h, w)`` is the method's explainer (the same target per copy);
    ``norm`` = (mean, std) of the model input, for the photometric copies of ``stability``.
    """
    if "complexity" in groups:
        with _Timer(secs, "complexity"):
            per["sparseness"].append(M.sparseness(sal))
            per["complexity"].append(M.complexity(sal))
    if "robustness" in groups:
        with _Timer(secs, "robustness"):
            r = M.robustness(model, explain, x, t, samples=cfg.noise_samples, sigma=cfg.noise_sigma,
                             batch_size=cfg.batch_size, seed=seed, maps=sal)
            mean, std = norm if norm is not None else (None, None)
            st = M.stability(model, explain, x, t, maps=sal, predict=predict, batch_size=cfg.batch_size,
                             mean=mean, std=std)
            per["max_sensitivity"].append(r.max_sensitivity)
            per["local_lipschitz"].append(r.local_lipschitz)
            per["stability"].append(st.score)


def dataset_metrics(groups: Sequence[str], model: nn.Module, explain: ExplainMaps, images: Tensor, targets: Tensor,
                    finals: Tensor, masks: Optional[Tensor], cfg: EvalOptions, per: Dict[str, Tensor],
                    secs: Dict[str, float]) -> dict:
    """Boxes / pixel AP (needs masks) and the randomisation test over all images of one method.

    Args:
        finals: (n, h, w) final maps of the method on ``images``.
        per: the method's per-image results, extended here with (n,) tensors.

    Returns:
        {"max_box_acc": {...}, "pxap": {...}, "randomisation": {...}} for the report (dataset-level
        values: best thresholds, pooled PxAP, mean curves); ``per["pxap"]`` holds the per-image AP
        and the pooled value is returned under "pxap"/"pooled".
    """
    extra: dict = {}
    size = tuple(images.shape[-2:])
    if "boxes" in groups and masks is not None:
        with _Timer(secs, "boxes"):
            gt = masks_to_boxes(masks)
            ba = M.max_box_acc(finals.to(images.device), gt, size, thresholds=cfg.box_thresholds)
            px = M.pxap(finals.to(images.device), masks, thresholds=cfg.box_thresholds)
        per["max_box_acc"] = ba.hits.float().cpu()
        per["pxap"] = px.per_image.float().cpu()
        extra["max_box_acc"] = {"value": float(ba.value), "iou_thresholds": [0.3, 0.5, 0.7],
                                "per_iou": ba.per_iou.tolist(), "best_threshold": ba.best_threshold.tolist()}
        extra["pxap"] = {"pooled": float(px.pxap), "per_image_mean": float(torch.nanmean(px.per_image))}
    if "randomisation" in groups:
        with _Timer(secs, "randomisation"):
            r = M.randomisation(model, explain, images, targets, size=size, topk=cfg.topk,
                                batch_size=cfg.batch_size, seed=cfg.seed, maps=finals.to(images.device))
        c, ind = r.cascading, r.independent
        per["randomisation"] = c["spearman"][:, -1].float().cpu()
        per["randomisation_ssim"] = c["ssim"][:, -1].float().cpu()
        per["randomisation_topk"] = c["topk"][:, -1].float().cpu()
        per["randomisation_independent"] = torch.nanmean(ind["spearman"], dim=1).float().cpu()
        extra["randomisation"] = {
            "steps": r.steps, "layers": r.layers,
            "cascading": {s: torch.nanmean(v, 0).tolist() for s, v in c.items()},
            "cascading_se": {s: _se(v) for s, v in c.items()},
            "independent": {s: torch.nanmean(v, 0).tolist() for s, v in ind.items()},
        }
    return extra


def _se(v: Tensor) -> List[float]:
    out = []
    for j in range(v.shape[1]):
        col = v[:, j][~torch.isnan(v[:, j])].double()
        out.append(float(col.std() / col.numel() ** 0.5) if col.numel() > 1 else float("nan"))
    return out
