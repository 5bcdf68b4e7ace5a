"""``explain_files``: image files -> explanations -> per-image outputs, every stage overlapped.

A reader thread reads and prepares the next batch, the caller's thread runs the model, and
:class:`~daam_fast.outputs.writer.OutputWriter` threads draw and write the previous batches'
outputs. Each hand-over is a bounded queue, so memory stays flat for any number of images.
"""
from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import fields
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from .writer import DEFAULT_OUTPUTS, ImageJob, OutputWriter, WriteOptions, parse_outputs
from .._threads import put_until_stopped

__all__ = ["explain_files", "unique_stems", "HTML_FILE", "HTML_MAX_IMAGES"]

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


class _Reader(threading.Thread):
    """Reads and prepares batches ahead of the model: (start, [(index, path, picture)], [(index, path, reason)], x, rgb)."""

    def __init__(self, paths: Sequence[str], spec, batch_size: int, q: "queue.Queue", stop: threading.Event):
        super().__init__(name="daam-explain-reader", daemon=True)
        self.paths, self.spec, self.batch_size, self.q, self.stop = paths, spec, batch_size, q, stop

    def _put(self, item) -> bool:
        return put_until_stopped(self.q, item, self.stop)

    def run(self) -> None:
        from ..io import ImageReadError, read_image
        from ..preprocess import prepare
        try:
            for start in range(0, len(self.paths), self.batch_size):
                ok, bad = [], []
                for i, path in enumerate(self.paths[start:start + self.batch_size], start):
                    try:
                        ok.append((i, path, read_image(path, max_side=4 * max(self.spec.size))))
                    except ImageReadError as e:
                        bad.append((i, path, str(e)))
                x = rgb = None
                if ok:
                    x, rgb = prepare([p for _, _, p in ok], self.spec)
                if not self._put((start, ok, bad, x, rgb)):
                    return
            self._put(None)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            self._put(e)


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
            from .. import explore
        except ImportError as e:
            raise RuntimeError(f"the html output needs daam_fast.explore ({e})") from None
        first = self.rows[0]
        kw = {}
        for f in fields(first):
            vals = [getattr(r, f.name) for r in self.rows]
            kw[f.name] = torch.cat(vals) if isinstance(vals[0], torch.Tensor) else vals[0]
        res = type(first)(**kw)
        explore(res, torch.cat(self.images), path, class_names=class_names)
        return {"path": path, "images": self.count, "left_out": self.left_out}


def explain_files(paths: List[str], model, out: str, method: str = "grad", target=None, bank=None,
                  batch_size: int = 16, mode: str = "nonlinear", quiet: bool = False, video: bool = True,
                  daam_options: Optional[dict] = None, outputs=DEFAULT_OUTPUTS, workers: int = 2,
                  boxes: Optional[float] = None, max_side: Optional[int] = None,
                  min_side: Optional[int] = None, failed_inputs: Sequence[Tuple[str, str]] = ()) -> dict:
    """Explain image files and write the chosen outputs per image into ``out/<stem>/``.

    Args:
        paths: image files (unreadable ones are listed as failed with the reason).
        model: a ViT in eval mode (its device is used).
        out: output folder (created); ``summary.json`` is written there.
        method, target, bank, daam_options: as :class:`daam_fast.DAAM` / its call.
        batch_size: images per model call.
        mode: rendering mode of :func:`daam_fast.render.render`.
        quiet: no progress bar.
        video: False drops ``mp4`` from ``outputs`` (the old ``--no-video``).
        outputs: names or "a,b" (:data:`~daam_fast.outputs.OUTPUTS`): overlay.png, maps.npz,
            grid.png, flow.gif, flow.mp4 per image; html: one explorer page for the run
            (``out/explorer.html``, the first :data:`HTML_MAX_IMAGES` images).
        workers: writer threads (0: write in the caller's thread, after each batch).
        boxes: None, or the threshold of the boxes drawn on the overlays.
        max_side: longer side of the drawn pictures, at most (default 640).
        min_side: shorter side of small pictures scaled up to this (default 0: their own size).
        failed_inputs: (path or pattern, reason) of inputs that never became a file to read
            (e.g. :func:`daam_fast.io.expand_inputs`'s problems); listed first in "failed".

    Returns:
        {"explained": [{"path", "out", "target", "class", "files"}, ...], "failed": [{"path",
        "reason"}, ...], "outputs": [...], "html": {...} (with html)}, also in ``summary.json``.
    """
    from tqdm import tqdm
    from .. import DAAM
    from ..models import class_names
    from ..preprocess import input_spec

    outs = parse_outputs(outputs)
    if not video:
        outs = tuple(o for o in outs if o != "mp4") or ("maps",)
    spec = input_spec(model)
    names = class_names(model)
    device = next(model.parameters()).device
    stems = unique_stems(paths)
    opts = WriteOptions(outputs=outs, method=method, mode=mode, boxes=boxes)
    if max_side is not None:
        opts.max_side = int(max_side)
    if min_side is not None:
        opts.min_side = int(min_side)
    html = _Html(HTML_MAX_IMAGES) if "html" in outs else None
    daam = DAAM(model, method=method, **(daam_options or {}))      # bad options raise before any thread starts
    bar = tqdm(total=len(paths), desc="explaining", unit="img", disable=quiet, dynamic_ncols=True)
    q: "queue.Queue" = queue.Queue(maxsize=2)
    stop = threading.Event()
    reader = _Reader(paths, spec, batch_size, q, stop)
    writer = OutputWriter(opts, workers=workers, queue_size=max(batch_size, 2 * workers), progress=bar)
    reader.start()
    try:
        with daam:
            while True:
                item = q.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                start, ok, bad, x, rgb = item
                for i, path, reason in bad:
                    writer.fail(i, path, reason)
                if not ok:
                    continue
                try:
                    res = daam(x.to(device, non_blocking=True), target=target, bank=bank)
                except (ValueError, RuntimeError) as e:
                    for i, path, _ in ok:
                        writer.fail(i, path, f"explanation failed: {e}")
                    continue
                if res.maps.shape[0] != len(ok):
                    for i, path, _ in ok:
                        writer.fail(i, path, f"explain_files writes one explanation per image; the target gave "
                                             f"{res.maps.shape[0]} rows for {len(ok)} images")
                    continue
                if html is not None:
                    html.add(res, rgb)
                cpu = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                       for k, v in (("maps", res.maps), ("block_maps", res.block_maps), ("targets", res.targets),
                                    ("logits", res.logits), ("features", res.features), ("weights", res.weights))}
                for j, (i, path, pic) in enumerate(ok):
                    t = int(cpu["targets"][j])
                    label = (names[t] if names and 0 <= t < len(names) else str(t)) if t >= 0 else "label-free"
                    arrays = {"grid": np.array(res.grid)}
                    for k in ("logits", "features", "weights"):
                        if cpu[k] is not None:
                            arrays[k] = cpu[k][j].numpy()
                    writer.submit(i, ImageJob(path, os.path.join(out, stems[i]), pic, cpu["maps"][j],
                                              cpu["block_maps"][j], t, label, arrays))
    finally:
        stop.set()
        writer.close()
        reader.join()
        bar.close()
    summary = {"explained": writer.explained,
               "failed": [{"path": p, "reason": r} for p, r in list(failed_inputs) + list(writer.failed)],
               "outputs": list(outs)}
    if html is not None and html.count:
        try:
            summary["html"] = html.write(os.path.join(out, HTML_FILE), names)
        except Exception as e:  # noqa: BLE001 - the per-image outputs are written; say why the page is not
            summary["html"] = {"path": None, "error": f"{type(e).__name__}: {e}"}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
