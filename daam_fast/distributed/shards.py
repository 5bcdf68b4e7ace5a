"""The run folder: shards (maps folders) written atomically, the lock, the errors table and the manifest."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from typing import Dict, List, Optional

import numpy as np

from ..outputs.store import SHARDS_DIR as SHARD_DIR
from ..outputs.store import MapStore, shard_folders

FORMAT_VERSION = 2          # 1: Parquet shards; 2: a maps folder per shard
ERRORS_FILE = "errors.json"
# the per-image arrays of a shard beside targets (explained.npy marks the explained rows)
SHARD_ARRAYS = ("maps", "block_maps", "logits", "features", "weights")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_shard(shard_dir: str, rows: List[dict], method: str = "grad") -> str:
    """Write rows to the maps folder ``shard-<hash of ids>/`` (the layout of
    :mod:`daam_fast.outputs.store`): a temporary folder first, every file fsynced, then renamed.

    Each row is a dict with ``id``, ``path``, ``error`` (None: explained) and, when explained,
    ``target``, ``maps`` / ``block_maps`` (L, h, w) and ``logits`` or ``features`` / ``weights``.
    Every row of the shard has a row in each array (zeros and target -1 for a failed input;
    ``explained.npy`` tells them apart); ``index.json`` holds the ids, paths and error reasons.
    """
    ids = [r["id"] for r in rows]
    digest = hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:16]
    name = f"shard-{digest}"
    os.makedirs(shard_dir, exist_ok=True)
    final = os.path.join(shard_dir, name)
    tmp = os.path.join(shard_dir, f".tmp-{name}-{uuid.uuid4().hex[:8]}")
    try:
        ok = [j for j, r in enumerate(rows) if r.get("error") is None]
        store = MapStore(tmp, [r.get("path") for r in rows], method=method,
                         meta={"ids": ids, "errors": [r.get("error") for r in rows]})
        store.write(range(len(rows)), {"targets": np.full(len(rows), -1, np.int64)}, mark=False)
        if ok:
            arrays = {k: np.stack([rows[j][k] for j in ok]) for k in SHARD_ARRAYS if rows[ok[0]].get(k) is not None}
            store.meta["grid"] = list(arrays["maps"].shape[2:])
            store.write(ok, dict(arrays, targets=np.array([rows[j]["target"] for j in ok], np.int64)),
                        classes=[rows[j].get("class") for j in ok])
        store.close()
        for f in os.listdir(tmp):
            _fsync(os.path.join(tmp, f))
        _fsync(tmp)
        if os.path.isdir(final):             # the same ids written before (a retried task): keep that one
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
        _fsync(shard_dir)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return name


# ---------------------------------------------------------------------------------------- run folder
def _complete_shards(out_dir: str) -> List[str]:
    """Names of the complete shard folders (a temporary one starts with ``.tmp-``)."""
    return shard_folders(out_dir)


def _shard_index(out_dir: str, name: str) -> dict:
    with open(os.path.join(out_dir, SHARD_DIR, name, "index.json")) as f:
        return json.load(f)


def _shard_ids(out_dir: str) -> Dict[str, List[str]]:
    return {f: _shard_index(out_dir, f)["ids"] for f in _complete_shards(out_dir)}


def _write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


class _Lock:
    """out_dir/.lock holding host and pid; a lock of a dead process on this host is taken over."""

    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, ".lock")
        self.me = f"{socket.gethostname()} {os.getpid()}"

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, self.me.encode())
                os.close(fd)
                return self
            except FileExistsError:
                try:
                    host, pid = open(self.path).read().split()
                except (OSError, ValueError):
                    host, pid = "", "0"
                alive = host != socket.gethostname() or _pid_alive(int(pid))
                if alive:
                    raise RuntimeError(f"{os.path.dirname(self.path)} is in use by another run ({host} pid {pid}); "
                                       f"remove {self.path} if that run is gone") from None
                os.remove(self.path)
        raise RuntimeError(f"could not lock {self.path}")

    def __exit__(self, *exc):
        try:
            if open(self.path).read() == self.me:
                os.remove(self.path)
        except OSError:
            pass
        return False


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True



def _clean(out_dir: str) -> None:
    d = os.path.join(out_dir, SHARD_DIR)
    if os.path.isdir(d):
        for f in os.listdir(d):
            if f.startswith(".tmp-"):
                p = os.path.join(d, f)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def _finalize(out_dir: str, cfg: dict, expected: Optional[List[str]], expected_count: int, elapsed: float,
              num_actors: int) -> dict:
    """Write errors.json and manifest.json from the complete shards; return the manifest."""
    shards, seen, dup, errors = [], set(), set(), []
    for f in _complete_shards(out_dir):
        index = _shard_index(out_dir, f)
        ids, paths, errs = index["ids"], index["paths"], index["errors"]
        n_err = 0
        for i, p, e in zip(ids, paths, errs):
            if i in seen:
                dup.add(i)
            seen.add(i)
            if e is not None:
                n_err += 1
                errors.append({"id": i, "path": p, "reason": e})
        shards.append({"file": f"{SHARD_DIR}/{f}", "rows": len(ids), "results": len(ids) - n_err, "errors": n_err})
    _write_json(os.path.join(out_dir, ERRORS_FILE), errors)
    missing = sorted(set(expected) - seen) if expected is not None else []
    n_missing = len(missing) if expected is not None else max(0, expected_count - len(seen))
    manifest = {
        **cfg,
        "inputs": expected_count,
        "results": sum(s["results"] for s in shards),
        "errors": len(errors),
        "missing": n_missing,
        "missing_examples": missing[:20],
        "duplicates": sorted(dup)[:20],
        "complete": n_missing == 0 and not dup,
        "shards": shards,
        "errors_table": ERRORS_FILE,
        "last_run": {"seconds": round(elapsed, 3), "num_actors": num_actors,
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S")},
    }
    _write_json(os.path.join(out_dir, "manifest.json"), manifest)
    return manifest
