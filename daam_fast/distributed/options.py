"""The options of a run, :class:`BatchOptions`: every default typed once (the ``daam-fast batch``
flags are derived from it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["BatchOptions"]


@dataclass
class BatchOptions:
    """How :func:`daam_fast.distributed.explain_dataset` explains a data set.

    Attributes:
        method: a method of :class:`daam_fast.DAAM` ("grad", "direct", ...).
        target: None (each image's prediction) or one class index for every image.
        num_actors: size of the actor pool (one model per actor).
        num_cpus_per_actor: CPUs reserved per actor; torch uses that many threads in it.
        num_gpus_per_actor: GPUs per actor (> 0 puts the model on "cuda").
        shard_size: images per shard (one ``map_batches`` batch).
        batch_size: images per model call inside an actor.
        overwrite: delete the results of an earlier run with other settings instead of refusing.
        ray_address: connect to this cluster ("auto" or "ray://host:port"); without it, a
            local instance is started (``num_cpus``) and shut down at the end. When Ray is
            already initialised in this process, that instance is used and both are ignored.
        num_cpus: CPUs of the local Ray instance (None: all).
        progress: show Ray Data's progress bars.
        daam_options: extra :class:`daam_fast.DAAM` keywords for every actor (``activation_checkpointing``,
            ``compile``, ``backend``, ...: see :func:`daam_fast.distributed.spec.daam_option_names`);
            they change the cost, not the maps, so a resumed run may differ in them.
    """

    method: str = "grad"
    target: Optional[int] = field(default=None, metadata={
        "help": "class to explain (default: each image's prediction)"})
    num_actors: int = field(default=1, metadata={"help": "actors in the pool (one model each)"})
    num_cpus_per_actor: float = field(default=1.0, metadata={
        "flag": "--cpus-per-actor", "help": "CPUs (torch threads) per actor"})
    num_gpus_per_actor: float = field(default=0.0, metadata={
        "flag": "--gpus-per-actor", "help": "GPUs per actor (--device cuda implied)"})
    shard_size: int = field(default=64, metadata={"help": "images per shard file"})
    batch_size: int = field(default=16, metadata={"help": "images per model call"})
    overwrite: bool = field(default=False, metadata={"help": "replace results of a run with other settings"})
    ray_address: Optional[str] = field(default=None, metadata={
        "help": "Ray cluster to join ('auto'); default: start a local Ray"})
    num_cpus: Optional[int] = field(default=None, metadata={"help": "CPUs of the local Ray instance (default: all)"})
    progress: bool = field(default=False, metadata={"cli": False})
    daam_options: dict = field(default_factory=dict, metadata={"cli": False})

    def check(self) -> None:
        """Raises ValueError naming the first option out of its range."""
        for key in ("num_actors", "shard_size", "batch_size"):
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{key} must be a positive int, got {val!r}")
        if self.num_cpus_per_actor <= 0 or self.num_gpus_per_actor < 0:
            raise ValueError("num_cpus_per_actor must be > 0 and num_gpus_per_actor >= 0")
        if self.target is not None and (not isinstance(self.target, int) or isinstance(self.target, bool)):
            raise ValueError(f"target must be None or an int, got {self.target!r}")
