"""``explain_files``: image files -> explanations -> the run's maps and per-image pictures.

Writer policy. The caller's thread runs the model. One reader thread reads and prepares the
next batch (one batch ahead), and a fixed pool of writer threads, sized once at the start from
the cores and the device (:func:`~daam_fast._threads.writer_threads`: the cores the model leaves
free on a CPU, at least one; up to four beside a GPU; ``workers`` to choose), draws and writes
the previous batches' pictures; at most ``workers + 1`` batches wait for them, so memory stays
flat for any number of images, and the maps go to ``out/maps/*.npy`` row by row (:mod:`.store`).
Nothing changes the process's settings: the torch thread count the caller chose holds for the
whole run. On a CPU where the model uses every core, the pictures cost what they cost: the
writers share the cores with the model. On a GPU the overlays are rendered and encoded there
(nvjpeg) and only their bytes come back.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from .options import ExplainOptions
from .store import MAPS_DIR, MapStore
from .writer import PICTURES, ImageJob, OutputWriter
from .._threads import Ahead, writer_threads

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


class _Html:
    """Gathers the first ``limit`` rows (CPU) and the model-size pictures for the run's explorer page."""

    def __init__(self, limit: int):
        self.limit, self.rows, self.images, self.names, self.count, self.left_out = limit, [], [], [], 0, 0

    def add(self, res, rgb: torch.Tensor, names: Sequence[str]) -> None:
        room = self.limit - self.count
        n = rgb.shape[0]
        if room <= 0:
            self.left_out += n
            return
        k = min(room, n)
        self.rows.append(res[:k].to("cpu") if k < n else res.to("cpu"))
        self.images.append(rgb[:k].cpu())
        self.names += list(names[:k])
        self.count += k
        self.left_out += n - k

    def write(self, path: str, class_names) -> dict:
        try:
            from ..explorer import explore
        except ImportError as e:
            raise RuntimeError(f"the html output needs daam_fast.explorer ({e})") from None
        first = self.rows[0]
        kw = {}
        for f in dataclasses.fields(first):
            vals = [getattr(r, f.name) for r in self.rows]
            kw[f.name] = torch.cat(vals) if isinstance(vals[0], torch.Tensor) else vals[0]
        res = type(first)(**kw)
        explore(res, torch.cat(self.images), path, class_names=class_names, names=self.names)
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


def explain_files(paths: List[str], model, out: str, options: Optional[ExplainOptions] = None, *, bank=None,
                  quiet: bool = False, daam_options: Optional[dict] = None,
                  failed_inputs: Sequence[Tuple[str, str]] = (), explainer=None, **fields) -> dict:
    """Explain image files and write the chosen outputs: the maps of the whole run in
    ``out/maps/`` (:mod:`~daam_fast.outputs.store`, one row per input) and the pictures in one
    folder per output, ``out/overlay/<stem>.jpg``, ``out/gif/<stem>.gif`` ...

    Args:
        paths: image files (unreadable ones are listed as failed with the reason).
        model: a ViT in eval mode (its device is used: on a GPU the overlays are drawn and
            encoded there).
        out: output folder (created); ``summary.json`` is written there, even when the run stops
            on an error (then with "error").
        options: :class:`~daam_fast.outputs.ExplainOptions` (method, target, outputs,
            image_format, workers, ...); ``**fields`` override its fields by name.
        bank, daam_options: as :class:`daam_fast.DAAM` / its call.
        quiet: no progress bar.
        failed_inputs: (path or pattern, reason) of inputs that never became a file to read
            (e.g. :func:`daam_fast.io.expand_inputs`'s problems); listed first in "failed".
        explainer: an object called as :class:`daam_fast.DAAM` is, used in its place (e.g.
            :class:`daam_fast.export.OnnxExplainer`, which explains in ONNX Runtime); ``model``
            then gives the preprocessing and the class names.

    Returns:
        {"explained": [{"path", "row", "target", "class", "files", "orientation"}, ...] ("row": the
        image's row in ``maps/*.npy``, "files": its pictures relative to ``out``, "orientation": the
        EXIF orientation applied, 1-8; an animated picture also has "animated": true and "frame": 0, the
        frame explained), "failed": [{"path", "reason"}, ...], "outputs": [...], "html": {...}
        (with html)}, also in ``summary.json``.

    Raises:
        ValueError: a bad option (before any thread starts or any file is written).

    Example:
        >>> summary = explain_files(paths, model, "out", outputs="overlay,maps,gif", image_format="png")
    """
    from tqdm import tqdm
    from ..explainer import DAAM
    from ..models import class_names
    from ..preprocess import input_spec

    opt = dataclasses.replace(options or ExplainOptions(), **fields)
    outs = opt.check()
    if "mp4" in outs:
        from .encode import import_av
        import_av()                               # a missing extra fails here, in one line, before any work
    spec = input_spec(model)
    names = class_names(model)
    device = next(model.parameters()).device
    stems = unique_stems(paths)
    # bad options raise before any thread starts
    daam = explainer if explainer is not None else DAAM(model, method=opt.method, **(daam_options or {}))
    workers = writer_threads(device) if opt.workers is None else opt.workers
    os.makedirs(out, exist_ok=True)
    pictures = [o for o in outs if o in PICTURES]
    for o in pictures:
        os.makedirs(os.path.join(out, o), exist_ok=True)
    html = _Html(HTML_MAX_IMAGES) if "html" in outs else None
    store = MapStore(os.path.join(out, MAPS_DIR), paths, stems, method=opt.method) if "maps" in outs else None
    bar = tqdm(total=len(paths), desc="explaining", unit="img", disable=quiet, dynamic_ncols=True)
    writer = OutputWriter(opt, pictures, workers=workers, progress=bar, store=store)
    read: dict = {}                               # per input: the orientation applied, animated or not
    batches = Ahead(_batches(paths, spec, opt.batch_size, read), "daam-explain-reader")
    error = None
    try:
        with daam:
            for start, ok, bad, x, rgb in batches:
                for i, path, reason in bad:
                    writer.fail(i, path, reason)
                if ok:
                    _explain_batch(daam, x.to(device, non_blocking=True), ok, rgb, opt, bank, names, stems, out,
                                   writer, store, html, bool(pictures))
    except BaseException as e:
        error = e
        raise
    finally:
        batches.close()
        writer.close()
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


def _explain_batch(daam, x, ok, rgb, opt: ExplainOptions, bank, names, stems, out, writer: OutputWriter,
                   store: Optional[MapStore], html: Optional[_Html], pictures: bool) -> None:
    """Explain one batch, write its maps, and hand its pictures to the writers."""
    from ..targets import BankTarget
    try:
        res = daam(x, target=opt.target if bank is None else BankTarget(bank))
    except (ValueError, RuntimeError) as e:
        for i, path, _ in ok:
            writer.fail(i, path, f"explanation failed: {e}")
        return
    if res.maps.shape[0] != len(ok):
        for i, path, _ in ok:
            writer.fail(i, path, f"explain_files writes one explanation per image; the target gave "
                                 f"{res.maps.shape[0]} rows for {len(ok)} images")
        return
    if html is not None:
        html.add(res, rgb, [os.path.basename(path) for _, path, _ in ok])
    rows = [i for i, _, _ in ok]
    targets = res.targets.detach().cpu().tolist()
    labels = [(names[t] if names and 0 <= t < len(names) else str(t)) if t >= 0 else "label-free" for t in targets]
    maps = res.maps.detach().float()
    if store is not None:
        arrays = {"maps": maps.cpu().numpy(), "block_maps": res.block_maps.detach().float().cpu().numpy(),
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
            return
    if pictures or opt.boxes is not None:
        writer.submit([ImageJob(path, stems[i], out, i, pic, maps[j], targets[j], labels[j])
                       for j, (i, path, pic) in enumerate(ok)])
    else:
        for j, (i, path, _) in enumerate(ok):
            writer.done(i, {"path": path, "row": i, "target": targets[j], "class": labels[j], "files": []})
