"""Reading a run's results back: the maps of every explained image, and the errors table."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from ..outputs.store import load_maps
from .shards import ERRORS_FILE

__all__ = ["load_results", "load_errors"]


def load_results(out_dir: str, with_errors: bool = False, mmap: bool = True) -> Dict[str, Any]:
    """Read the explained images of ``out_dir`` back, sorted by id.

    Each shard (``shards/shard-<h>/``) is a maps folder (:mod:`daam_fast.outputs.store`), read
    memory-mapped; the explained rows of all shards are gathered into one array per quantity in
    memory. A run larger than memory is read one shard at a time from ``shards``.

    Returns:
        dict with ``ids`` (n,) str, ``targets`` (n,) int64, ``maps`` (n, L, h, w) float32
        (accumulated maps D_b), ``block_maps`` (n, L, h, w) float32, and ``logits`` (n, K) or
        ``features`` / ``weights`` (n, C) where the model has them; ``map_shape`` (L, h, w),
        ``classes`` (the model's class names), ``shards``: each shard's arrays as
        :func:`daam_fast.outputs.load_maps` reads them (memory-mapped unless ``mmap=False``; one
        row per input of the shard, ``explained`` marking the explained rows, ``index`` with the
        ``ids``, ``paths`` and error reasons). With ``with_errors`` also ``errors``: the errors
        table (see :func:`load_errors`).
    """
    with open(os.path.join(out_dir, "run.json")) as f:
        cfg = json.load(f)
    z = load_maps(out_dir, mmap=mmap)
    index = z.pop("index")
    z.pop("explained")
    out: Dict[str, Any] = dict(z, ids=np.array(index["ids"], dtype=object), map_shape=tuple(cfg["map_shape"]),
                               classes=cfg.get("classes", []))
    if with_errors:
        out["errors"] = load_errors(out_dir)
    return out


def load_errors(out_dir: str) -> List[Dict[str, Optional[str]]]:
    """The errors table of ``out_dir``: [{"id", "path", "reason"}, ...] (``errors.json``, written
    when a run ends)."""
    path = os.path.join(out_dir, ERRORS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)
