"""The inputs of a run: ids and paths of a folder, a glob pattern or a list; image arrays checked."""
from __future__ import annotations

import glob
import os
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np


def _ids_for_paths(paths: Sequence[str], root: Optional[str]) -> List[str]:
    if root is not None:
        return [os.path.relpath(os.path.abspath(p), os.path.abspath(root)).replace(os.sep, "/") for p in paths]
    return [os.path.normpath(p) for p in paths]


def _path_inputs(source) -> Tuple[List[str], List[str]]:
    """(ids, paths) of a folder, a glob pattern, a file or a list of files. Ids are unique."""
    from ..io import expand_inputs
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if os.path.isdir(source):
            paths, problems = expand_inputs([source])
            if problems and not paths:
                raise ValueError(f"{source}: {problems[0][1]}")
            return _ids_for_paths(paths, source), paths
        if any(ch in source for ch in "*?["):
            paths = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
            if not paths:
                raise ValueError(f"{source}: the pattern matches no file")
            return _ids_for_paths(paths, None), paths
        source = [source]
    paths = [os.fspath(p) for p in source]
    if not paths:
        raise ValueError("no input images")
    ids = _ids_for_paths(paths, None)
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ValueError(f"input paths must be unique; repeated: {dup}")
    return ids, paths                               # missing files are recorded as errors, not raised


def _image_from_array(a: Any) -> Tuple[Optional["np.ndarray"], Optional[str]]:
    """An RGB uint8 (H, W, 3) picture from an array row, or (None, reason)."""
    a = np.asarray(a)
    if a.dtype != np.uint8:
        return None, f"wrong mode: pixel type {a.dtype}, expected uint8"
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        return None, f"wrong mode: array of shape {a.shape}, expected (H, W, 3)"
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.shape[2] != 3:
        return None, f"wrong mode: {a.shape[2]} channels, expected RGB (3) or grey (1)"
    if a.shape[0] < 1 or a.shape[1] < 1:
        return None, f"empty image of shape {a.shape}"
    return a, None
