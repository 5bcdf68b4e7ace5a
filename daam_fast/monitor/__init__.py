"""Watch the attention flow while a model trains (docs/monitor.md).

:class:`AttentionMonitor` explains fixed probe images every ``every`` steps (DAAM, "row" by
default: about one inference), leaves training exactly as it was, records per probe the
prediction, the entropy and drift of the map, the energy inside the object mask and the mass
in watched regions, raises alerts by a documented rule (:mod:`daam_fast.monitor.alerts`),
and writes everything under a log folder and to TensorBoard. :func:`load_history` reads
the folder back; ``daam-fast monitor view LOG_DIR --out page.html`` draws it as one page.
:class:`DAAMCallback` does the same inside a Lightning ``Trainer`` (needs ``lightning``).

Example:
    >>> from daam_fast.monitor import AttentionMonitor
    >>> mon = AttentionMonitor(model, probes, masks=masks, regions={"corner": (0, 0, 8, 8)},
    ...                        every=100, log_dir="runs/exp1")
    >>> for step, batch in enumerate(loader):
    ...     train_step(batch)
    ...     mon.step(step)
    >>> mon.alerts                            # [Alert(step=..., image=..., reason=...), ...]
"""
from __future__ import annotations

from ._restore import preserved
from .alerts import Alert, AlertRule
from .history import History, load_history
from .monitor import AttentionMonitor

__all__ = ["AttentionMonitor", "Alert", "AlertRule", "History", "load_history", "preserved", "DAAMCallback"]


def __getattr__(name: str):
    if name == "DAAMCallback":                 # lightning is optional: imported on first use
        from .lightning import DAAMCallback
        return DAAMCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
