"""Per-image pictures drawn with the render kernel, written in the caller's thread or by a few
threads behind a bounded queue.

:func:`write_images` draws a batch: the overlays in one render call per picture size
(:func:`render_overlays`), then per image (:func:`write_image`) every block's frame for
``gif`` / ``mp4`` at the display size and every frame at the panel size for ``grid``, with
:func:`daam_fast.render.render`, and writes the files into one folder per output
(:data:`FILES`). :class:`OutputWriter` runs it in ``workers`` threads (the kernel, zlib, PIL's
quantiser and FFmpeg release the GIL, so writing overlaps the explanation of the next batch
where a core is free for it), or with ``workers=0`` in the caller's thread; ``submit`` blocks
while ``queue_size`` batches wait, so memory stays bounded whatever the number of images.
Every image ends in ``explained`` or in ``failed`` with its reason, in input order.
"""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import encode

__all__ = ["OUTPUTS", "DEFAULT_OUTPUTS", "FILES", "picture_path", "parse_outputs", "ImageJob", "WriteOptions",
           "write_image", "render_overlays", "render_animations", "write_images", "OutputWriter"]

OUTPUTS = ("overlay", "maps", "grid", "gif", "mp4", "html")
DEFAULT_OUTPUTS = ("overlay", "maps")
# per-image pictures: out/<folder>/<stem><ext> (one folder per output, none per image: a folder
# and a file each cost as much as the shipped model's explanation on a slow disk; NOTES.md)
FILES = {"overlay": ("overlay", ".png"), "grid": ("grid", ".png"), "gif": ("gif", ".gif"), "mp4": ("mp4", ".mp4")}


def picture_path(kind: str, stem: str) -> str:
    """The file of output ``kind`` for the image ``stem``, relative to the run's folder (e.g. ``overlay/cat.png``)."""
    folder, ext = FILES[kind]
    return f"{folder}/{stem}{ext}"


def parse_outputs(spec) -> Tuple[str, ...]:
    """``"overlay,maps"`` / a list / ``"all"`` / ``"default"`` -> the outputs in canonical order.

    Raises:
        ValueError: an unknown name or nothing chosen.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = {s.strip().lower() for s in items if str(s).strip()}
    if "all" in names:
        names = (names - {"all"}) | set(OUTPUTS)
    if "default" in names:
        names = (names - {"default"}) | set(DEFAULT_OUTPUTS)
    bad = sorted(names - set(OUTPUTS))
    if bad:
        raise ValueError(f"--outputs: unknown {', '.join(bad)}; choose from {','.join(OUTPUTS)} (or all, default)")
    if not names:
        raise ValueError(f"--outputs: nothing chosen; choose from {','.join(OUTPUTS)}")
    return tuple(o for o in OUTPUTS if o in names)


@dataclass
class WriteOptions:
    """How to draw and write (shared by all images of a run).

    Attributes:
        outputs: from :func:`parse_outputs` (``html`` is the run's page, not written here).
        method: the DAAM method's name (stored in maps.npz, shown in the grid's title).
        mode: rendering mode of :func:`daam_fast.render.render`.
        max_side, min_side: bounds of the drawn pictures (:func:`encode.display_size`).
        anim_side: longer side of the GIF / MP4 frames, at most (also bounded by ``max_side``).
        boxes: None, or the threshold (fraction of the map's maximum) of the boxes drawn on the
            overlay (:func:`daam_fast.boxes.boxes_from_maps`; also stored in maps.npz as ``boxes``).
        gif_ms: duration of a GIF frame; mp4_fps: frames per second of flow.mp4.
    """

    outputs: Tuple[str, ...] = DEFAULT_OUTPUTS
    method: str = "grad"
    mode: str = "nonlinear"
    max_side: int = encode.MAX_SIDE
    min_side: int = encode.MIN_SIDE
    boxes: Optional[float] = None
    anim_side: int = encode.ANIM_SIDE
    gif_ms: int = 700
    mp4_fps: int = 1


@dataclass
class ImageJob:
    """One image's explanation to draw.

    Attributes:
        path: the input file; stem: its name in the output folders; out: the run's folder.
        row: its place in the input order (its row of ``maps/*.npy``).
        picture: (3, H, W) uint8 CPU, the picture as read.
        maps: (L, h, w) float32 CPU, D_1 ... D_L.
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
    if tuple(pic.shape[-2:]) == tuple(size):
        return pic[None]
    down = size[0] < pic.shape[-2] or size[1] < pic.shape[-1]
    x = F.interpolate(pic[None].float(), size=size, mode="bilinear", align_corners=False, antialias=down)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def write_image(job: ImageJob, opt: WriteOptions, store=None, overlay: Optional[np.ndarray] = None,
                anim: Optional[Tuple[Tensor, np.ndarray]] = None) -> dict:
    """Draw and write ``job``'s chosen pictures (overlay, gif, mp4, grid) into the run's folders.

    The folders (:data:`FILES`) must exist (``explain_files`` makes them once).

    Args:
        store: the run's :class:`~daam_fast.outputs.store.MapStore`, where the boxes go (with ``opt.boxes``).
        overlay: the final frame, already drawn at the display size (:func:`render_overlays`), or None.
        anim: (picture (1, 3, Ha, Wa) uint8, frames (L, Ha, Wa, 3) uint8) at the GIF / MP4 size,
            already drawn (:func:`render_animations`), or None.

    Returns:
        the summary record {"path", "row", "target", "class", "files"} (files relative to the run's
        folder; with boxes also "boxes" (x0, y0, x1, y1) in pixels of the overlay and "box_size").

    Raises:
        OSError / ValueError / RuntimeError: the first output that could not be written
        (the message names it); outputs before it are on disk.
    """
    from ..render import render
    outs = opt.outputs
    H, W = encode.display_size(*job.picture.shape[-2:], min_side=opt.min_side, max_side=opt.max_side)
    rec = {"path": job.path, "row": job.row, "target": job.target, "class": job.label}

    def dest(kind: str) -> str:
        return os.path.join(job.out, picture_path(kind, job.stem))

    maps = job.maps[None].float()
    boxes = None
    if opt.boxes is not None:
        from ..boxes import boxes_from_maps, draw_boxes
        boxes = boxes_from_maps(job.maps[-1:].float(), opt.boxes, (H, W)).numpy()
        rec["boxes"], rec["box_size"] = boxes[0].tolist(), [H, W]
        if store is not None:
            store.write([job.row], {"boxes": boxes, "box_size": np.array([[H, W]], dtype=np.int64)}, mark=False)
    last = overlay
    ph, pw = encode.panel_size(H, W)
    drawn, anim = anim, None                      # (picture, frames) at the GIF / MP4 size
    if "gif" in outs or "mp4" in outs:
        Ha, Wa = _anim_size(job, opt)
        if drawn is not None:
            pic, frames = drawn
        else:
            pic = _resize(job.picture, (Ha, Wa))
            frames = render(maps, images=pic, mode=opt.mode)[0].numpy()
        if "gif" in outs:
            encode.save_gif(frames, dest("gif"), duration_ms=opt.gif_ms)
        if "mp4" in outs:
            encode.save_mp4(frames, dest("mp4"), fps=opt.mp4_fps)
        if last is None and (Ha, Wa) == (H, W):
            last = frames[-1]
        if "grid" in outs and (Ha, Wa) == (ph, pw):   # small pictures: the grid's panels are these frames
            anim = (pic, frames)
        del frames
    if "overlay" in outs:
        if last is None:
            last = render(maps[:, -1:], images=_resize(job.picture, (H, W)), mode=opt.mode)[0, 0].numpy()
        if boxes is not None:
            last = draw_boxes(last, boxes)
        encode.save_png(last, dest("overlay"))
    if "grid" in outs:
        small, panels = anim if anim is not None else (None, None)
        if panels is None:
            small = _resize(job.picture, (ph, pw))
            panels = render(maps, images=small, mode=opt.mode)[0].numpy()
        encode.save_grid(panels, dest("grid"), titles=[f"D_{b + 1}" for b in range(panels.shape[0])],
                         image=small[0].permute(1, 2, 0),
                         suptitle=f"{os.path.basename(job.path)}: class {job.label} ({opt.method})")
    rec["files"] = [picture_path(k, job.stem) for k in ("overlay", "gif", "mp4", "grid") if k in outs]
    return rec


def _anim_size(job: ImageJob, opt: WriteOptions) -> Tuple[int, int]:
    cap = min(opt.max_side, opt.anim_side) if opt.max_side else opt.anim_side
    return encode.display_size(*job.picture.shape[-2:], min_side=opt.min_side, max_side=cap)


ANIM_BATCH_PIXELS = 256 * 256   # GIF / MP4 frames of pictures up to this size are drawn a batch at a time


def _draw_groups(jobs: Sequence[ImageJob], groups: Dict[tuple, List[int]], opt: WriteOptions,
                 last_only: bool = False) -> Dict[int, Tuple[Tensor, np.ndarray]]:
    """One render call per group of ``jobs`` (``groups``: (H, W, ...) -> indices of jobs of the
    same picture size and block count): {index: (picture (1, 3, H, W) uint8, frames (L, H, W, 3)
    uint8)}, with ``last_only`` the final frame only (L = 1)."""
    from ..render import render
    drawn: Dict[int, Tuple[Tensor, np.ndarray]] = {}
    for key, idx in groups.items():
        pics = [_resize(jobs[j].picture, key[:2]) for j in idx]
        maps = torch.stack([jobs[j].maps[-1:] if last_only else jobs[j].maps for j in idx]).float()
        frames = render(maps, images=torch.cat(pics), mode=opt.mode).numpy()
        drawn.update((j, (pics[k], frames[k])) for k, j in enumerate(idx))
    return drawn


def render_animations(jobs: Sequence[ImageJob], opt: WriteOptions) -> List[Optional[Tuple[Tensor, np.ndarray]]]:
    """Every block's frame at the GIF / MP4 size for the small pictures of ``jobs`` (at most
    :data:`ANIM_BATCH_PIXELS`), one render call per size: (picture (1, 3, Ha, Wa) uint8, frames
    (L, Ha, Wa, 3) uint8) per job, None for the others and when no GIF / MP4 is written. One call
    per image cost 0.2 ms of Python (argument checks, torch dispatch) around 0.14 ms of kernel
    for a 64 x 64 image, all of it holding the GIL (NOTES.md); large pictures are drawn one at a
    time in :func:`write_image` (a batch of 16 photos' frames would hold 100 MB)."""
    if "gif" not in opt.outputs and "mp4" not in opt.outputs:
        return [None] * len(jobs)
    groups: Dict[tuple, List[int]] = {}                           # (Ha, Wa, L) -> jobs
    for j, job in enumerate(jobs):
        Ha, Wa = _anim_size(job, opt)
        if Ha * Wa <= ANIM_BATCH_PIXELS:
            groups.setdefault((Ha, Wa, job.maps.shape[0]), []).append(j)
    drawn = _draw_groups(jobs, {k: idx for k, idx in groups.items() if len(idx) > 1}, opt)
    return [drawn.get(j) for j in range(len(jobs))]


def render_overlays(jobs: Sequence[ImageJob], opt: WriteOptions) -> List[Optional[np.ndarray]]:
    """The overlays (final frames at the display size) of ``jobs``, one render call per picture
    size (a call per image costs 3x more for small pictures; NOTES.md). None where no overlay is
    written, or where :func:`write_image` takes it from the animation's frames."""
    if "overlay" not in opt.outputs:
        return [None] * len(jobs)
    animated = "gif" in opt.outputs or "mp4" in opt.outputs
    groups: Dict[tuple, List[int]] = {}                           # display size -> jobs
    for j, job in enumerate(jobs):
        size = encode.display_size(*job.picture.shape[-2:], min_side=opt.min_side, max_side=opt.max_side)
        if not (animated and size == _anim_size(job, opt)):
            groups.setdefault(size, []).append(j)
    drawn = _draw_groups(jobs, groups, opt, last_only=True)
    return [drawn[j][1][0] if j in drawn else None for j in range(len(jobs))]


def write_images(jobs: Sequence[ImageJob], opt: WriteOptions, store=None, pool=None) -> List[object]:
    """:func:`write_image` for each job, overlays drawn together; -> its record, or the exception it raised.

    Args:
        pool: None, or a ``concurrent.futures`` executor that writes the images side by side
            (the kernel, zlib, PIL and FFmpeg release the GIL); the call returns when all are written.
    """
    try:
        overlays = render_overlays(jobs, opt)
    except Exception:  # noqa: BLE001 - then each image is drawn alone, and fails alone
        overlays = [None] * len(jobs)
    try:
        anims = render_animations(jobs, opt)
    except Exception:  # noqa: BLE001 - the same
        anims = [None] * len(jobs)

    def one(item) -> object:
        job, ov, an = item
        try:
            return write_image(job, opt, store, ov, an)
        except Exception as e:  # noqa: BLE001 - one bad write must not stop the run
            return e

    items = list(zip(jobs, overlays, anims))
    return list(pool.map(one, items)) if pool is not None and len(items) > 1 else [one(i) for i in items]


_STOP = object()


class OutputWriter:
    """Writes :class:`ImageJob` s in ``workers`` threads behind a queue, or (``workers=0``) in the
    caller's thread, there by ``turn_threads`` threads side by side, returning when the batch is written.

    Use as a context manager; :meth:`submit` blocks while ``queue_size`` batches wait. After the
    ``with`` block, :attr:`explained` and :attr:`failed` (``(path, reason)``) are in input order
    (the jobs' rows). ``store``: the run's map store, passed to :func:`write_image` (boxes).

    Example:
        >>> with OutputWriter(WriteOptions(("overlay", "maps")), workers=2) as w:
        ...     w.submit([job])
        >>> w.explained, w.failed
    """

    def __init__(self, options: WriteOptions, workers: int = 2, queue_size: int = 4, progress=None, store=None,
                 turn_threads: int = 1):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.options, self.workers, self.progress, self.store = options, workers, progress, store
        self.help_ahead = 0                           # see share()
        # workers=0: each batch is written in the caller's turn, by turn_threads threads side by side
        # (the cores the model leaves idle during that turn); the call returns when it is written
        self._pool = None
        if workers == 0 and turn_threads > 1:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(turn_threads, thread_name_prefix="daam-output-turn",
                                            initializer=torch.set_num_threads, initargs=(1,))   # one core each
        self._q: "queue.Queue" = queue.Queue(maxsize=max(1, queue_size))
        self._lock = threading.Lock()
        self._done: Dict[int, dict] = {}
        self._failed: Dict[int, Tuple[str, str]] = {}
        self._threads = [threading.Thread(target=self._loop, name=f"daam-output-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def _run(self, jobs: Sequence[ImageJob], alone: bool = False) -> None:
        try:
            results = write_images(jobs, self.options, self.store, None if alone else self._pool)
        except Exception as e:  # noqa: BLE001 - never lose a batch (nor a writer thread) to one error
            results = [e] * len(jobs)
        for job, r in zip(jobs, results):
            if isinstance(r, Exception):
                self.fail(job.row, job.path, f"could not write outputs: {type(r).__name__}: {r}")
            else:
                self.done(job.row, r)

    def _loop(self, one_thread: bool = False) -> None:
        if one_thread:
            torch.set_num_threads(1)                  # per thread: beside the model's own thread(s)
        while True:
            jobs = self._q.get()
            if jobs is _STOP:
                return
            self._run(jobs)

    def share(self, workers: int = 1, help_ahead: int = 2) -> None:
        """Switch from taking turns (``workers=0``) to ``workers`` writer threads (one torch thread
        each) that write beside the model, the caller's thread writing a batch itself whenever
        ``help_ahead`` batches already wait (so neither the model nor the writers stand idle when
        writing costs more than explaining; :func:`~daam_fast.outputs.run.explain_files`)."""
        if self._threads or workers < 1:
            raise ValueError("share() switches a turn-taking writer (workers=0) to >= 1 threads")
        self.workers, self.help_ahead = workers, max(1, help_ahead)
        if self._pool is not None:                    # the caller now writes alone: the other cores are busy
            self._pool.shutdown()
            self._pool = None
        self._q = queue.Queue(maxsize=self.help_ahead + 1)
        self._threads = [threading.Thread(target=self._loop, args=(True,), name=f"daam-output-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, jobs: Sequence[ImageJob], alone: bool = False) -> None:
        """Queue a batch of images' pictures (each ``job.row``: its place in the input order).
        ``alone``: taking turns, write it in the caller's thread only (a measurement)."""
        if self.workers == 0 or (self.help_ahead and self._q.qsize() >= self.help_ahead):
            self._run(jobs, alone)
        else:
            self._q.put(list(jobs))

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
        """Wait for every queued job (with ``help_ahead``, writing queued batches in this thread too)."""
        while self.help_ahead and self._threads:
            try:
                jobs = self._q.get_nowait()
            except queue.Empty:
                break
            self._run(jobs)
        for _ in self._threads:
            self._q.put(_STOP)
        for t in self._threads:
            t.join()
        self._threads = []
        if self._pool is not None:
            self._pool.shutdown()
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
