"""What the monitor keeps: the history in memory and its files under the log folder.

Layout of ``<log_dir>/daam_monitor/``:

- ``meta.json``: probe names, labels, class names, region names, method, ``every``.
- ``probes.npy``: (N, 3, H, W) uint8, the probe pictures as the model saw them (resized).
- ``maps/<step>.npy``: (N, L, h, w) float32, the accumulated maps D_1..D_L of each logged
  step (``numpy.load(..., mmap_mode="r")`` maps them without reading them).
- ``scalars.jsonl``: one line per logged step, ``{"step": s, "scalars": {name: [N values]}}``
  (``null`` where a value does not exist, e.g. the drift of the first step).
- ``alerts.jsonl``: one line per alert (:class:`~daam_fast.monitor.alerts.Alert` fields).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .alerts import Alert, AlertRule, AlertTracker

__all__ = ["History", "load_history", "LogFiles", "FOLDER"]

FOLDER = "daam_monitor"
Scalars = Dict[str, List[Optional[float]]]


@dataclass
class History:
    """The logged steps of a monitor.

    Attributes:
        steps: the logged training steps, in order.
        maps: per step, (N, L, h, w) float32 accumulated maps D_1..D_L of the N probes
            (memory-mapped when read by :func:`load_history`).
        scalars: per step, {name: N values or None}: "pred", "prob", "target", "entropy",
            "drift", and where given "correct", "mask_energy", "region/<name>"
            (see :mod:`daam_fast.monitor.stats`).
        alerts: the alerts raised, in order.
        names: the probe images' names.  pictures: (N, 3, H, W) uint8 as the model saw them.
        classes: class names (or None).  method: the DAAM method.
    """

    steps: List[int] = field(default_factory=list)
    maps: List[Tensor] = field(default_factory=list)
    scalars: List[Scalars] = field(default_factory=list)
    alerts: List[Alert] = field(default_factory=list)
    names: List[str] = field(default_factory=list)
    pictures: Optional[Tensor] = None
    classes: Optional[List[str]] = None
    method: str = "row"

    def __len__(self) -> int:
        return len(self.steps)

    def replay(self, rule: AlertRule) -> List[Alert]:
        """The alerts ``rule`` raises over the logged steps (the same as a monitor with ``rule``)."""
        tracker = AlertTracker(rule, self.names)
        return [a for step, s in zip(self.steps, self.scalars) for a in tracker.update(step, s)]

    def series(self, name: str) -> Tensor:
        """(T, N) float32 values of scalar ``name`` over the logged steps (NaN where missing)."""
        rows = [[math.nan if v is None else float(v) for v in s.get(name, [None] * len(self.names))]
                for s in self.scalars]
        return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(self.names))


def _json_value(v: Optional[float]) -> Optional[float]:
    return None if v is None or not math.isfinite(v) else v


class LogFiles:
    """Writes a history's files under ``<log_dir>/daam_monitor`` (a new run replaces the old one's)."""

    def __init__(self, log_dir: str, meta: Dict[str, Any], pictures: Tensor):
        self.root = os.path.join(os.fspath(log_dir), FOLDER)
        os.makedirs(os.path.join(self.root, "maps"), exist_ok=True)
        for f in os.listdir(os.path.join(self.root, "maps")):
            if f.endswith(".npy"):
                os.remove(os.path.join(self.root, "maps", f))
        for f in ("scalars.jsonl", "alerts.jsonl"):
            open(os.path.join(self.root, f), "w").close()
        with open(os.path.join(self.root, "meta.json"), "w") as f:
            json.dump(dict(meta, version=1), f, indent=1)
        np.save(os.path.join(self.root, "probes.npy"), pictures.cpu().numpy())

    def write(self, step: int, maps: Tensor, scalars: Scalars, alerts: List[Alert]) -> None:
        np.save(os.path.join(self.root, "maps", f"{int(step):010d}.npy"), maps.cpu().numpy())
        rec = {"step": int(step), "scalars": {k: [_json_value(v) for v in vs] for k, vs in scalars.items()}}
        with open(os.path.join(self.root, "scalars.jsonl"), "a") as f:
            f.write(json.dumps(rec, allow_nan=False) + "\n")
        if alerts:
            with open(os.path.join(self.root, "alerts.jsonl"), "a") as f:
                for a in alerts:
                    f.write(json.dumps(a.to_dict(), allow_nan=False) + "\n")


def load_history(log_dir: Union[str, "os.PathLike[str]"]) -> History:
    """Read the history a monitor wrote under ``log_dir``.

    Args:
        log_dir: the monitor's ``log_dir`` (or its ``daam_monitor`` folder).

    Returns:
        :class:`History` with the maps memory-mapped (copy-on-write) from their files.

    Raises:
        FileNotFoundError: no monitor history there.
    """
    root = os.fspath(log_dir)
    if not os.path.exists(os.path.join(root, "meta.json")):
        root = os.path.join(root, FOLDER)
    if not os.path.exists(os.path.join(root, "meta.json")):
        raise FileNotFoundError(f"{os.fspath(log_dir)}: no monitor history (expected {FOLDER}/meta.json)")
    with open(os.path.join(root, "meta.json")) as f:
        meta = json.load(f)
    h = History(names=list(meta["names"]), classes=meta.get("classes"), method=meta.get("method", "row"))
    h.pictures = torch.from_numpy(np.load(os.path.join(root, "probes.npy")))
    with open(os.path.join(root, "scalars.jsonl")) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            path = os.path.join(root, "maps", f"{int(rec['step']):010d}.npy")
            if not os.path.exists(path):       # a step being written when the file was read
                continue
            h.steps.append(int(rec["step"]))
            h.scalars.append(rec["scalars"])
            h.maps.append(torch.from_numpy(np.load(path, mmap_mode="c")))
    with open(os.path.join(root, "alerts.jsonl")) as f:
        h.alerts = [Alert(**json.loads(line)) for line in f if line.strip()]
    return h
