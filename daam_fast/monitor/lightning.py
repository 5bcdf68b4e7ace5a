"""``DAAMCallback``: the attention monitor inside a Lightning ``Trainer`` (needs ``lightning``)."""
from __future__ import annotations

from typing import Any, Optional, Union

from torch import nn

from .._extras import require
from .monitor import AttentionMonitor

Callback = require("lightning.pytorch", "daam_fast.monitor.DAAMCallback").Callback

__all__ = ["DAAMCallback"]


class DAAMCallback(Callback):
    """Log DAAM of probe images every ``every`` optimizer steps to the trainer's TensorBoard logger.

    Before each training batch, on global rank 0, calls ``AttentionMonitor.step(trainer.global_step)``
    (so the model is explained before the update of that step; a step already logged, e.g.
    under gradient accumulation, is skipped). The monitor writes to the trainer's
    ``TensorBoardLogger`` (its ``experiment`` writer and ``log_dir``); with another logger or
    none, its files go under ``trainer.default_root_dir`` / ``daam`` and TensorBoard's events
    beside them.

    Args:
        images: the probe pictures (see :class:`AttentionMonitor`).
        model: the network to explain: an ``nn.Module``, the name of an attribute of the
            LightningModule, or None (its ``model`` attribute if it is an ``nn.Module``, else
            the LightningModule itself).
        every: log every ``every`` global steps.
        **kwargs: ``labels``, ``masks``, ``regions``, ``method``, ``names``, ``classes``,
            ``rule``, ``on_alert`` of :class:`AttentionMonitor`.

    Example:
        >>> trainer = Trainer(callbacks=[DAAMCallback(probes, masks=masks, every=100)])
        >>> trainer.fit(module)
        >>> trainer.callbacks[0].monitor.alerts
    """

    def __init__(self, images, *, model: Optional[Union[nn.Module, str]] = None, every: int = 100, **kwargs: Any):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r}: expected an integer >= 1 (log every `every` steps)")
        for k in ("log_dir", "writer"):
            if k in kwargs:
                raise TypeError(f"DAAMCallback: {k} comes from the trainer's logger")
        self.images, self.model, self.every, self.kwargs = images, model, every, kwargs
        self.monitor: Optional[AttentionMonitor] = None

    def _network(self, pl_module) -> nn.Module:
        if isinstance(self.model, nn.Module):
            return self.model
        if isinstance(self.model, str):
            return getattr(pl_module, self.model)
        inner = getattr(pl_module, "model", None)
        return inner if isinstance(inner, nn.Module) else pl_module

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.monitor is not None or not trainer.is_global_zero:
            return
        from lightning.pytorch.loggers import TensorBoardLogger
        tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is not None:
            writer, log_dir = tb.experiment, tb.log_dir
        else:
            import os
            writer, log_dir = None, os.path.join(trainer.default_root_dir, "daam")
        self.monitor = AttentionMonitor(self._network(pl_module), self.images, every=self.every, log_dir=log_dir,
                                        writer=writer, **self.kwargs)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.monitor is not None and trainer.is_global_zero:
            self.monitor.step(trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.close()
