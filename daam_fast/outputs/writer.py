"""Per-image outputs drawn with the render kernel and written by a few threads behind a bounded queue.

:func:`write_image` draws what the chosen outputs need (the final frame for ``overlay``; every
block's frame for ``gif`` / ``mp4`` at the display size; every frame at the panel size for
``grid``) with :func:`daam_fast.render.render` and writes the files. :class:`OutputWriter`
runs it in ``workers`` threads: the kernel, zlib, PIL's quantiser and FFmpeg release the GIL,
so writing overlaps the explanation of the next batch; ``submit`` blocks while ``queue_size``
jobs wait, so memory stays bounded whatever the number of images. Every submitted image ends
in ``explained`` or in ``failed`` with its reason, in input order.
"""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import encode

__all__ = ["OUTPUTS", "DEFAULT_OUTPUTS", "parse_outputs", "ImageJob", "WriteOptions", "write_image", "OutputWriter"]

OUTPUTS = ("overlay", "maps", "grid", "gif", "mp4", "html")
DEFAULT_OUTPUTS = ("overlay", "maps")
FILES = {"overlay": "overlay.png", "maps": "maps.npz", "grid": "grid.png", "gif": "flow.gif", "mp4": "flow.mp4"}


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
    """One image's explanation to write.

    Attributes:
        path: the input file; out_dir: its folder ``out/<stem>``.
        picture: (3, H, W) uint8 CPU, the picture as read.
        maps, block_maps: (L, h, w) float32 CPU, D_b and L_b.
        target: the explained class (-1 label-free); label: its name.
        arrays: more arrays for maps.npz (logits, features, weights, grid ...).
    """

    path: str
    out_dir: str
    picture: Tensor
    maps: Tensor
    block_maps: Tensor
    target: int
    label: str
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)


def _resize(pic: Tensor, size: Tuple[int, int]) -> Tensor:
    if tuple(pic.shape[-2:]) == tuple(size):
        return pic[None]
    down = size[0] < pic.shape[-2] or size[1] < pic.shape[-1]
    x = F.interpolate(pic[None].float(), size=size, mode="bilinear", align_corners=False, antialias=down)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def write_image(job: ImageJob, opt: WriteOptions) -> dict:
    """Draw and write ``job``'s chosen outputs into ``job.out_dir``.

    Returns:
        the summary record {"path", "out", "target", "class", "files"}.

    Raises:
        OSError / ValueError / RuntimeError: the first output that could not be written
        (the message names it); outputs before it are on disk.
    """
    from ..render import render
    outs = opt.outputs
    os.makedirs(job.out_dir, exist_ok=True)
    H, W = encode.display_size(*job.picture.shape[-2:], min_side=opt.min_side, max_side=opt.max_side)
    files: List[str] = []
    maps = job.maps[None].float()
    boxes = None
    if opt.boxes is not None:
        from ..boxes import boxes_from_maps, draw_boxes
        boxes = boxes_from_maps(job.maps[-1:].float(), opt.boxes, (H, W)).numpy()
    animated = "gif" in outs or "mp4" in outs
    if animated:
        cap = min(opt.max_side, opt.anim_side) if opt.max_side else opt.anim_side
        Ha, Wa = encode.display_size(*job.picture.shape[-2:], min_side=opt.min_side, max_side=cap)
        frames = render(maps, images=_resize(job.picture, (Ha, Wa)), mode=opt.mode)[0].numpy()
        if "gif" in outs:
            encode.save_gif(frames, os.path.join(job.out_dir, FILES["gif"]), duration_ms=opt.gif_ms)
            files.append(FILES["gif"])
        if "mp4" in outs:
            encode.save_mp4(frames, os.path.join(job.out_dir, FILES["mp4"]), fps=opt.mp4_fps)
            files.append(FILES["mp4"])
        last = frames[-1] if (Ha, Wa) == (H, W) else None
        del frames
    if "overlay" in outs:
        if not animated or last is None:
            last = render(maps[:, -1:], images=_resize(job.picture, (H, W)), mode=opt.mode)[0, 0].numpy()
        if boxes is not None:
            last = draw_boxes(last, boxes)
        encode.save_png(last, os.path.join(job.out_dir, FILES["overlay"]))
        files.insert(0, FILES["overlay"])
    if "grid" in outs:
        ph, pw = encode.panel_size(H, W)
        small = _resize(job.picture, (ph, pw))
        panels = render(maps, images=small, mode=opt.mode)[0].numpy()
        encode.save_grid(panels, os.path.join(job.out_dir, FILES["grid"]),
                         titles=[f"D_{b + 1}" for b in range(panels.shape[0])], image=small[0].permute(1, 2, 0),
                         suptitle=f"{os.path.basename(job.path)}: class {job.label} ({opt.method})")
        files.append(FILES["grid"])
    if "maps" in outs:
        arrays = dict(block_maps=job.block_maps.numpy(), maps=job.maps.numpy(), target=np.int64(job.target),
                      class_name=np.str_(job.label), method=np.str_(opt.method), **job.arrays)
        if boxes is not None:
            arrays["boxes"] = boxes.astype(np.float32)
            arrays["box_size"] = np.array([H, W])
        encode.save_maps(os.path.join(job.out_dir, FILES["maps"]), arrays)
        files.append(FILES["maps"])
    return {"path": job.path, "out": job.out_dir, "target": job.target, "class": job.label, "files": files}


_STOP = object()


class OutputWriter:
    """Writes :class:`ImageJob` s in ``workers`` threads (0: in the caller's thread).

    Use as a context manager; :meth:`submit` blocks while ``queue_size`` jobs wait. After the
    ``with`` block, :attr:`explained` and :attr:`failed` (``(path, reason)``) are in input order.

    Example:
        >>> with OutputWriter(WriteOptions(("overlay", "maps")), workers=2) as w:
        ...     w.submit(0, job)
        >>> w.explained, w.failed
    """

    def __init__(self, options: WriteOptions, workers: int = 2, queue_size: int = 16, progress=None):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.options, self.workers, self.progress = options, workers, progress
        self._q: "queue.Queue" = queue.Queue(maxsize=max(1, queue_size))
        self._lock = threading.Lock()
        self._done: Dict[int, dict] = {}
        self._failed: Dict[int, Tuple[str, str]] = {}
        self._threads = [threading.Thread(target=self._loop, name=f"daam-output-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def _run(self, index: int, job: ImageJob) -> None:
        try:
            rec = write_image(job, self.options)
            with self._lock:
                self._done[index] = rec
        except Exception as e:  # noqa: BLE001 - one bad write must not stop the run
            self.fail(index, job.path, f"could not write outputs: {type(e).__name__}: {e}", count=False)
        if self.progress is not None:
            with self._lock:
                self.progress.update(1)

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            self._run(*item)

    def submit(self, index: int, job: ImageJob) -> None:
        """Queue one image (``index``: its place in the input order)."""
        if self.workers == 0:
            self._run(index, job)
        else:
            self._q.put((index, job))

    def fail(self, index: int, path: str, reason: str, count: bool = True) -> None:
        """Record an image that could not be explained (or read)."""
        with self._lock:
            self._failed[index] = (path, reason)
            if count and self.progress is not None:
                self.progress.update(1)

    def close(self) -> None:
        """Wait for every queued job."""
        for _ in self._threads:
            self._q.put(_STOP)
        for t in self._threads:
            t.join()
        self._threads = []

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
