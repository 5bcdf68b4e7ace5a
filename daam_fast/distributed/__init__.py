"""Explaining many images on a Ray cluster (Ray Data ``map_batches`` on an actor pool).

Layout of an output directory written by :func:`explain_dataset`::

    out_dir/
      run.json              the run's settings (model spec, method, target, map shape); a rerun
                            with other settings refuses to mix its results in (overwrite=True)
      shards/shard-<h>/     one maps folder per shard, the layout of ``daam-fast explain``'s
                            maps (:mod:`daam_fast.outputs.store`): maps.npy / block_maps.npy
                            (n, L, h, w) float32, targets.npy (n,) int64, logits.npy (or
                            features.npy / weights.npy), explained.npy (n,) bool, and index.json
                            with the ids, paths and error reasons (None: explained); one row
                            per input of the shard (a failed input: zeros, target -1)
      errors.json           the errors table: [{id, path, reason}] (one entry per bad input)
      manifest.json         shards with their row counts, totals, map shape, classes, complete flag

How a run works: the inputs (a folder, a list of paths, or a Ray dataset) become a Ray
dataset of rows ``{"id", "path"}`` (or ``{"id", "image"}``). ``map_batches`` with
``batch_size=shard_size`` hands one batch (= one shard) at a time to an actor of a fixed
pool; each actor loads the model once (from a picklable :class:`ModelSpec`), reads and
explains the images in model batches of ``batch_size``, and writes the shard to a
temporary folder, fsyncs its files, then renames it: a folder named ``shard-*`` is always
complete. The shard name is a hash of its image ids. A bad image (unreadable, truncated, wrong mode, an
explanation that fails or is not finite) becomes an error row with the reason, so every
input ends up in exactly one shard row: inputs = results + errors.

Resuming: a rerun reads the ids of the complete shards and skips those images; temporary
folders of an interrupted run are deleted. Read a run back with :func:`load_results` or
:func:`daam_fast.outputs.load_maps` (the shards memory-mapped, the explained rows gathered). A lock file keeps two live runs out of one folder.

Modules: ``spec`` (:class:`ModelSpec`, the accepted DAAM options), ``options``
(:class:`BatchOptions`: every option of a run and its default, from which the command's flags
are derived), ``inputs``, ``actor`` (the UDF), ``shards`` (run folder, lock, manifest), ``run``
(:func:`explain_dataset`), ``results`` (:func:`load_results`, :func:`load_errors`).

On a cluster, ``out_dir`` and the image paths must be reachable from every node (a shared
file system), as with any Ray Data file sink.
"""
from .options import BatchOptions
from .results import load_errors, load_results
from .run import explain_dataset
from .spec import ModelSpec, daam_option_names

__all__ = ["ModelSpec", "BatchOptions", "explain_dataset", "load_results", "load_errors", "daam_option_names"]
