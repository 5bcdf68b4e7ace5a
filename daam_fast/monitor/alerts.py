"""The alert rule: when the attention of a probe image leaves where it should be.

At each logged step three kinds of condition are checked on the mean over the probe images
(one probe's map is noisy early in training; the probes' mean is not), and with
``AlertRule(per_image=True)`` also on each probe image:

- **Mass outside the object mask** (probes given with ``masks``): ``1 - mask_energy`` above
  ``AlertRule.outside``, or above ``factor`` times its first logged value.
- **Mass in a watched region** (``regions``): above ``AlertRule.region``, or above ``factor``
  times its first logged value. The factor rule applies only once the mass is at least
  ``floor`` (a region that held 1 % of the map at the start is not alarming at 3 %).
- **Drift spike**: ``drift`` (1 - Spearman against the previous logged step) above
  ``AlertRule.drift`` and above ``drift_factor`` times the median of the image's earlier
  drifts (at least ``warmup`` of them): early training, when every map moves, is not a spike.

An alert is raised when a condition starts to hold for an image; while it keeps holding no
new alert is raised for it, and once it stops holding it may be raised again. An alert on the
probes' mean has ``image=None``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

__all__ = ["Alert", "AlertRule", "AlertTracker"]


@dataclass(frozen=True)
class Alert:
    """One alert.

    Attributes:
        step: the training step it was raised at.
        image: the probe image's index, or None for the mean over the probes.
        name: the probe image's name ("mean" for the mean).
        quantity: "outside" (mass outside the mask), "region/<name>" or "drift".
        value: the quantity's value at ``step``.
        reason: one sentence saying which condition held.
    """

    step: int
    image: Optional[int]
    name: str
    quantity: str
    value: float
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        who = "the probes' mean" if self.image is None else f"image {self.image} ({self.name})"
        return f"step {self.step}, {who}: {self.reason}"


@dataclass(frozen=True)
class AlertRule:
    """Thresholds of the alert rule (module docstring). ``None`` switches a condition off.

    Attributes:
        outside: mass outside the object mask above which an alert is raised.
        region: mass in a watched region above which an alert is raised.
        factor: ... or this many times the quantity's first logged value (masks and regions).
        floor: the factor condition needs at least this much mass.
        drift: drift above which (and above ``drift_factor`` x the median of the image's
            earlier drifts) a drift spike is raised.
        drift_factor: see ``drift``.  warmup: earlier drifts needed before a spike can count.
        per_image: also check each probe image (else only the probes' mean).
    """

    outside: Optional[float] = 0.95
    region: Optional[float] = 0.5
    factor: Optional[float] = 4.0
    floor: float = 0.2
    drift: Optional[float] = 0.5
    drift_factor: float = 3.0
    warmup: int = 3
    per_image: bool = False

    def __post_init__(self):
        for k in ("outside", "region", "drift"):
            v = getattr(self, k)
            if v is not None and not 0 <= v <= 2:
                raise ValueError(f"AlertRule.{k}={v}: expected a value in [0, 2] or None")
        if self.factor is not None and self.factor <= 1:
            raise ValueError(f"AlertRule.factor={self.factor}: expected > 1 or None")
        if self.drift_factor < 1 or self.warmup < 0:
            raise ValueError(f"AlertRule: drift_factor={self.drift_factor} must be >= 1 and warmup={self.warmup} >= 0")


def _median(v: Sequence[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class AlertTracker:
    """Applies an :class:`AlertRule` step by step (it keeps the first values, the earlier drifts
    and which conditions hold)."""

    def __init__(self, rule: AlertRule, names: Sequence[str]):
        self.rule = rule
        self.names = list(names)
        self.first: Dict[Tuple[Optional[int], str], float] = {}
        self.drifts: Dict[Optional[int], List[float]] = {}
        self.holding: Set[Tuple[Optional[int], str]] = set()

    def _mass(self, i: Optional[int], q: str, v: float, limit: Optional[float]) -> Optional[str]:
        r = self.rule
        first = self.first.setdefault((i, q), v)
        what = "mass outside the mask" if q == "outside" else f"mass in region {q.split('/', 1)[1]!r}"
        if limit is not None and v > limit:
            return f"{what} {v:.3f} > {limit:g}"
        if r.factor is not None and v >= r.floor and first > 0 and v > r.factor * first:
            return f"{what} {v:.3f} > {r.factor:g} x its first logged value {first:.3f}"
        return None

    def _drift(self, i: Optional[int], v: float) -> Optional[str]:
        r = self.rule
        earlier = self.drifts.setdefault(i, [])
        why = None
        if r.drift is not None and v > r.drift and len(earlier) >= max(1, r.warmup):
            med = _median(earlier)
            if v > r.drift_factor * med:
                why = f"drift {v:.3f} > {r.drift:g} and > {r.drift_factor:g} x the median of earlier drifts {med:.3f}"
        earlier.append(v)
        return why

    def update(self, step: int, scalars: Dict[str, List[Optional[float]]]) -> List[Alert]:
        """The alerts raised at ``step`` from its per-image scalars (see :mod:`.stats`)."""
        out: List[Alert] = []
        keys = [k for k in scalars if k in ("mask_energy", "drift") or k.startswith("region/")]
        mean = {}
        for k in keys:
            good = [v for v in scalars[k] if v is not None and math.isfinite(v)]
            mean[k] = sum(good) / len(good) if good else None
        self._check(out, step, None, "mean", mean)
        if self.rule.per_image:
            for i, name in enumerate(self.names):
                self._check(out, step, i, name, {k: scalars[k][i] for k in keys})
        return out

    def _check(self, out: List[Alert], step: int, i: Optional[int], name: str, values: Dict[str, Optional[float]]):
        for key, v in values.items():
            if v is None or not math.isfinite(v):
                continue
            if key == "mask_energy":
                self._edge(out, step, i, name, "outside", 1.0 - v, self._mass(i, "outside", 1.0 - v, self.rule.outside))
            elif key == "drift":
                self._edge(out, step, i, name, "drift", v, self._drift(i, v))
            else:
                self._edge(out, step, i, name, key, v, self._mass(i, key, v, self.rule.region))

    def _edge(self, out: List[Alert], step: int, i: Optional[int], name: str, q: str, v: float, why: Optional[str]) -> None:
        key = (i, q)
        if why is None:
            self.holding.discard(key)
        elif key not in self.holding:
            self.holding.add(key)
            out.append(Alert(step=int(step), image=i, name=str(name), quantity=q, value=float(v), reason=why))
