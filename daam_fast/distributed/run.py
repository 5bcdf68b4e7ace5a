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
from .shards import FORMAT_VERSION, SHARD_DIR, _clean, _finalize, _Lock, _shard_ids, _write_json
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
        method: a method of :class:`daam_fast.DAAM` ("grad", "direct", ...).
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
        daam_options: extra :class:`daam_fast.DAAM` keywords for every actor (``activation_checkpointing``,
            ``compile``, ``backend``, ...: see :func:`daam_option_names`); they change the cost,
            not the maps, so a resumed run may differ in them.

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
    for key, val in (("num_actors", num_actors), ("shard_size", shard_size), ("batch_size", batch_size)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{key} must be a positive int, got {val!r}")
    if num_cpus_per_actor <= 0 or num_gpus_per_actor < 0:
        raise ValueError("num_cpus_per_actor must be > 0 and num_gpus_per_actor >= 0")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool)):
        raise ValueError(f"target must be None or an int, got {target!r}")
    opts = check_run_options(method, daam_options)
    spec = ModelSpec.coerce(model_spec)
    ray = require("ray", "explain_dataset")
    require("pyarrow", "explain_dataset")
    started = False
    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        return _run(ray, source, out_dir, spec, method, target, num_actors, num_cpus_per_actor,
                    num_gpus_per_actor, shard_size, batch_size, overwrite, progress, _shard_delay, opts)
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
