"""The actor: a Ray Data class-based UDF that loads the model once and writes one shard per call."""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .inputs import _image_from_array
from .shards import SHARD_DIR, _write_shard
from .spec import ModelSpec


class _Explainer:
    """Ray Data class-based UDF: one model per actor; one call = one shard written to disk."""

    def __init__(self, spec: ModelSpec, out_dir: str, method: str, target: Optional[int], batch_size: int,
                 device: str, threads: int, skip_ids: Optional[frozenset] = None, shard_delay: float = 0.0,
                 daam_options: Optional[dict] = None):
        import torch
        from ..explainer import DAAM
        from ..preprocess import input_spec
        from ..targets import BankTarget
        if threads > 0:
            torch.set_num_threads(threads)
        from ..models import class_names
        self.model, self.bank = spec.load(device)
        self.names = list(class_names(self.model) or [])
        self.device = device
        self.spec = input_spec(self.model)
        self.method = method
        self.daam = DAAM(self.model, method=method, **(daam_options or {}))
        # patched for the actor's lifetime (one model per actor): the stack is closed with the actor
        self._context = contextlib.ExitStack()
        self._context.enter_context(self.daam)
        self.target = BankTarget(self.bank) if self.bank is not None else target
        self.batch_size = max(1, int(batch_size))
        self.shard_dir = os.path.join(out_dir, SHARD_DIR)
        self.skip = skip_ids or frozenset()
        self.shard_delay = shard_delay

    def _read(self, row_path, row_image) -> Tuple[Optional[Any], Optional[str]]:
        import torch
        from ..io import ImageReadError, read_image
        try:
            if row_image is not None:
                a, why = _image_from_array(row_image)
                if a is None:
                    return None, why
                return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).contiguous(), None
            return read_image(str(row_path), max_side=4 * max(self.spec.size)), None
        except ImageReadError as e:
            return None, str(e)
        except Exception as e:  # noqa: BLE001 - never crash the job on one input
            return None, f"cannot read: {type(e).__name__}: {e}"

    def _explain(self, pics: List[Any]) -> List[Tuple[Optional[dict], Optional[str]]]:
        """Explain pictures; a failing batch is retried image by image so only the bad one fails."""
        import torch
        from ..preprocess import prepare
        try:
            x, _ = prepare(pics, self.spec, device=self.device)
            res = self.daam(x, target=self.target).to("cpu")
        except (ValueError, RuntimeError, TypeError) as e:
            if len(pics) == 1:
                return [(None, f"explanation failed: {type(e).__name__}: {e}")]
            return [r for p in pics for r in self._explain([p])]
        out = []
        for i in range(len(pics)):
            maps = res.maps[i]
            if not bool(torch.isfinite(maps).all()):
                out.append((None, "explanation failed: non-finite maps"))
                continue
            t = int(res.targets[i])
            item = {"target": t, "maps": maps.numpy().astype(np.float32),
                    "block_maps": res.block_maps[i].numpy().astype(np.float32),
                    "class": (self.names[t] if 0 <= t < len(self.names) else str(t)) if t >= 0 else "label-free"}
            for key in ("logits", "features", "weights"):
                t = getattr(res, key)
                item[key] = None if t is None else t[i].numpy().astype(np.float32)
            out.append((item, None))
        return out

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        ids = [str(i) for i in batch["id"]]
        n = len(ids)
        paths = list(batch["path"]) if "path" in batch else [None] * n
        images = list(batch["image"]) if "image" in batch else [None] * n
        keep = [i for i in range(n) if ids[i] not in self.skip]
        if not keep:
            return {"shard": np.array([], dtype=object), "rows": np.array([], dtype=np.int64),
                    "results": np.array([], dtype=np.int64), "errors": np.array([], dtype=np.int64)}
        rows: List[dict] = []
        pending: List[Tuple[int, Any]] = []
        for i in keep:
            row = {"id": ids[i], "path": None if paths[i] is None else str(paths[i]), "error": None}
            pic, why = self._read(paths[i], images[i])
            row["error"] = why
            rows.append(row)
            if pic is not None:
                pending.append((len(rows) - 1, pic))
        for s in range(0, len(pending), self.batch_size):
            chunk = pending[s:s + self.batch_size]
            for (r, _), (item, why) in zip(chunk, self._explain([p for _, p in chunk])):
                if item is None:
                    rows[r]["error"] = why
                else:
                    rows[r].update(item)
        name = _write_shard(self.shard_dir, rows, self.method)
        if self.shard_delay:
            time.sleep(self.shard_delay)
        n_err = sum(r["error"] is not None for r in rows)
        return {"shard": np.array([name], dtype=object), "rows": np.array([len(rows)], dtype=np.int64),
                "results": np.array([len(rows) - n_err], dtype=np.int64),
                "errors": np.array([n_err], dtype=np.int64)}

    def __del__(self):
        ctx = getattr(self, "_context", None)
        if ctx is not None:
            ctx.close()
