"""The ``maps`` output of ``daam-fast explain``: one ``.npy`` file per quantity for the whole run,
one row per input, in input order.

    out/maps/maps.npy          (N, L, h, w) float32   D_1 ... D_L
    out/maps/block_maps.npy    (N, L, h, w) float32   L_1 ... L_L
    out/maps/targets.npy       (N,) int64             explained class (-1: label-free)
    out/maps/logits.npy        (N, C) float32         (features.npy / weights.npy without a head)
    out/maps/boxes.npy         (N, 4) float32         with --boxes: (x0, y0, x1, y1) on the overlay
    out/maps/explained.npy     (N,) bool              rows written (False: the input failed)
    out/maps/index.json        paths, stems, classes, method, grid, arrays

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

__all__ = ["MAPS_DIR", "MapStore", "load_maps"]

MAPS_DIR = "maps"


class _Rows:
    """One (N, *row) ``.npy`` file written row by row with ``os.pwrite`` (file created sparse, zero rows)."""

    def __init__(self, path: str, n: int, row: tuple, dtype: np.dtype):
        self.row, self.dtype = tuple(row), np.dtype(dtype)
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=(n, *self.row))
        self.offset = mm.offset
        del mm
        self.nbytes = int(np.prod(self.row, dtype=np.int64)) * self.dtype.itemsize
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, rows: Sequence[int], values: np.ndarray) -> None:
        v = np.ascontiguousarray(values, dtype=self.dtype)
        if v.shape[1:] != self.row:
            raise ValueError(f"rows of shape {v.shape[1:]} do not fit this run's (N, {', '.join(map(str, self.row))})")
        start = 0
        for j in range(1, len(rows) + 1):                      # one pwrite per run of consecutive rows
            if j == len(rows) or rows[j] != rows[j - 1] + 1:
                os.pwrite(self.fd, v[start:j].tobytes(), self.offset + rows[start] * self.nbytes)
                start = j

    def close(self) -> None:
        os.close(self.fd)


class MapStore:
    """The run's ``maps/`` folder (see the module docstring): ``write`` rows, then ``close``.

    Each array file is created at its first write, sized for all ``len(paths)`` rows. Safe to
    call from several threads.

    Example:
        >>> store = MapStore("out/maps", paths, method="grad")
        >>> store.write([0, 1], {"maps": m01, "block_maps": b01, "targets": t01}, classes=["cat", "dog"])
        >>> store.close()
    """

    def __init__(self, folder: str, paths: Sequence[str], stems: Optional[Sequence[str]] = None,
                 method: str = "grad", meta: Optional[dict] = None):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.paths, self.method = folder, list(paths), method
        self.stems = list(stems) if stems is not None else None
        self.meta = dict(meta or {})
        self.classes: List[Optional[str]] = [None] * len(self.paths)
        self._files: Dict[str, _Rows] = {}
        self._lock = threading.Lock()
        self._explained = self._open("explained", (), np.bool_)

    def _open(self, name: str, row: tuple, dtype) -> _Rows:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = _Rows(os.path.join(self.folder, name + ".npy"), len(self.paths), row, dtype)
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
            if mark:
                self._explained.write(rows, np.ones(len(rows), dtype=np.bool_))
            for r, c in zip(rows, classes):
                self.classes[r] = c

    def close(self) -> dict:
        """Close the files and write ``index.json``; returns the index."""
        with self._lock:
            index = {"method": self.method, "paths": self.paths, "classes": self.classes,
                     "arrays": {k: [len(self.paths), *f.row] for k, f in self._files.items()}, **self.meta}
            if self.stems is not None:
                index["stems"] = self.stems
            for f in self._files.values():
                f.close()
            self._files = {}
        with open(os.path.join(self.folder, "index.json"), "w") as f:
            json.dump(index, f, indent=1)
        return index


def load_maps(folder: str, mmap: bool = True) -> dict:
    """Read a ``maps/`` folder back: {"maps": (N, L, h, w), "block_maps", "targets", "explained",
    ..., "index": the index.json dict}; arrays memory-mapped unless ``mmap=False``.

    Example:
        >>> z = load_maps("out/maps")
        >>> final = z["maps"][z["explained"], -1]      # D_L of every explained image
    """
    with open(os.path.join(folder, "index.json")) as f:
        index = json.load(f)
    out = {k: np.load(os.path.join(folder, k + ".npy"), mmap_mode="r" if mmap else None) for k in index["arrays"]}
    out["index"] = index
    return out
