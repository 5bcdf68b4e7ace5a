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

Modules: ``spec`` (:class:`ModelSpec`, the accepted DAAM options), ``inputs``, ``actor``
(the UDF), ``shards`` (run folder, lock, manifest), ``run`` (:func:`explain_dataset`),
``results`` (:func:`load_results`, :func:`load_errors`); the command is :mod:`daam_fast.cli.batch`.

On a cluster, ``out_dir`` and the image paths must be reachable from every node (a shared
file system), as with any Ray Data file sink.
"""
from .actor import _Explainer  # noqa: F401
from .inputs import _ids_for_paths, _image_from_array, _path_inputs  # noqa: F401
from .results import load_errors, load_results  # noqa: F401
from .run import _RUN_KEYS, _run, _run_config, explain_dataset  # noqa: F401
from .shards import (FORMAT_VERSION, SHARD_DIR, _clean, _complete_shards, _finalize,  # noqa: F401
                     _Lock, _pid_alive,
                     _shard_ids, _vector_column, _write_json, _write_shard)
from .spec import (BACKWARD_OPTIONS, MAP_OPTIONS, ModelSpec, check_run_options,  # noqa: F401
                   daam_option_names)

__all__ = ["ModelSpec", "explain_dataset", "load_results", "load_errors", "daam_option_names"]


def __getattr__(name: str):
    if name == "add_cli":              # the sub-command moved to daam_fast.cli.batch; kept for old callers
        from ..cli.batch import add_cli
        return add_cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
