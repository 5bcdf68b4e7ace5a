"""Explaining many images on a Ray cluster (Ray Data ``map_batches`` on an actor pool).

Layout of an output directory written by :func:`explain_dataset`::

    out_dir/
      run.json              the run's settings (model spec, method, target, map shape); a rerun
                            with other settings refuses to mix its results in (overwrite=True)
      shards/shard-<h>.parquet
                            one row per input image: id, path, error (null if explained),
                            target, logits, maps (flattened (L, h, w) float32), features, weights
      errors.parquet        the errors table: id, path, reason (one row per bad input)
      manifest.json         shards with their row counts, totals, map shape, classes, complete flag

How a run works: the inputs (a folder, a list of paths, or a Ray dataset) become a Ray
dataset of rows ``{"id", "path"}`` (or ``{"id", "image"}``). ``map_batches`` with
``batch_size=shard_size`` hands one batch (= one shard) at a time to an actor of a fixed
pool; each actor loads the model once (from a picklable :class:`ModelSpec`), reads and
explains the images in model batches of ``batch_size``, and writes the shard to a
temporary name, then renames it: a file named ``shard-*.parquet`` is always complete. The
shard name is a hash of its image ids. A bad image (unreadable, truncated, wrong mode, an
explanation that fails or is not finite) becomes an error row with the reason, so every
input ends up in exactly one shard row: inputs = results + errors.

Resuming: a rerun reads the ids of the complete shards and skips those images; temporary
files of an interrupted run are deleted. A lock file keeps two live runs out of one folder.

On a cluster, ``out_dir`` and the image paths must be reachable from every node (a shared
file system), as with any Ray Data file sink.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import socket
import sys
import time
import uuid
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["ModelSpec", "explain_dataset", "load_results", "load_errors", "add_cli"]

FORMAT_VERSION = 1
SHARD_DIR = "shards"
_RUN_KEYS = ("model", "method", "target", "map_shape", "format")


# ---------------------------------------------------------------------------------------- model spec
@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A picklable description of the model, resolved inside each actor.

    Args:
        name: a shipped model ("shapes_vit", "shapes_vit_ssl"; None = "shapes_vit") or a timm name.
        checkpoint: weights file for ``name`` (or a zoo-format .safetensors), see
            :func:`daam_fast.models.load_model_spec`.
        pretrained: timm's pretrained weights (downloaded by every actor: prefer ``checkpoint``).
        random_weights: a timm model with random weights (testing only).
        headless: drop the classifier head (self-supervised path).
        bank: memory bank file (.pt) for a headless model; the shipped ssl model uses its own.

    Example:
        >>> ModelSpec("deit_small_patch16_224", checkpoint="/shared/deit_small.pth")
    """

    name: Optional[str] = None
    checkpoint: Optional[str] = None
    pretrained: bool = False
    random_weights: bool = False
    headless: bool = False
    bank: Optional[str] = None

    def __post_init__(self):
        if self.name is None and self.checkpoint is None:       # one spelling of the default model
            object.__setattr__(self, "name", "shapes_vit")
        if self.name == "shapes_vit_ssl":
            object.__setattr__(self, "headless", True)

    @classmethod
    def coerce(cls, spec: Union["ModelSpec", str, dict, None]) -> "ModelSpec":
        """A ModelSpec from a spec, a model name / checkpoint path (str) or a dict of fields."""
        if isinstance(spec, ModelSpec):
            return spec
        if spec is None:
            return cls()
        if isinstance(spec, str):
            if os.path.isfile(spec) or spec.endswith((".safetensors", ".pt", ".pth")):
                return cls(checkpoint=spec)
            return cls(name=spec)
        if isinstance(spec, dict):
            unknown = set(spec) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"model_spec: unknown fields {sorted(unknown)}")
            return cls(**spec)
        raise ValueError(f"model_spec must be a ModelSpec, a str or a dict, not {type(spec).__name__}")

    def load(self, device: str = "cpu"):
        """(model, bank or None): the model in eval mode on ``device``."""
        from .models import load_model_spec
        model = load_model_spec(self.name, self.checkpoint, self.pretrained, self.random_weights, device,
                                headless=self.headless)
        bank = None
        if self.bank:
            from .bank import MemoryBank
            bank = MemoryBank.load(self.bank)
        elif getattr(model, "daam_name", None) == "shapes_vit_ssl":
            from . import zoo
            bank = zoo.load_bank("shapes_vit")
        return model, bank


# ---------------------------------------------------------------------------------------- inputs
def _ids_for_paths(paths: Sequence[str], root: Optional[str]) -> List[str]:
    if root is not None:
        return [os.path.relpath(os.path.abspath(p), os.path.abspath(root)).replace(os.sep, "/") for p in paths]
    return [os.path.normpath(p) for p in paths]


def _path_inputs(source) -> Tuple[List[str], List[str]]:
    """(ids, paths) of a folder, a glob pattern, a file or a list of files. Ids are unique."""
    from .io import expand_inputs
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


# ---------------------------------------------------------------------------------------- the actor
class _Explainer:
    """Ray Data class-based UDF: one model per actor; one call = one shard written to disk."""

    def __init__(self, spec: ModelSpec, out_dir: str, method: str, target: Optional[int], batch_size: int,
                 device: str, threads: int, skip_ids: Optional[frozenset] = None, shard_delay: float = 0.0,
                 daam_options: Optional[dict] = None):
        import torch
        from . import DAAM
        from .preprocess import input_spec
        if threads > 0:
            torch.set_num_threads(threads)
        self.model, self.bank = spec.load(device)
        self.device = device
        self.spec = input_spec(self.model)
        self.daam = DAAM(self.model, method=method, **(daam_options or {}))
        self.daam.__enter__()               # patched for the actor's lifetime (one model per actor)
        self.target = target
        self.batch_size = max(1, int(batch_size))
        self.shard_dir = os.path.join(out_dir, SHARD_DIR)
        self.skip = skip_ids or frozenset()
        self.shard_delay = shard_delay

    def _read(self, row_path, row_image) -> Tuple[Optional[Any], Optional[str]]:
        import torch
        from .io import ImageReadError, read_image
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
        from .preprocess import prepare
        try:
            x, _ = prepare(pics, self.spec, device=self.device)
            res = self.daam(x, target=self.target, bank=self.bank).to("cpu")
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
            item = {"target": int(res.targets[i]), "maps": maps.numpy().reshape(-1).astype(np.float32)}
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
        name = _write_shard(self.shard_dir, rows, self.daam)
        if self.shard_delay:
            time.sleep(self.shard_delay)
        n_err = sum(r["error"] is not None for r in rows)
        return {"shard": np.array([name], dtype=object), "rows": np.array([len(rows)], dtype=np.int64),
                "results": np.array([len(rows) - n_err], dtype=np.int64),
                "errors": np.array([n_err], dtype=np.int64)}


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


def _run_config(spec: ModelSpec, method: str, target: Optional[int], daam_options: Optional[dict] = None) -> dict:
    """Settings that determine the maps, and the map shape, from a model loaded on the driver."""
    import torch
    from . import DAAM
    from ._model import token_grid
    from .models import class_names
    from .preprocess import input_spec
    model, _ = spec.load("cpu")
    daam = DAAM(model, method=method, **(daam_options or {}))    # ValueError here if it cannot be explained
    size = input_spec(model).size
    h, w = token_grid(model, torch.zeros(1, 3, *size))
    cfg = {"format": FORMAT_VERSION, "model": dataclasses.asdict(spec), "method": method, "target": target,
           "map_shape": [daam.layout.depth, h, w], "input_size": list(size),
           "classes": list(class_names(model) or [])}
    del daam, model
    return cfg


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


# ---------------------------------------------------------------------------------------- public API
_DAAM_OPTIONS = {"checkpoint", "compile", "reduce_last_block", "reduce_first_block", "backend"}


def explain_dataset(source, out_dir: str, model_spec: Union[ModelSpec, str, dict, None] = None, *,
                    method: str = "grad", target: Optional[int] = None, num_actors: int = 1,
                    num_cpus_per_actor: float = 1.0, num_gpus_per_actor: float = 0.0, shard_size: int = 64,
                    batch_size: int = 16, overwrite: bool = False, ray_address: Optional[str] = None,
                    num_cpus: Optional[int] = None, progress: bool = False, daam_options: Optional[dict] = None,
                    _shard_delay: float = 0.0) -> dict:
    """Explain every image of ``source`` with Ray Data and write Parquet shards plus a manifest.

    Args:
        source: a folder (its image files, recursively; ids are paths relative to it), a glob
            pattern, a list of paths (ids are the normalised paths), or a ``ray.data.Dataset``
            with columns ``id`` (optional, default ``path``) and ``path`` or ``image`` (uint8
            (H, W, 3) arrays, as ``ray.data.read_images(..., include_paths=True)`` gives).
        out_dir: output folder (see the module docstring for its layout). An interrupted run
            is resumed by calling again with the same arguments.
        model_spec: :class:`ModelSpec`, a shipped / timm model name or checkpoint path (str),
            or a dict of ModelSpec fields; None = the shipped ``shapes_vit``.
        method: "grad" or "direct" (see :class:`daam_fast.DAAM`).
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
        progress: show Ray Data's progress bars.
        daam_options: extra :class:`daam_fast.DAAM` keywords for every actor (``checkpoint``,
            ``compile``); they change the cost, not the maps, so a resumed run may differ in them.

    Returns:
        The manifest (dict): ``inputs``, ``results``, ``errors``, ``missing``, ``complete``,
        ``shards`` [{file, rows, results, errors}], ``map_shape`` [L, h, w], ``classes``, ...

    Raises:
        ValueError: bad arguments, no inputs, a model DAAM cannot explain, or ``out_dir``
            holding the results of a run with other settings (without ``overwrite``).

    Example:
        >>> m = explain_dataset("photos/", "out/", ModelSpec("shapes_vit"), num_actors=2)
        >>> m["results"] + m["errors"] == m["inputs"]
        True
    """
    if method not in ("grad", "direct"):
        raise ValueError(f"method={method!r}: expected 'grad' or 'direct'")
    for key, val in (("num_actors", num_actors), ("shard_size", shard_size), ("batch_size", batch_size)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{key} must be a positive int, got {val!r}")
    if num_cpus_per_actor <= 0 or num_gpus_per_actor < 0:
        raise ValueError("num_cpus_per_actor must be > 0 and num_gpus_per_actor >= 0")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool)):
        raise ValueError(f"target must be None or an int, got {target!r}")
    opts = dict(daam_options or {})
    unknown = set(opts) - _DAAM_OPTIONS
    if unknown:
        raise ValueError(f"daam_options: unknown {sorted(unknown)}; known: {sorted(_DAAM_OPTIONS)}")
    if opts.get("checkpoint") and method != "grad":
        raise ValueError("daam_options checkpoint=True applies to method='grad'")
    spec = ModelSpec.coerce(model_spec)
    import ray
    started = False
    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        return _run(ray, source, out_dir, spec, method, target, num_actors, num_cpus_per_actor,
                    num_gpus_per_actor, shard_size, batch_size, overwrite, progress, _shard_delay,
                    dict(daam_options or {}))
    finally:
        if started:
            ray.shutdown()


def _run(ray, source, out_dir, spec, method, target, num_actors, num_cpus_per_actor, num_gpus_per_actor,
         shard_size, batch_size, overwrite, progress, shard_delay, daam_options=None) -> dict:
    import shutil
    t0 = time.time()
    is_dataset = isinstance(source, ray.data.Dataset)
    if is_dataset:
        cols = set(source.columns() or [])
        if not ({"path", "image"} & cols):
            raise ValueError(f"the Ray dataset needs a 'path' or an 'image' column; it has {sorted(cols)}")
        if "id" not in cols and "path" not in cols:
            raise ValueError("the Ray dataset needs an 'id' column (or a 'path' column to serve as id)")
        ds = source if "id" in cols else source.add_column("id", lambda df: df["path"])
        expected = None
    else:
        expected, paths = _path_inputs(source)
    cfg = _run_config(spec, method, target, daam_options)
    os.makedirs(out_dir, exist_ok=True)
    with _Lock(out_dir):
        run_file = os.path.join(out_dir, "run.json")
        if os.path.exists(run_file):
            with open(run_file) as f:
                old = json.load(f)
            diff = [k for k in _RUN_KEYS if old.get(k) != cfg.get(k)]
            if diff:
                if not overwrite:
                    raise ValueError(f"{out_dir} holds results of a run with other settings ({', '.join(diff)}: "
                                     f"{[old.get(k) for k in diff]} vs {[cfg.get(k) for k in diff]}); "
                                     "pass overwrite=True (--overwrite) to replace them")
                shutil.rmtree(os.path.join(out_dir, SHARD_DIR), ignore_errors=True)
                for f in ("manifest.json", "errors.parquet"):
                    if os.path.exists(os.path.join(out_dir, f)):
                        os.remove(os.path.join(out_dir, f))
        _write_json(run_file, cfg)
        _clean(out_dir)
        done = set(i for ids in _shard_ids(out_dir).values() for i in ids)
        if is_dataset:
            expected_count = ds.count()
            todo = expected_count - len(done)        # ids already done are skipped inside the actors
        else:
            expected_count = len(expected)
            pending = [{"id": i, "path": p} for i, p in zip(expected, paths) if i not in done]
            todo = len(pending)
            ds = ray.data.from_items(pending) if pending else None
        if ds is not None and todo > 0:
            ds.context.enable_progress_bars = bool(progress)
            device = "cuda" if num_gpus_per_actor > 0 else "cpu"
            threads = max(1, int(num_cpus_per_actor))
            out = ds.map_batches(
                _Explainer, batch_size=shard_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=num_actors),
                fn_constructor_kwargs=dict(spec=spec, out_dir=os.path.abspath(out_dir), method=method, target=target,
                                           batch_size=batch_size, device=device, threads=threads,
                                           skip_ids=frozenset(done) if is_dataset else None,
                                           shard_delay=shard_delay, daam_options=daam_options),
                num_cpus=num_cpus_per_actor, num_gpus=num_gpus_per_actor or None)
            out.context.enable_progress_bars = bool(progress)
            try:
                for _ in out.iter_rows():             # shards are on disk as each row arrives
                    pass
            except BaseException:                     # record what is done (complete: false), then re-raise
                _finalize(out_dir, cfg, expected, expected_count, time.time() - t0, num_actors)
                raise
        return _finalize(out_dir, cfg, expected, expected_count, time.time() - t0, num_actors)


def load_results(out_dir: str, with_errors: bool = False) -> Dict[str, Any]:
    """Read the explained images of ``out_dir`` back, sorted by id.

    Returns:
        dict with ``ids`` (n,) str, ``targets`` (n,) int64, ``maps`` (n, L, h, w) float32
        (accumulated maps D_b), ``block_maps`` (n, L, h, w) (differences of ``maps``), and
        ``logits`` (n, K) or ``features`` / ``weights`` (n, C) where the model has them.
        With ``with_errors`` also ``errors``: the errors table (see :func:`load_errors`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
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
    import pyarrow.parquet as pq
    path = os.path.join(out_dir, "errors.parquet")
    if not os.path.exists(path):
        return []
    return pq.read_table(path).to_pylist()


# ---------------------------------------------------------------------------------------- CLI
def add_cli(subparsers) -> None:
    """Register ``daam-fast batch SRC --out DIR [--ray-address auto] [--num-actors N]``."""
    from .cli import add_model_args
    p = subparsers.add_parser("batch", help="explain many images on Ray (sharded Parquet, resumable)",
                              description="Explain images with a Ray Data actor pool; writes shards/*.parquet, "
                                          "errors.parquet and manifest.json to --out. Rerun to resume.")
    p.add_argument("src", nargs="+", help="a folder, glob patterns or image files")
    add_model_args(p)
    p.add_argument("--out", required=True, help="output directory (reused to resume)")
    p.add_argument("--ray-address", default=None, help="Ray cluster to join ('auto'); default: start a local Ray")
    p.add_argument("--num-actors", type=int, default=1, help="actors in the pool (one model each)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs (torch threads) per actor")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor (--device cuda implied)")
    p.add_argument("--shard-size", type=int, default=64, help="images per shard file")
    p.add_argument("--target", type=int, default=None, help="class to explain (default: each image's prediction)")
    p.add_argument("--overwrite", action="store_true", help="replace results of a run with other settings")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_batch)


def _cmd_batch(args) -> int:
    try:
        import ray  # noqa: F401
    except ImportError:
        print("daam-fast batch needs Ray: pip install 'daam-fast[ray]'", file=sys.stderr)
        return 2
    from .cli import daam_options
    from .models import ModelLoadError
    src = args.src[0] if len(args.src) == 1 else list(args.src)
    problems = []
    if isinstance(src, list):
        from .io import expand_inputs
        paths, problems = expand_inputs(src)
        for p, r in problems:
            print(f"daam-fast: {p}: {r}", file=sys.stderr)
        if not paths:
            print("daam-fast: no input images", file=sys.stderr)
            return 2
        src = paths
    spec = ModelSpec(name=args.model, checkpoint=args.checkpoint, pretrained=args.pretrained,
                     random_weights=args.random_weights, headless=False, bank=args.bank)
    if args.device == "cuda" and args.gpus_per_actor <= 0:
        args.gpus_per_actor = 1.0
    try:
        opts = daam_options(args)
        m = explain_dataset(src, args.out, spec, method=args.method, target=args.target,
                            num_actors=args.num_actors, num_cpus_per_actor=args.cpus_per_actor,
                            num_gpus_per_actor=args.gpus_per_actor, shard_size=args.shard_size,
                            batch_size=args.batch_size, overwrite=args.overwrite, ray_address=args.ray_address,
                            num_cpus=args.num_cpus, progress=not args.quiet, daam_options=opts)
    except (ValueError, ModelLoadError, FileNotFoundError, RuntimeError) as e:
        print(f"daam-fast: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        for e in load_errors(args.out):
            print(f"failed: {e['id']}: {e['reason']}", file=sys.stderr)
    print(f"inputs {m['inputs']}: results {m['results']}, errors {m['errors']}, missing {m['missing']} "
          f"({len(m['shards'])} shards, {m['last_run']['seconds']:.1f} s) -> {args.out}")
    if not m["complete"]:
        return 2
    return 1 if m["errors"] or problems else 0
