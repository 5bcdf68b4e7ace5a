"""The one map layout of every run (``daam-fast explain``'s ``maps`` output, ``daam-fast video
--maps``): one memory-mappable ``.npy`` file per quantity, one row per input (image or video
frame) in input order, and an ``index.json``.

    out/maps/maps.npy          (N, L, h, w) float32   D_1 ... D_L
    out/maps/block_maps.npy    (N, L, h, w) float32   L_1 ... L_L
    out/maps/targets.npy       (N,) int64             explained class (-1: label-free)
    out/maps/logits.npy        (N, C) float32         (features.npy / weights.npy without a head)
    out/maps/boxes.npy         (N, 4) float32         with --boxes: (x0, y0, x1, y1) on the overlay
    out/maps/explained.npy     (N,) bool              rows written (False: the input failed)
    out/maps/index.json        paths, stems, classes, method, grid, arrays

A ``daam-fast batch`` run writes one such folder per shard (``shards/shard-<h>/``), its index
holding the ids, paths and error reasons of the shard's inputs (a failed input: a zero row,
target -1, explained False).

A video's maps folder holds ``maps.npy``, ``block_maps.npy``, ``targets.npy`` and ``time.npy``
((T,) float64, each frame's time in seconds from the first) and its index the video's fps, size,
smoothing.

Rows are written with ``os.pwrite`` as batches come (memory stays flat, one file per quantity
instead of one per image: creating a file costs 0.02-0.9 ms of system CPU on this machine's
disk, as much as the shipped model's explanation of an image; benchmarks/NOTES.md). Read
them with ``np.load(path, mmap_mode="r")`` or :func:`load_maps`.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["MAPS_DIR", "SHARDS_DIR", "MapStore", "load_maps", "shard_folders"]

MAPS_DIR = "maps"
SHARDS_DIR = "shards"      # a ``daam-fast batch`` run: shards/shard-<h>/, one maps folder per shard


HEADER = 128   # bytes of each .npy header (format 1.0), room for any row count: rewritten at close


def _header(dtype: np.dtype, shape: tuple) -> bytes:
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
    body = text.encode("latin1").ljust(HEADER - 10 - 1) + b"\n"
    if len(body) != HEADER - 10:
        raise ValueError(f"an array of shape {shape} needs a longer .npy header")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


class _Rows:
    """One (N, *row) ``.npy`` file written row by row with ``os.pwrite`` (sparse: unwritten rows are
    zero). ``n``: the row count, or None: as many as the highest row written (a stream)."""

    def __init__(self, path: str, n: Optional[int], row: tuple, dtype: np.dtype):
        self.row, self.dtype, self.n, self.rows = tuple(row), np.dtype(dtype), n, 0
        self.nbytes = int(np.prod(self.row, dtype=np.int64)) * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.pwrite(self.fd, _header(self.dtype, (n or 0, *self.row)), 0)
        os.ftruncate(self.fd, HEADER + (n or 0) * self.nbytes)

    def write(self, rows: Sequence[int], values: np.ndarray) -> None:
        v = np.ascontiguousarray(values, dtype=self.dtype)
        if v.shape[1:] != self.row:
            raise ValueError(f"rows of shape {v.shape[1:]} do not fit this run's (N, {', '.join(map(str, self.row))})")
        start = 0
        for j in range(1, len(rows) + 1):                      # one pwrite per run of consecutive rows
            if j == len(rows) or rows[j] != rows[j - 1] + 1:
                os.pwrite(self.fd, v[start:j].tobytes(), HEADER + rows[start] * self.nbytes)
                start = j
        self.rows = max([self.rows] + [r + 1 for r in rows])

    def close(self) -> int:
        n = self.n if self.n is not None else self.rows
        os.pwrite(self.fd, _header(self.dtype, (n, *self.row)), 0)
        os.ftruncate(self.fd, HEADER + n * self.nbytes)
        os.close(self.fd)
        return n


class MapStore:
    """A run's maps folder (see the module docstring): ``write`` rows, then ``close``.

    Each array file is created at its first write, sized for all ``len(paths)`` rows (``paths``
    None: a stream, as many rows as written, e.g. a video's frames). Safe to call from several
    threads.

    Example:
        >>> store = MapStore("out/maps", paths, method="grad")
        >>> store.write([0, 1], {"maps": m01, "block_maps": b01, "targets": t01}, classes=["cat", "dog"])
        >>> store.close()
    """

    def __init__(self, folder: str, paths: Optional[Sequence[str]] = None, stems: Optional[Sequence[str]] = None,
                 method: str = "grad", meta: Optional[dict] = None):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.method = folder, method
        self.paths = list(paths) if paths is not None else None
        self.stems = list(stems) if stems is not None else None
        self.meta = dict(meta or {})
        self.classes: List[Optional[str]] = [None] * len(self.paths or ())
        self._files: Dict[str, _Rows] = {}
        self._lock = threading.Lock()
        self._explained = self._open("explained", (), np.bool_) if self.paths is not None else None

    def _open(self, name: str, row: tuple, dtype) -> _Rows:
        f = self._files.get(name)
        if f is None:
            n = len(self.paths) if self.paths is not None else None
            f = self._files[name] = _Rows(os.path.join(self.folder, name + ".npy"), n, row, dtype)
        return f

    def write(self, rows: Sequence[int], arrays: Dict[str, np.ndarray], classes: Sequence[str] = (),
              mark: bool = True) -> None:
        """Write ``arrays[k][j]`` as row ``rows[j]`` of ``k.npy`` for every k, then (``mark``) mark
        the rows explained.

        Raises:
            ValueError: an array whose rows do not match the shape of the run's file (e.g. another
            grid); nothing of these rows is marked explained.
        """
        rows = [int(r) for r in rows]
        with self._lock:
            for k, v in arrays.items():
                v = np.asarray(v)
                if v.shape[0] != len(rows):
                    raise ValueError(f"{k}: {v.shape[0]} rows for {len(rows)} images")
                self._open(k, v.shape[1:], v.dtype).write(rows, v)
            if mark and self._explained is not None:
                self._explained.write(rows, np.ones(len(rows), dtype=np.bool_))
            for r, c in zip(rows, classes):
                if r < len(self.classes):
                    self.classes[r] = c

    def close(self) -> dict:
        """Close the files and write ``index.json``; returns the index."""
        with self._lock:
            arrays = {k: [f.close(), *f.row] for k, f in self._files.items()}
            index = {"method": self.method, "arrays": arrays, **self.meta}
            if self.paths is not None:
                index.update(paths=self.paths, classes=self.classes)
            if self.stems is not None:
                index["stems"] = self.stems
            self._files = {}
        with open(os.path.join(self.folder, "index.json"), "w") as f:
            json.dump(index, f, indent=1)
        return index


def shard_folders(run_dir: str) -> List[str]:
    """Names of the complete shards of a ``daam-fast batch`` run (``run_dir/shards/shard-<h>/``,
    each a maps folder; a folder being written is named ``.tmp-...``), sorted."""
    d = os.path.join(run_dir, SHARDS_DIR)
    if not os.path.isdir(d):
        return []
    return sorted(f for f in os.listdir(d) if f.startswith("shard-") and os.path.isfile(os.path.join(d, f, "index.json")))


def _load_sharded(run_dir: str, mmap: bool) -> dict:
    """A batch run: the explained rows of every shard, sorted by id, gathered into one array per
    quantity (in memory); ``shards``: each shard's own arrays (memory-mapped unless ``mmap=False``)."""
    folders = [os.path.join(run_dir, SHARDS_DIR, f) for f in shard_folders(run_dir)]
    shards = [load_maps(f, mmap) for f in folders]
    picks = sorted((z["index"]["ids"][r], s, int(r)) for s, z in enumerate(shards)
                   for r in np.flatnonzero(np.asarray(z["explained"])))
    groups: Dict[int, tuple] = {}                           # shard -> (positions in the output, its rows)
    for j, (_, s, r) in enumerate(picks):
        groups.setdefault(s, ([], []))
        groups[s][0].append(j), groups[s][1].append(r)
    out: dict = {}
    for k in dict.fromkeys(k for z in shards for k in z["index"]["arrays"] if k != "explained"):
        first = next(z[k] for z in shards if k in z)
        arr = out[k] = np.zeros((len(picks), *first.shape[1:]), first.dtype)
        for s, (pos, rows) in groups.items():
            if k in shards[s]:
                arr[pos] = shards[s][k][rows]
    if "maps" not in out:                                   # nothing explained yet
        with open(os.path.join(run_dir, "run.json")) as f:
            L, h, w = json.load(f)["map_shape"]
        out.update(maps=np.zeros((0, L, h, w), np.float32), block_maps=np.zeros((0, L, h, w), np.float32),
                   targets=np.zeros(0, np.int64))
    out["explained"] = np.ones(len(picks), np.bool_)
    out["index"] = {"ids": [p[0] for p in picks], "paths": [shards[s]["index"]["paths"][r] for _, s, r in picks],
                    "classes": [shards[s]["index"]["classes"][r] for _, s, r in picks],
                    "grid": list(out["maps"].shape[2:]), "shards": folders}
    out["shards"] = shards
    return out


def load_maps(path: str, mmap: bool = True) -> dict:
    """Read the maps of any run back: {"maps": (N, L, h, w), "block_maps", "targets", ...,
    "index": the index.json dict}; arrays memory-mapped unless ``mmap=False``.

    Args:
        path: a maps folder (``out/maps``, a video's ``--maps`` folder, one shard of a batch
            run), an explain run's folder (``out``, which holds ``maps/``), or a ``daam-fast
            batch`` run's folder. A batch run's shards are maps folders: its arrays hold the
            explained images of every shard, sorted by id, gathered in memory; "index" holds
            their ids, paths, classes and the shard folders, and "shards" each shard's own
            arrays (memory-mapped: read a run larger than memory one shard at a time).

    Example:
        >>> z = load_maps("out")
        >>> final = z["maps"][z["explained"], -1]      # D_L of every explained image
    """
    if not os.path.exists(os.path.join(path, "index.json")) and os.path.isdir(os.path.join(path, MAPS_DIR)):
        path = os.path.join(path, MAPS_DIR)
    if os.path.exists(os.path.join(path, "run.json")) and not os.path.exists(os.path.join(path, "index.json")):
        return _load_sharded(path, mmap)
    if not os.path.exists(os.path.join(path, "index.json")):
        raise FileNotFoundError(f"{path}: no index.json: not the maps of a run")
    with open(os.path.join(path, "index.json")) as f:
        index = json.load(f)
    out = {k: np.load(os.path.join(path, k + ".npy"), mmap_mode="r" if mmap else None) for k in index["arrays"]}
    out["index"] = index
    return out
