"""Map files: the per-frame maps streamed into a compressed ``.npz`` or a ``.zarr`` group."""
from __future__ import annotations

import os
import tempfile
import zipfile
from typing import List, Optional, Tuple

import numpy as np


class _NpzMaps:
    """Streams (T, L, h, w) maps into a compressed .npz without holding them in memory.

    Maps go to a temporary raw file beside the output while the video runs; at the end the
    .npz is assembled member by member (the .npy header needs the final frame count).
    """

    def __init__(self, path: str, dtype: np.dtype):
        self.path, self.dtype = path, np.dtype(dtype)
        d = os.path.dirname(os.path.abspath(path))
        self._tmp = tempfile.NamedTemporaryFile(prefix=".maps_", suffix=".raw", dir=d, delete=False)
        self._targets: List[np.ndarray] = []
        self.shape: Optional[Tuple[int, ...]] = None
        self.count = 0

    def write(self, maps: np.ndarray, targets: np.ndarray) -> None:
        self.shape = tuple(maps.shape[1:])
        self._tmp.write(np.ascontiguousarray(maps, dtype=self.dtype).tobytes())
        self._targets.append(np.asarray(targets, dtype=np.int64))
        self.count += maps.shape[0]

    def close(self, meta: dict) -> None:
        self._tmp.close()
        try:
            if self.shape is None:
                return
            arrays = dict(meta)
            arrays["targets"] = np.concatenate(self._targets)
            arrays["frame_index"] = np.arange(self.count, dtype=np.int64)
            with zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
                with zf.open("maps.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                             "fortran_order": False,
                                                             "shape": (self.count, *self.shape)})
                    with open(self._tmp.name, "rb") as raw:
                        while True:
                            chunk = raw.read(1 << 22)
                            if not chunk:
                                break
                            f.write(chunk)
                for name, value in arrays.items():
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
        finally:
            os.unlink(self._tmp.name)


class _ZarrMaps:
    """Appends (T, L, h, w) maps to a zarr array (only when zarr is installed)."""

    def __init__(self, path: str, dtype: np.dtype):
        try:
            import zarr
        except ImportError:
            raise ValueError(f"maps_out={path!r}: writing .zarr needs the zarr package (not installed); "
                             f"use a .npz file instead") from None
        self.zarr, self.path, self.dtype = zarr, path, np.dtype(dtype)
        self.root = None
        self.count = 0

    def write(self, maps: np.ndarray, targets: np.ndarray) -> None:
        if self.root is None:
            self.root = self.zarr.open_group(self.path, mode="w")
            shape = tuple(maps.shape[1:])
            self.maps = self.root.create_array("maps", shape=(0, *shape), chunks=(64, *shape), dtype=self.dtype) \
                if hasattr(self.root, "create_array") else \
                self.root.create_dataset("maps", shape=(0, *shape), chunks=(64, *shape), dtype=self.dtype)
            self.targets = self.root.create_array("targets", shape=(0,), chunks=(4096,), dtype="i8") \
                if hasattr(self.root, "create_array") else \
                self.root.create_dataset("targets", shape=(0,), chunks=(4096,), dtype="i8")
        self.maps.append(np.ascontiguousarray(maps, dtype=self.dtype))
        self.targets.append(np.asarray(targets, dtype=np.int64))
        self.count += maps.shape[0]

    def close(self, meta: dict) -> None:
        if self.root is not None:
            self.root.attrs.update({k: (v.item() if isinstance(v, np.generic) else
                                        v.tolist() if isinstance(v, np.ndarray) else v) for k, v in meta.items()})


def _maps_writer(path: Optional[str], dtype):
    if path is None:
        return None
    p = path.rstrip("/")
    if p.endswith(".npz"):
        return _NpzMaps(p, dtype)
    if p.endswith(".zarr"):
        return _ZarrMaps(p, dtype)
    raise ValueError(f"maps_out={path!r}: expected a .npz file or a .zarr directory")
