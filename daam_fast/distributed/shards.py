"""The run folder: shards written atomically, the lock, the errors table and the manifest."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from typing import Dict, List, Optional

FORMAT_VERSION = 1
SHARD_DIR = "shards"


def _vector_column(rows: List[dict], key: str):
    import pyarrow as pa
    vals = [r.get(key) for r in rows]
    sizes = {len(v) for v in vals if v is not None}
    if not sizes:
        return pa.nulls(len(rows), type=pa.list_(pa.float32()))
    if len(sizes) == 1:
        return pa.array(vals, type=pa.list_(pa.float32(), sizes.pop()))
    return pa.array(vals, type=pa.list_(pa.float32()))


def _write_shard(shard_dir: str, rows: List[dict], daam=None) -> str:
    """Write rows to ``shard-<hash of ids>.parquet``: a temporary name first, fsync, then rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    ids = [r["id"] for r in rows]
    digest = hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:16]
    name = f"shard-{digest}.parquet"
    table = pa.table({
        "id": pa.array(ids, type=pa.string()),
        "path": pa.array([r.get("path") for r in rows], type=pa.string()),
        "error": pa.array([r.get("error") for r in rows], type=pa.string()),
        "target": pa.array([r.get("target") for r in rows], type=pa.int64()),
        "logits": _vector_column(rows, "logits"),
        "maps": _vector_column(rows, "maps"),
        "features": _vector_column(rows, "features"),
        "weights": _vector_column(rows, "weights"),
    })
    os.makedirs(shard_dir, exist_ok=True)
    tmp = os.path.join(shard_dir, f".tmp-{name}-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(shard_dir, name))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return name


# ---------------------------------------------------------------------------------------- run folder
def _complete_shards(out_dir: str) -> List[str]:
    d = os.path.join(out_dir, SHARD_DIR)
    if not os.path.isdir(d):
        return []
    return sorted(f for f in os.listdir(d) if f.startswith("shard-") and f.endswith(".parquet"))


def _shard_ids(out_dir: str) -> Dict[str, List[str]]:
    import pyarrow.parquet as pq
    return {f: pq.read_table(os.path.join(out_dir, SHARD_DIR, f), columns=["id"]).column("id").to_pylist()
            for f in _complete_shards(out_dir)}


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
                os.remove(os.path.join(d, f))


def _finalize(out_dir: str, cfg: dict, expected: Optional[List[str]], expected_count: int, elapsed: float,
              num_actors: int) -> dict:
    """Write errors.parquet and manifest.json from the complete shards; return the manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    shards, seen, dup = [], set(), set()
    err_ids, err_paths, err_reasons = [], [], []
    for f in _complete_shards(out_dir):
        t = pq.read_table(os.path.join(out_dir, SHARD_DIR, f), columns=["id", "path", "error"])
        ids, paths, errs = (t.column(c).to_pylist() for c in ("id", "path", "error"))
        n_err = 0
        for i, p, e in zip(ids, paths, errs):
            if i in seen:
                dup.add(i)
            seen.add(i)
            if e is not None:
                n_err += 1
                err_ids.append(i), err_paths.append(p), err_reasons.append(e)
        shards.append({"file": f"{SHARD_DIR}/{f}", "rows": len(ids), "results": len(ids) - n_err, "errors": n_err})
    errs = pa.table({"id": pa.array(err_ids, type=pa.string()), "path": pa.array(err_paths, type=pa.string()),
                     "reason": pa.array(err_reasons, type=pa.string())})
    tmp = os.path.join(out_dir, f".errors.parquet.tmp-{uuid.uuid4().hex[:8]}")
    pq.write_table(errs, tmp)
    os.replace(tmp, os.path.join(out_dir, "errors.parquet"))
    missing = sorted(set(expected) - seen) if expected is not None else []
    n_missing = len(missing) if expected is not None else max(0, expected_count - len(seen))
    manifest = {
        **cfg,
        "inputs": expected_count,
        "results": sum(s["results"] for s in shards),
        "errors": len(err_ids),
        "missing": n_missing,
        "missing_examples": missing[:20],
        "duplicates": sorted(dup)[:20],
        "complete": n_missing == 0 and not dup,
        "shards": shards,
        "errors_table": "errors.parquet",
        "last_run": {"seconds": round(elapsed, 3), "num_actors": num_actors,
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S")},
    }
    _write_json(os.path.join(out_dir, "manifest.json"), manifest)
    return manifest
