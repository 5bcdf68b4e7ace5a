"""``explain_files``: image files -> explanations -> the run's maps and per-image pictures.

Where a core is free for them (the model on a GPU, or fewer model threads than cores), a reader
thread reads and prepares the next batch while the caller's thread runs the model, and
:class:`~daam_fast.outputs.writer.OutputWriter` threads draw and write the previous batches'
pictures, each hand-over a bounded queue. Where every core runs one of the model's threads,
explaining and writing take turns (a third busy thread would stall the model; benchmarks/NOTES.md):
while the model waits, a batch's pictures are written by as many threads as it uses and the next
batch is read in a helper thread. Either way memory stays flat for any number of images:
the maps go to ``out/maps/*.npy`` row by row (:mod:`.store`).
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import dataclass, fields
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from .encode import MAX_SIDE, MIN_SIDE
from .store import MAPS_DIR, MapStore
from .writer import DEFAULT_OUTPUTS, FILES, ImageJob, OutputWriter, WriteOptions, parse_outputs
from .._threads import Ahead, TurnSwitch, free_core, put_until_stopped

__all__ = ["ExplainOptions", "explain_files", "default_workers", "unique_stems", "HTML_FILE", "HTML_MAX_IMAGES"]

HTML_FILE = "explorer.html"
HTML_MAX_IMAGES = 200      # the run's page holds the first images (a page of thousands would not open)


def unique_stems(paths: Sequence[str]) -> List[str]:
    """File names without extension, made unique with _2, _3 ... (one output folder each)."""
    stems, used = [], set()
    for p in paths:
        s = os.path.splitext(os.path.basename(p))[0] or "image"
        name, n = s, 1
        while name in used:                  # 'a', 'a_2', ... never a name taken by an earlier file
            n += 1
            name = f"{s}_{n}"
        used.add(name)
        stems.append(name)
    return stems


def _batches(paths: Sequence[str], spec, batch_size: int, read: Optional[dict] = None):
    """Read and prepare ``paths`` in batches: yields (start, [(index, path, picture)], [(index, path, reason)], x, rgb).
    ``read`` receives {index: what reading applied} (:func:`daam_fast.io.read_image`'s ``info``)."""
    from ..io import ImageReadError, read_image
    from ..preprocess import prepare
    for start in range(0, len(paths), batch_size):
        ok, bad = [], []
        for i, path in enumerate(paths[start:start + batch_size], start):
            try:
                info = {} if read is None else read.setdefault(i, {})
                ok.append((i, path, read_image(path, max_side=4 * max(spec.size), info=info)))
            except ImageReadError as e:
                bad.append((i, path, str(e)))
        x = rgb = None
        if ok:
            x, rgb = prepare([p for _, _, p in ok], spec)
        yield start, ok, bad, x, rgb


@dataclass
class ExplainOptions:
    """How images are explained and drawn: the defaults of :func:`explain_files` and of
    ``daam-fast explain``.

    Attributes:
        method: a DAAM method ("grad", "direct", ...).  target: class for every image (None:
        each image's prediction).  batch_size: images per model call.  mode: rendering.
        video: also write the MP4s when ``outputs`` has mp4 (False: the old ``--no-video``).
        outputs: comma-separated outputs (:data:`~daam_fast.outputs.OUTPUTS`).  workers: writer
        threads (None: 2 where the model leaves a core free or runs on a GPU, else 0).
        boxes: threshold of the boxes drawn on the overlays, or None.  max_side / min_side:
        bounds of the drawn pictures.
    """

    method: str = "grad"
    target: Optional[int] = None
    batch_size: int = 16
    mode: str = "nonlinear"
    video: bool = True
    outputs: str = ",".join(DEFAULT_OUTPUTS)
    workers: Optional[int] = None
    boxes: Optional[float] = None
    max_side: int = MAX_SIDE
    min_side: int = MIN_SIDE


_D = ExplainOptions()


class _Reader(threading.Thread):
    """Runs :func:`_batches` ahead of the model into ``q``; then None (or the exception it raised)."""

    def __init__(self, batches, q: "queue.Queue", stop: threading.Event):
        super().__init__(name="daam-explain-reader", daemon=True)
        self.batches, self.q, self.stop = batches, q, stop

    def run(self) -> None:
        try:
            for item in self.batches:
                if not put_until_stopped(self.q, item, self.stop):
                    return
            put_until_stopped(self.q, None, self.stop)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            put_until_stopped(self.q, e, self.stop)


def default_workers(device) -> int:
    """Writer threads for ``explain_files``: 2 when they have a core of their own (the model runs
    on a GPU, or uses fewer threads than the cores this process may use), else 0
    (:func:`daam_fast._threads.free_core`; on 2 cores the shapes model took 1.5x as long beside
    a reader thread, NOTES.md)."""
    return 2 if free_core(device) else 0


class _Html:
    """Gathers the first ``limit`` rows (CPU) and the model-size pictures for the run's explorer page."""

    def __init__(self, limit: int):
        self.limit, self.rows, self.images, self.count, self.left_out = limit, [], [], 0, 0

    def add(self, res, rgb: torch.Tensor) -> None:
        room = self.limit - self.count
        n = rgb.shape[0]
        if room <= 0:
            self.left_out += n
            return
        k = min(room, n)
        self.rows.append(res[:k].to("cpu") if k < n else res.to("cpu"))
        self.images.append(rgb[:k].cpu())
        self.count += k
        self.left_out += n - k

    def write(self, path: str, class_names) -> dict:
        try:
            from ..explorer import explore
        except ImportError as e:
            raise RuntimeError(f"the html output needs daam_fast.explorer ({e})") from None
        first = self.rows[0]
        kw = {}
        for f in fields(first):
            vals = [getattr(r, f.name) for r in self.rows]
            kw[f.name] = torch.cat(vals) if isinstance(vals[0], torch.Tensor) else vals[0]
        res = type(first)(**kw)
        explore(res, torch.cat(self.images), path, class_names=class_names)
        return {"path": path, "images": self.count, "left_out": self.left_out}


def _read_record(info: Optional[dict]) -> dict:
    """summary.json's entries: "orientation" (the EXIF orientation applied, 1: none); an animated
    picture's "animated": true and "frame": 0 (it is explained from its first frame)."""
    if not info:
        return {}
    rec = {"orientation": info["orientation"]}
    if info["animated"]:
        rec.update(animated=True, frame=0)
    return rec


def explain_files(paths: List[str], model, out: str, method: str = _D.method, target=_D.target, bank=None,
                  batch_size: int = _D.batch_size, mode: str = _D.mode, quiet: bool = False, video: bool = _D.video,
                  daam_options: Optional[dict] = None, outputs=_D.outputs, workers: Optional[int] = _D.workers,
                  boxes: Optional[float] = _D.boxes, max_side: int = _D.max_side, min_side: int = _D.min_side,
                  failed_inputs: Sequence[Tuple[str, str]] = ()) -> dict:
    """Explain image files and write the chosen outputs: the maps of the whole run in
    ``out/maps/`` (:mod:`~daam_fast.outputs.store`, one row per input) and the pictures in one
    folder per output, ``out/overlay/<stem>.png``, ``out/gif/<stem>.gif`` ...

    Args:
        paths: image files (unreadable ones are listed as failed with the reason).
        model: a ViT in eval mode (its device is used).
        out: output folder (created); ``summary.json`` is written there, even when the run stops
            on an error (then with "error").
        method, target, bank, daam_options: as :class:`daam_fast.DAAM` / its call.
        batch_size: images per model call.
        mode: rendering mode of :func:`daam_fast.render.render`.
        quiet: no progress bar.
        video: False drops ``mp4`` from ``outputs`` (the old ``--no-video``).
        outputs: names or "a,b" (:data:`~daam_fast.outputs.OUTPUTS`): overlay, grid, gif, mp4
            (one picture per image), maps (the run's arrays), html (one explorer page for the
            run, ``out/explorer.html``, the first :data:`HTML_MAX_IMAGES` images).
        workers: writer threads beside the model, plus a reader thread (0: explaining and
            writing take turns: while the model waits, each batch's pictures are written side by
            side by as many threads as it uses, and the next batch is read). None: :func:`default_workers` (2 where the model
            leaves a core free or runs on a GPU, else 0).
        boxes: None, or the threshold of the boxes drawn on the overlays.
        max_side: longer side of the drawn pictures, at most (default 640).
        min_side: shorter side of small pictures scaled up to this (default 0: their own size).
        failed_inputs: (path or pattern, reason) of inputs that never became a file to read
            (e.g. :func:`daam_fast.io.expand_inputs`'s problems); listed first in "failed".

    Returns:
        {"explained": [{"path", "row", "target", "class", "files", "orientation"}, ...] ("row": the
        image's row in ``maps/*.npy``, "files": its pictures relative to ``out``, "orientation": the
        EXIF orientation applied, 1-8; an animated picture also has "animated": true and "frame": 0, the
        frame explained), "failed": [{"path", "reason"}, ...], "outputs": [...], "html": {...}
        (with html)}, also in ``summary.json``.
    """
    from tqdm import tqdm
    from ..explainer import DAAM
    from ..models import class_names
    from ..preprocess import input_spec
    from ..targets import BankTarget

    outs = parse_outputs(outputs)
    if not video:
        outs = tuple(o for o in outs if o != "mp4") or ("maps",)
    spec = input_spec(model)
    names = class_names(model)
    device = next(model.parameters()).device
    stems = unique_stems(paths)
    os.makedirs(out, exist_ok=True)
    opts = WriteOptions(outputs=outs, method=method, mode=mode, boxes=boxes, max_side=int(max_side),
                        min_side=int(min_side))
    html = _Html(HTML_MAX_IMAGES) if "html" in outs else None
    daam = DAAM(model, method=method, **(daam_options or {}))      # bad options raise before any thread starts
    bar = tqdm(total=len(paths), desc="explaining", unit="img", disable=quiet, dynamic_ncols=True)
    auto_workers = workers is None
    if workers is None:
        workers = default_workers(device)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    stop = threading.Event()
    read: dict = {}                               # per input: the orientation applied, animated or not
    batches = _batches(paths, spec, batch_size, read)
    reader = None
    if workers:                                   # read ahead in a thread only beside writer threads
        q: "queue.Queue" = queue.Queue(maxsize=2)
        reader = _Reader(batches, q, stop)
        batches = iter(q.get, None)
    pictures = [o for o in outs if o in FILES]
    for o in pictures:
        os.makedirs(os.path.join(out, FILES[o][0]), exist_ok=True)
    store = MapStore(os.path.join(out, MAPS_DIR), paths, stems, method=method) if "maps" in outs else None
    writer = OutputWriter(opts, workers=workers, queue_size=max(2, workers), progress=bar, store=store,
                          turn_threads=torch.get_num_threads())
    # taking turns with more than one model thread: the next batch is read in a helper thread while
    # this one is written (the model's cores are free then), never while the model runs
    threads = torch.get_num_threads()
    ahead = Ahead(batches, "daam-explain-turn", helper=reader is None and threads > 1)
    # taking turns by choice (workers=None), a run whose pictures cost more to write than a model
    # thread fewer costs may switch to one model thread fewer, a writer thread beside it and the
    # caller writing a batch whenever two wait (TurnSwitch: measured on the run's own batches)
    share = TurnSwitch(bool(pictures) and workers == 0 and auto_workers and device.type == "cpu"
                       and len(paths) > (TurnSwitch.AFTER + TurnSwitch.PROBES + 1) * batch_size, threads)
    if reader is not None:
        reader.start()
    error = None
    try:
        with daam:
            while True:
                item = ahead.next()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                if share.on:
                    ahead.request()                   # read beside the model: its core is the writer's
                start, ok, bad, x, rgb = item
                for i, path, reason in bad:
                    writer.fail(i, path, reason)
                if not ok:
                    continue
                share.before_model()
                t0 = time.perf_counter()
                try:
                    res = daam(x.to(device, non_blocking=True), target=BankTarget(bank) if bank is not None else target)
                except (ValueError, RuntimeError) as e:
                    for i, path, _ in ok:
                        writer.fail(i, path, f"explanation failed: {e}")
                    continue
                ahead.request()
                if res.maps.shape[0] != len(ok):
                    for i, path, _ in ok:
                        writer.fail(i, path, f"explain_files writes one explanation per image; the target gave "
                                             f"{res.maps.shape[0]} rows for {len(ok)} images")
                    continue
                if html is not None:
                    html.add(res, rgb)
                rows = [i for i, _, _ in ok]
                targets = res.targets.detach().cpu().tolist()
                labels = [(names[t] if names and 0 <= t < len(names) else str(t)) if t >= 0 else "label-free"
                          for t in targets]
                maps = res.maps.detach().float().cpu()
                if store is not None:
                    arrays = {"maps": maps.numpy(), "block_maps": res.block_maps.detach().float().cpu().numpy(),
                              "targets": np.asarray(targets, dtype=np.int64)}
                    for k in ("logits", "features", "weights"):
                        v = getattr(res, k)
                        if isinstance(v, torch.Tensor):
                            arrays[k] = v.detach().float().cpu().numpy()
                    store.meta.setdefault("grid", list(res.grid))
                    try:
                        store.write(rows, arrays, classes=labels)
                    except (OSError, ValueError) as e:
                        for i, path, _ in ok:
                            writer.fail(i, path, f"could not write maps: {type(e).__name__}: {e}")
                        continue
                if pictures or boxes is not None:
                    t1 = time.perf_counter()
                    writer.submit([ImageJob(path, stems[i], out, i, pic, maps[j], targets[j], labels[j])
                                   for j, (i, path, pic) in enumerate(ok)], alone=share.probing)
                    if share.measure(t1 - t0, time.perf_counter() - t1):
                        writer.share(workers=1, help_ahead=2)
                else:
                    for j, (i, path, _) in enumerate(ok):
                        writer.done(i, {"path": path, "row": i, "target": targets[j], "class": labels[j], "files": []})
    except BaseException as e:
        error = e
        raise
    finally:
        stop.set()
        ahead.close()
        writer.close()
        torch.set_num_threads(threads)
        if reader is not None:
            reader.join()
        bar.close()
        if store is not None:
            store.close()
        summary = {"explained": [dict(e, **_read_record(read.get(e["row"]))) for e in writer.explained],
                   "failed": [{"path": p, "reason": r} for p, r in list(failed_inputs) + list(writer.failed)],
                   "outputs": list(outs)}
        if error is not None:                     # the run stopped: say why, keep what was written
            summary["error"] = f"{type(error).__name__}: {error}"
        elif html is not None and html.count:
            try:
                summary["html"] = html.write(os.path.join(out, HTML_FILE), names)
            except Exception as e:  # noqa: BLE001 - the per-image outputs are written; say why the page is not
                summary["html"] = {"path": None, "error": f"{type(e).__name__}: {e}"}
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return summary
