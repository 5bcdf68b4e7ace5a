"""Per-image pictures drawn with the render kernel and written by a fixed pool of threads.

:func:`write_batch` draws a batch: the overlays in one render call per picture size, on the
maps' device, encoded there too (JPEG of CUDA tensors: nvjpeg, one call; only the bytes come
to the host); then per image (:func:`write_image`) the frames of the GIF, the MP4 and the grid.
:class:`OutputWriter` runs it in ``workers`` threads beside the model, or with ``workers=0``
in the caller's thread; ``submit`` blocks while ``workers + 1`` batches are in flight, so
memory stays bounded whatever the number of images. Every image ends in ``explained`` or in
``failed`` with its reason, in input order.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import encode
from .options import ExplainOptions

__all__ = ["PICTURES", "picture_path", "ImageJob", "render_overlays", "write_image", "write_batch", "OutputWriter"]

PICTURES = ("overlay", "grid", "gif", "mp4")     # the per-image outputs, one folder each


def picture_path(kind: str, stem: str, image_format: str = "jpg") -> str:
    """The file of output ``kind`` for the image ``stem``, relative to the run's folder (e.g.
    ``overlay/cat.jpg``): one folder per output, none per image."""
    ext = image_format if kind in ("overlay", "grid") else kind
    return f"{kind}/{stem}.{ext}"


@dataclass
class ImageJob:
    """One image's explanation to draw.

    Attributes:
        path: the input file; stem: its name in the output folders; out: the run's folder.
        row: its place in the input order (its row of ``maps/*.npy``).
        picture: (3, H, W) uint8 CPU, the picture as read.
        maps: (L, h, w) float32, D_1 ... D_L, on the model's device.
        target: the explained class (-1 label-free); label: its name.
    """

    path: str
    stem: str
    out: str
    row: int
    picture: Tensor
    maps: Tensor
    target: int
    label: str


def _resize(pic: Tensor, size: Tuple[int, int]) -> Tensor:
    """(3, H, W) uint8 -> (1, 3, *size) uint8 (bilinear, antialiased when shrinking)."""
    if tuple(pic.shape[-2:]) == tuple(size):
        return pic[None]
    down = size[0] < pic.shape[-2] or size[1] < pic.shape[-1]
    x = F.interpolate(pic[None].float(), size=size, mode="bilinear", align_corners=False, antialias=down)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _size(job: ImageJob, opt: ExplainOptions, cap: Optional[int] = None) -> Tuple[int, int]:
    side = opt.max_side if cap is None else (min(opt.max_side, cap) if opt.max_side else cap)
    return encode.display_size(*job.picture.shape[-2:], min_side=opt.min_side, max_side=side)


def _boxes(job: ImageJob, opt: ExplainOptions, size: Tuple[int, int]) -> np.ndarray:
    from ..boxes import boxes_from_maps
    return boxes_from_maps(job.maps[-1:].float(), opt.boxes, size).cpu().numpy()


def render_overlays(jobs: Sequence[ImageJob], opt: ExplainOptions) -> List[bytes]:
    """The overlay files (final map D_L over the picture, at the display size, boxes drawn with
    ``opt.boxes``) of ``jobs``: one render call per picture size on the maps' device, then one
    encode call (nvjpeg for JPEGs of CUDA tensors, else libjpeg-turbo / libpng / Pillow).

    Returns:
        the file bytes of each job, in order.
    """
    from ..render import render
    groups: Dict[Tuple[int, int], List[int]] = {}
    for j, job in enumerate(jobs):
        groups.setdefault(_size(job, opt), []).append(j)
    files: List[Optional[bytes]] = [None] * len(jobs)
    for size, idx in groups.items():
        dev = jobs[idx[0]].maps.device
        pics = torch.cat([_resize(jobs[j].picture.to(dev, non_blocking=True), size) for j in idx])
        maps = torch.stack([jobs[j].maps[-1:] for j in idx]).float()
        frames = render(maps, images=pics, mode=opt.mode)[:, 0]             # (B, H, W, 3) uint8 on dev
        if opt.boxes is not None:
            from ..boxes import draw_boxes
            frames = [draw_boxes(f, _boxes(jobs[j], opt, size)[0]) for f, j in zip(frames.cpu().numpy(), idx)]
        for j, data in zip(idx, encode.image_bytes(frames, opt.image_format, opt.quality)):
            files[j] = data
    return files


def write_image(job: ImageJob, opt: ExplainOptions, outputs: Sequence[str], overlay: Optional[bytes] = None,
                store=None) -> dict:
    """Draw and write ``job``'s pictures (``outputs``: overlay, gif, mp4, grid) into the run's
    folders, which must exist.

    Args:
        overlay: the overlay file's bytes (:func:`render_overlays`), written as they are.
        store: the run's :class:`~daam_fast.outputs.store.MapStore`, where the boxes go (with ``opt.boxes``).

    Returns:
        the summary record {"path", "row", "target", "class", "files"} (files relative to the run's
        folder; with boxes also "boxes" (x0, y0, x1, y1) in pixels of the overlay and "box_size").

    Raises:
        OSError / ValueError / RuntimeError: the first output that could not be written
        (the message names it); outputs before it are on disk.
    """
    from ..render import render
    rec = {"path": job.path, "row": job.row, "target": job.target, "class": job.label}

    def dest(kind: str) -> str:
        return os.path.join(job.out, picture_path(kind, job.stem, opt.image_format))

    if opt.boxes is not None:
        H, W = _size(job, opt)
        boxes = _boxes(job, opt, (H, W))
        rec["boxes"], rec["box_size"] = boxes[0].tolist(), [H, W]
        if store is not None:
            store.write([job.row], {"boxes": boxes, "box_size": np.array([[H, W]], dtype=np.int64)}, mark=False)
    if overlay is not None:
        with open(dest("overlay"), "wb") as f:
            f.write(overlay)
    maps = job.maps[None].float()
    if "gif" in outputs or "mp4" in outputs:
        size = _size(job, opt, opt.anim_side)
        frames = render(maps, images=_resize(job.picture.to(maps.device), size), mode=opt.mode)[0].cpu().numpy()
        if "gif" in outputs:
            encode.save_gif(frames, dest("gif"), duration_ms=opt.gif_ms)
        if "mp4" in outputs:
            encode.save_mp4(frames, dest("mp4"), fps=opt.mp4_fps)
    if "grid" in outputs:
        small = _resize(job.picture, encode.panel_size(*_size(job, opt)))
        panels = render(maps, images=small.to(maps.device), mode=opt.mode)[0].cpu().numpy()
        encode.save_grid(panels, dest("grid"), titles=[f"D_{b + 1}" for b in range(panels.shape[0])],
                         image=small[0].permute(1, 2, 0), quality=opt.quality,
                         suptitle=f"{os.path.basename(job.path)}: class {job.label} ({opt.method})")
    rec["files"] = [picture_path(k, job.stem, opt.image_format) for k in PICTURES if k in outputs]
    return rec


def write_batch(jobs: Sequence[ImageJob], opt: ExplainOptions, outputs: Sequence[str], store=None) -> List[object]:
    """:func:`write_image` for each job, the overlays drawn and encoded together; -> its record,
    or the exception it raised."""
    overlays: List[Optional[bytes]] = [None] * len(jobs)
    if "overlay" in outputs:
        try:
            overlays = list(render_overlays(jobs, opt))
        except Exception:  # noqa: BLE001 - then each image is drawn alone, and fails alone
            overlays = [None] * len(jobs)
    out: List[object] = []
    for job, ov in zip(jobs, overlays):
        try:
            if ov is None and "overlay" in outputs:
                ov = render_overlays([job], opt)[0]
            out.append(write_image(job, opt, outputs, ov, store))
        except Exception as e:  # noqa: BLE001 - one bad write must not stop the run
            out.append(e)
    return out


class OutputWriter:
    """Writes batches of :class:`ImageJob` in a fixed pool of ``workers`` threads beside the
    model, or (``workers=0``) in the caller's thread.

    Use as a context manager; :meth:`submit` blocks while ``workers + 1`` batches are in flight.
    After the ``with`` block, :attr:`explained` and :attr:`failed` (``(path, reason)``) are in
    input order (the jobs' rows). ``store``: the run's map store, for the boxes.

    Example:
        >>> with OutputWriter(ExplainOptions(), ("overlay",), workers=1) as w:
        ...     w.submit([job])
        >>> w.explained, w.failed
    """

    def __init__(self, options: ExplainOptions, outputs: Sequence[str], workers: int = 1, progress=None,
                 store=None):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.options, self.outputs, self.workers = options, tuple(outputs), workers
        self.progress, self.store = progress, store
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="daam-output") if workers else None
        self._slots = threading.Semaphore(workers + 1)
        self._lock = threading.Lock()
        self._done: Dict[int, dict] = {}
        self._failed: Dict[int, Tuple[str, str]] = {}

    def _run(self, jobs: Sequence[ImageJob]) -> None:
        try:
            results = write_batch(jobs, self.options, self.outputs, self.store)
        except Exception as e:  # noqa: BLE001 - never lose a batch (nor a writer thread) to one error
            results = [e] * len(jobs)
        for job, r in zip(jobs, results):
            if isinstance(r, Exception):
                self.fail(job.row, job.path, f"could not write outputs: {type(r).__name__}: {r}")
            else:
                self.done(job.row, r)

    def submit(self, jobs: Sequence[ImageJob]) -> None:
        """Write a batch of images' pictures (each ``job.row``: its place in the input order)."""
        if self._pool is None:
            self._run(jobs)
            return
        self._slots.acquire()
        try:
            fut = self._pool.submit(self._run, list(jobs))
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda _: self._slots.release())

    def done(self, index: int, record: dict) -> None:
        """Record an image whose outputs are all written (``record``: its summary entry)."""
        with self._lock:
            self._done[index] = record
            if self.progress is not None:
                self.progress.update(1)

    def fail(self, index: int, path: str, reason: str) -> None:
        """Record an image that could not be read, explained or written, with the reason."""
        with self._lock:
            self._failed[index] = (path, reason)
            if self.progress is not None:
                self.progress.update(1)

    def close(self) -> None:
        """Wait for every batch submitted."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def explained(self) -> List[dict]:
        return [self._done[i] for i in sorted(self._done)]

    @property
    def failed(self) -> List[Tuple[str, str]]:
        return [self._failed[i] for i in sorted(self._failed)]
