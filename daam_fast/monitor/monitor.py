"""``AttentionMonitor``: DAAM of fixed probe images, logged while a model trains."""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .._extras import require
from ..explainer import DAAM
from ..preprocess import input_spec, prepare
from ..render import render
from . import stats
from ._restore import preserved
from .alerts import Alert, AlertRule, AlertTracker
from .history import History, LogFiles

__all__ = ["AttentionMonitor"]

log = logging.getLogger("daam_fast.monitor")
Region = Union[Sequence[float], Tensor]


def _pictures(images) -> List[Tensor]:
    if isinstance(images, Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected (N, 3, H, W) RGB probe pictures, got shape {tuple(images.shape)}")
        items = list(images)
    elif isinstance(images, (list, tuple)):
        items = list(images)
        for i, im in enumerate(items):
            if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3:
                raise ValueError(f"images[{i}]: expected a (3, H, W) RGB tensor, got "
                                 f"{tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__}")
    else:
        raise TypeError(f"images: expected a (N, 3, H, W) tensor or a list of (3, H, W) tensors, "
                        f"got {type(images).__name__}")
    if not items:
        raise ValueError("images: no probe pictures")
    for i, im in enumerate(items):
        if im.dtype != torch.uint8 and not im.is_floating_point():
            raise ValueError(f"images[{i}]: expected uint8 (or float in [0, 1]) pictures, got {im.dtype}")
    return items


def _masks(masks, sizes: List[Tuple[int, int]], what: str) -> List[Tensor]:
    """(N, H, W) tensor or list of (H_i, W_i) -> N float masks, checked against the pictures' sizes."""
    n = len(sizes)
    if isinstance(masks, Tensor) and masks.dim() == 2:
        masks = [masks] * n
    if isinstance(masks, Tensor):
        if masks.dim() != 3:
            raise ValueError(f"{what}: expected (N, H, W) masks, got shape {tuple(masks.shape)}")
        masks = list(masks)
    masks = list(masks)
    if len(masks) != n:
        raise ValueError(f"{what}: {len(masks)} masks for {n} probe images")
    out = []
    for i, (m, size) in enumerate(zip(masks, sizes)):
        m = torch.as_tensor(m)
        if tuple(m.shape) != size:
            raise ValueError(f"{what}[{i}]: mask of shape {tuple(m.shape)} does not match its picture's {size} (H, W)")
        m = m.detach().float().cpu()
        if not bool(torch.isfinite(m).all()) or m.min() < 0 or m.max() > 1:
            raise ValueError(f"{what}[{i}]: mask values must lie in [0, 1] (bool or float)")
        out.append(m)
    return out


def _regions(regions: Optional[Mapping[str, Region]], sizes: List[Tuple[int, int]]) -> Dict[str, List[Tensor]]:
    out: Dict[str, List[Tensor]] = {}
    for name, r in (regions or {}).items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"regions: names must be non-empty strings without '/', got {name!r}")
        if isinstance(r, Tensor) and r.dim() >= 2:
            out[name] = _masks(r, sizes, f"regions[{name!r}]")
            continue
        box = [float(v) for v in (r.tolist() if isinstance(r, Tensor) else r)]
        if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
            raise ValueError(f"regions[{name!r}]: expected a box (x0, y0, x1, y1) with x0 < x1, y0 < y1 "
                             f"(or a mask), got {r!r}")
        out[name] = [stats.box_mask(box, s) for s in sizes]
    return out


class AttentionMonitor:
    """Explain fixed probe images every ``every`` training steps and log how the attention moves.

    Each logged step explains the probes with ``DAAM(model, method=method)`` in eval mode and
    leaves training exactly as it was (:func:`daam_fast.monitor.preserved`: train/eval flags,
    ``requires_grad``, parameter gradients, autograd mode, CPU / CUDA random state; DAAM
    restores every attribute it patches). It records, per probe image, the predicted class and
    its probability, the entropy of D_L, its drift from the previous logged step, the energy
    inside the object mask and the mass in each watched region (:mod:`daam_fast.monitor.stats`),
    applies the alert rule (:mod:`daam_fast.monitor.alerts`), and writes the maps and scalars
    under ``log_dir`` and to TensorBoard.

    Args:
        model: the model being trained (a ViT DAAM can explain; for "row", token-pooled).
        images: the probe pictures, (N, 3, H, W) uint8 (or float in [0, 1]) or a list of
            (3, H_i, W_i); prepared with the model's input spec (:func:`daam_fast.preprocess.prepare`).
        labels: (N,) classes: each probe is explained for its label (default: its prediction),
            and "correct" is recorded.
        masks: (N, H, W) object masks (bool or [0, 1]) in the pictures' pixels, or a list.
        regions: watched regions {name: box (x0, y0, x1, y1) in pixels, or a mask (H, W) /
            (N, H, W)}, e.g. ``{"corner": (0, 0, 8, 8)}``.
        every: log at the steps that are multiples of ``every`` (>= 1).
        method: the DAAM method; "row" costs about one inference.
        log_dir: folder for the history files (:mod:`daam_fast.monitor.history`) and, without
            ``writer``, TensorBoard's event file.
        writer: a ``torch.utils.tensorboard.SummaryWriter`` to log to (its folder holds the
            history files when ``log_dir`` is None).
        names: one name per probe (default "probe00", ...).
        classes: class names for the view (default: ``model.daam_classes`` if present).
        rule: the :class:`AlertRule`.
        on_alert: called with each :class:`Alert` as it is raised.

    Example:
        >>> mon = AttentionMonitor(model, probes, masks=masks, regions={"corner": (0, 0, 8, 8)}, log_dir="runs/a")
        >>> for step in range(steps):
        ...     train_step(); mon.step(step)
        >>> mon.alerts, mon.history.series("region/corner")
    """

    def __init__(self, model: nn.Module, images, labels=None, masks=None, regions: Optional[Mapping[str, Region]] = None,
                 every: int = 100, method: str = "row", log_dir: Optional[str] = None, writer=None, *,
                 names: Optional[Sequence[str]] = None, classes: Optional[Sequence[str]] = None,
                 rule: AlertRule = AlertRule(), on_alert: Optional[Callable[[Alert], None]] = None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r}: expected an integer >= 1 (log every `every` steps)")
        if not isinstance(rule, AlertRule):
            raise TypeError(f"rule: expected an AlertRule, got {type(rule).__name__}")
        pics = _pictures(images)
        n = len(pics)
        sizes = [(int(p.shape[-2]), int(p.shape[-1])) for p in pics]
        self.labels = None
        if labels is not None:
            lab = torch.as_tensor(labels).reshape(-1)
            if lab.numel() != n or lab.is_floating_point():
                raise ValueError(f"labels: expected {n} integer classes, got {tuple(lab.shape)} {lab.dtype}")
            self.labels = lab.long().cpu()
        self._masks = _masks(masks, sizes, "masks") if masks is not None else None
        self._regions = _regions(regions, sizes)
        self.names = [f"probe{i:02d}" for i in range(n)] if names is None else [str(s) for s in names]
        if len(self.names) != n or len(set(self.names)) != n:
            raise ValueError(f"names: expected {n} distinct names, got {list(self.names)}")
        try:
            self._daam = DAAM(model, method=method)
        except ValueError as e:
            msg = str(e)
            if method == "row" and "method='grad'" not in msg:
                msg += "; use method='grad'"
            raise ValueError(f"AttentionMonitor: {msg}") from None
        self.model = model
        self.method = method
        self.every = every
        self.rule = rule
        self.on_alert = on_alert
        self._x, self.pictures = prepare(pics, input_spec(model))     # (N, 3, h, w) input, uint8 pictures
        cls = classes if classes is not None else getattr(model, "daam_classes", None)
        self.history = History(names=self.names, pictures=self.pictures,
                               classes=[str(c) for c in cls] if cls is not None else None, method=method)
        self._tracker = AlertTracker(rule, self.names)
        self._cover: Optional[Dict[str, Tensor]] = None
        self._previous: Optional[Tensor] = None
        self._writer, self._own_writer = writer, False
        if log_dir is None and writer is not None and hasattr(writer, "get_logdir"):
            log_dir = writer.get_logdir()
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self._files: Optional[LogFiles] = None

    @property
    def alerts(self) -> List[Alert]:
        """Every alert raised so far, in order."""
        return self.history.alerts

    # ------------------------------------------------------------------ the hook
    def step(self, global_step: int) -> Optional[List[Alert]]:
        """Call once per training step: logs when ``global_step`` is a multiple of ``every``
        (and later than the last logged step), else does nothing.

        Returns:
            the alerts raised at this step (a list, maybe empty) when it logged, else None.
        """
        step = int(global_step)
        if step % self.every or (self.history.steps and step <= self.history.steps[-1]):
            return None
        return self.log(step)

    def log(self, step: int) -> List[Alert]:
        """Explain the probes now and record them as ``step`` (whatever ``every`` says)."""
        dev = next(self.model.parameters()).device
        target = None if self.labels is None else self.labels.to(dev)
        with preserved(self.model):
            res = self._daam(self._x.to(dev), target=target)
        maps = res.maps.detach().float().cpu()                     # (N, L, h, w)
        scalars = self._scalars(res, maps)
        alerts = self._tracker.update(step, scalars)
        h = self.history
        h.steps.append(step)
        h.maps.append(maps)
        h.scalars.append(scalars)
        h.alerts.extend(alerts)
        self._write(step, maps, scalars, alerts)
        for a in alerts:
            log.warning("DAAM monitor alert: %s", a)
            if self.on_alert is not None:
                self.on_alert(a)
        return alerts

    def _scalars(self, res, maps: Tensor) -> Dict[str, List[Optional[float]]]:
        n, grid = maps.shape[0], tuple(maps.shape[-2:])
        if self._cover is None:
            self._cover = {}
            if self._masks is not None:
                self._cover["mask_energy"] = stats.coverage(self._masks, grid)
            for name, ms in self._regions.items():
                self._cover[f"region/{name}"] = stats.coverage(ms, grid)
        p = stats.distribution(maps[:, -1])
        out: Dict[str, List[Optional[float]]] = {}
        targets = res.targets.detach().cpu().reshape(-1)
        if res.logits is not None:
            probs = res.logits.detach().float().cpu().softmax(-1)
            conf, pred = probs.max(-1)
            out["pred"] = [int(v) for v in pred]
            out["prob"] = [float(v) for v in conf]
            if self.labels is not None:
                out["correct"] = [float(a == b) for a, b in zip(pred.tolist(), self.labels.tolist())]
        out["target"] = [int(v) for v in targets]
        out["entropy"] = [float(v) for v in stats.entropy(p)]
        if self._previous is None:
            out["drift"] = [None] * n
        else:
            out["drift"] = [None if v != v else float(v) for v in stats.drift(p, self._previous)]
        self._previous = p
        for key, cover in self._cover.items():
            out[key] = [float(v) for v in stats.mass(p, cover)]
        return out

    # ------------------------------------------------------------------ output
    def _meta(self) -> dict:
        return {"names": self.names, "labels": None if self.labels is None else self.labels.tolist(),
                "classes": self.history.classes, "regions": list(self._regions), "masks": self._masks is not None,
                "method": self.method, "every": self.every}

    def _write(self, step: int, maps: Tensor, scalars, alerts: List[Alert]) -> None:
        if self.log_dir is not None:
            if self._files is None:
                self._files = LogFiles(self.log_dir, self._meta(), self.pictures)
            self._files.write(step, maps, scalars, alerts)
        if self.log_dir is None and self._writer is None:
            return
        w = self._tensorboard()
        for key, vals in scalars.items():
            if key in ("pred", "target"):
                continue
            good = [v for v in vals if v is not None]
            if good:
                w.add_scalar(f"daam/mean/{key}", sum(good) / len(good), step)
            for name, v in zip(self.names, vals):
                if v is not None:
                    w.add_scalar(f"daam/{name.replace('/', '_')}/{key}", v, step)
        frames = self._frames(maps)                              # (N, H, L*W, 3)
        for name, f in zip(self.names, frames):
            w.add_image(f"daam/{name.replace('/', '_')}/flow", f.numpy(), step, dataformats="HWC")
        for a in alerts:
            w.add_text("daam/alerts", str(a), step)

    def _frames(self, maps: Tensor) -> Tensor:
        """(N, H', L * W', 3) uint8: D_1 ... D_L over each probe picture, side by side."""
        H, W = self.pictures.shape[-2:]
        r = min(1.0, 128 / max(H, W))
        size = (max(1, round(H * r)), max(1, round(W * r)))
        pics = self.pictures
        if size != (H, W):
            pics = torch.nn.functional.interpolate(pics.float(), size=size, mode="bilinear", antialias=True,
                                                   align_corners=False).round().clamp(0, 255).to(torch.uint8)
        fr = render(maps, images=pics, size=size)                 # (N, L, H', W', 3)
        N, L, h, w, _ = fr.shape
        return fr.permute(0, 2, 1, 3, 4).reshape(N, h, L * w, 3)

    def _tensorboard(self):
        if self._writer is None:
            require("tensorboard", "the attention monitor's log_dir (TensorBoard events)")
            from torch.utils.tensorboard import SummaryWriter
            self._writer, self._own_writer = SummaryWriter(self.log_dir), True
        return self._writer

    def close(self) -> None:
        """Flush the TensorBoard writer (and close it if the monitor opened it)."""
        if self._writer is not None:
            self._writer.flush()
            if self._own_writer:
                self._writer.close()
                self._writer, self._own_writer = None, False

    def __enter__(self) -> "AttentionMonitor":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
