"""A run: the settings recorded in run.json, Ray started or joined, the actor pool over the pending inputs."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional, Union

from .._extras import require
from .actor import _Explainer
from .inputs import _path_inputs
from .options import BatchOptions
from .shards import ERRORS_FILE, FORMAT_VERSION, SHARD_DIR, _clean, _finalize, _Lock, _shard_ids, _write_json
from .spec import ModelSpec, check_run_options

__all__ = ["explain_dataset"]

_RUN_KEYS = ("model", "method", "target", "map_shape", "format")


def _run_config(spec: ModelSpec, method: str, target: Optional[int], daam_options: Optional[dict] = None) -> dict:
    """Settings that determine the maps, and the map shape, from a model loaded on the driver."""
    import torch
    from .. import DAAM
    from ..adapters import get_adapter
    from ..models import class_names
    from ..preprocess import input_spec
    model, _ = spec.load("cpu")
    daam = DAAM(model, method=method, **(daam_options or {}))    # ValueError here if it cannot be explained
    adapter = get_adapter(model)
    size = input_spec(model).size
    h, w = adapter.grid(torch.zeros(1, 3, *size))
    cfg = {"format": FORMAT_VERSION, "model": dataclasses.asdict(spec), "method": method, "target": target,
           "map_shape": [adapter.depth, h, w], "input_size": list(size),
           "classes": list(class_names(model) or [])}
    del daam, model
    return cfg


def explain_dataset(source, out_dir: str, model_spec: Union[ModelSpec, str, dict, None] = None,
                    options: Optional[BatchOptions] = None, *, _shard_delay: float = 0.0, **fields) -> dict:
    """Explain every image of ``source`` with Ray Data and write shards (maps folders) plus a manifest.

    Args:
        source: a folder (its image files, recursively; ids are paths relative to it), a glob
            pattern, a list of paths (ids are the normalised paths), or a ``ray.data.Dataset``
            with columns ``id`` (optional, default ``path``) and ``path`` or ``image`` (uint8
            (H, W, 3) arrays, as ``ray.data.read_images(..., include_paths=True)`` gives).
        out_dir: output folder (see the module docstring for its layout). An interrupted run
            is resumed by calling again with the same arguments.
        model_spec: :class:`ModelSpec`, a shipped / timm model name or checkpoint path (str),
            or a dict of ModelSpec fields; None = the shipped ``shapes_vit``.
        options: :class:`BatchOptions` (method, target, actors, shard and batch sizes, Ray,
            DAAM options; default: its defaults).
        **fields: :class:`BatchOptions` fields that replace those of ``options``
            (e.g. ``method="direct", num_actors=2``).

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
    opts = dataclasses.replace(options or BatchOptions(), **fields)
    opts.check()
    opts.daam_options = check_run_options(opts.method, opts.daam_options)
    spec = ModelSpec.coerce(model_spec)
    ray = require("ray", "explain_dataset")
    require("pyarrow", "explain_dataset")
    started = False
    if not ray.is_initialized():
        if opts.ray_address:
            ray.init(address=opts.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=opts.num_cpus, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        return _run(ray, source, out_dir, spec, opts, _shard_delay)
    finally:
        if started:
            ray.shutdown()


def _run(ray, source, out_dir, spec, opts: BatchOptions, shard_delay) -> dict:
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
    cfg = _run_config(spec, opts.method, opts.target, opts.daam_options)
    os.makedirs(out_dir, exist_ok=True)
    with _Lock(out_dir):
        run_file = os.path.join(out_dir, "run.json")
        if os.path.exists(run_file):
            with open(run_file) as f:
                old = json.load(f)
            diff = [k for k in _RUN_KEYS if old.get(k) != cfg.get(k)]
            if diff:
                if not opts.overwrite:
                    raise ValueError(f"{out_dir} holds results of a run with other settings ({', '.join(diff)}: "
                                     f"{[old.get(k) for k in diff]} vs {[cfg.get(k) for k in diff]}); "
                                     "pass overwrite=True (--overwrite) to replace them")
                shutil.rmtree(os.path.join(out_dir, SHARD_DIR), ignore_errors=True)
                for f in ("manifest.json", ERRORS_FILE):
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
            ds.context.enable_progress_bars = bool(opts.progress)
            device = "cuda" if opts.num_gpus_per_actor > 0 else "cpu"
            threads = max(1, int(opts.num_cpus_per_actor))
            out = ds.map_batches(
                _Explainer, batch_size=opts.shard_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=opts.num_actors),
                fn_constructor_kwargs=dict(spec=spec, out_dir=os.path.abspath(out_dir), method=opts.method,
                                           target=opts.target, batch_size=opts.batch_size, device=device,
                                           threads=threads, skip_ids=frozenset(done) if is_dataset else None,
                                           shard_delay=shard_delay, daam_options=opts.daam_options),
                num_cpus=opts.num_cpus_per_actor, num_gpus=opts.num_gpus_per_actor or None)
            out.context.enable_progress_bars = bool(opts.progress)
            try:
                for _ in out.iter_rows():             # shards are on disk as each row arrives
                    pass
            except BaseException:                     # record what is done (complete: false), then re-raise
                _finalize(out_dir, cfg, expected, expected_count, time.time() - t0, opts.num_actors)
                raise
        return _finalize(out_dir, cfg, expected, expected_count, time.time() - t0, opts.num_actors)
