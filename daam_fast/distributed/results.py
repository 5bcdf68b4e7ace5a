"""Reading a run's results back: the maps of every explained image, and the errors table."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from .._extras import require
from .shards import SHARD_DIR, _complete_shards

__all__ = ["load_results", "load_errors"]


def load_results(out_dir: str, with_errors: bool = False) -> Dict[str, Any]:
    """Read the explained images of ``out_dir`` back, sorted by id.

    Returns:
        dict with ``ids`` (n,) str, ``targets`` (n,) int64, ``maps`` (n, L, h, w) float32
        (accumulated maps D_b), ``block_maps`` (n, L, h, w) (differences of ``maps``), and
        ``logits`` (n, K) or ``features`` / ``weights`` (n, C) where the model has them.
        With ``with_errors`` also ``errors``: the errors table (see :func:`load_errors`).
    """
    pa = require("pyarrow", "load_results")
    pq = require("pyarrow.parquet", "load_results")
    with open(os.path.join(out_dir, "run.json")) as f:
        cfg = json.load(f)
    L, h, w = cfg["map_shape"]
    files = [os.path.join(out_dir, SHARD_DIR, f) for f in _complete_shards(out_dir)]
    tables = [pq.read_table(f) for f in files]
    t = pa.concat_tables(tables, promote_options="permissive") if tables else None
    out: Dict[str, Any] = {"map_shape": (L, h, w), "classes": cfg.get("classes", [])}
    if t is None or t.num_rows == 0:
        out.update(ids=np.array([], dtype=object), targets=np.zeros(0, np.int64), maps=np.zeros((0, L, h, w), np.float32))
        out["block_maps"] = out["maps"].copy()
    else:
        ok = [e is None for e in t.column("error").to_pylist()]
        t = t.filter(pa.array(ok))
        ids = np.array(t.column("id").to_pylist(), dtype=object)
        order = np.argsort(ids, kind="stable")
        out["ids"] = ids[order]
        out["targets"] = np.array(t.column("target").to_pylist(), dtype=np.int64)[order]
        for key in ("maps", "logits", "features", "weights"):
            vals = t.column(key).to_pylist()
            if vals and vals[0] is not None:
                arr = np.array(vals, dtype=np.float32)[order]
                out[key] = arr.reshape(-1, L, h, w) if key == "maps" else arr
        out["block_maps"] = np.diff(out["maps"], axis=1, prepend=0.0).astype(np.float32)
    if with_errors:
        out["errors"] = load_errors(out_dir)
    return out


def load_errors(out_dir: str) -> List[Dict[str, Optional[str]]]:
    """The errors table of ``out_dir``: [{"id", "path", "reason"}, ...] (from errors.parquet)."""
    pq = require("pyarrow.parquet", "load_errors")
    path = os.path.join(out_dir, "errors.parquet")
    if not os.path.exists(path):
        return []
    return pq.read_table(path).to_pylist()
