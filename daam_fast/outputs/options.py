"""The options of :func:`~daam_fast.outputs.explain_files` and ``daam-fast explain``: their
defaults, written once here, and their checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from . import encode

__all__ = ["OUTPUTS", "DEFAULT_OUTPUTS", "ExplainOptions", "parse_outputs"]

OUTPUTS = ("overlay", "maps", "grid", "gif", "mp4", "html")
DEFAULT_OUTPUTS = ("overlay", "maps")


def parse_outputs(spec) -> Tuple[str, ...]:
    """``"overlay,maps"`` / a list / ``"all"`` / ``"default"`` -> the outputs in canonical order.

    Raises:
        ValueError: an unknown name or nothing chosen.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = {str(s).strip().lower() for s in items if str(s).strip()}
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


def _help(text: str, **more) -> Any:
    return {"help": text + " (default %(default)s)", **more}


def _modes() -> Tuple[str, ...]:
    from ..render import MODES
    return tuple(MODES)


@dataclass
class ExplainOptions:
    """How image files are explained, drawn and written: the defaults of
    :func:`~daam_fast.outputs.explain_files` and of ``daam-fast explain``.

    Attributes:
        method: a DAAM method ("grad", "direct", "row").
        target: the class explained for every image; None: each image's prediction.
        batch_size: images per model call.
        mode: rendering mode of :func:`daam_fast.render.render`.
        outputs: comma-separated outputs (:data:`OUTPUTS`; "all" for every one).
        image_format: format of the overlays and grids: "jpg", "png" or "webp".
        quality: JPEG / WebP quality, 1 .. 100.
        workers: writer threads beside the model (0: the caller's thread writes each batch
            after explaining it). None: :func:`daam_fast._threads.writer_threads` (the cores
            the model leaves free on a CPU, at least 1; up to 4 beside a GPU).
        boxes: None, or the threshold (a fraction of the map's maximum) of the box of each final
            map's salient region, drawn on the overlay and stored in ``maps/boxes.npy``.
        max_side: longer side of the drawn pictures, at most (0: the image's own).
        min_side: small pictures are scaled up so their shorter side is at least this (0: never).
        anim_side: longer side of the GIF / MP4 frames, at most.
        gif_ms: duration of a GIF frame, milliseconds.
        mp4_fps: frames (blocks) per second of the MP4s.
    """

    method: str = field(default="grad", metadata={"cli": False})              # the DAAM options' --method
    target: Optional[int] = field(default=None, metadata={
        "help": "class to explain (default: each image's prediction)"})
    batch_size: int = field(default=16, metadata={"cli": False})              # the model options' --batch-size
    mode: str = field(default="nonlinear", metadata=_help("rendering", choices=_modes))
    outputs: str = field(default=",".join(DEFAULT_OUTPUTS), metadata=_help(
        f"comma-separated, from {','.join(OUTPUTS)} (or all). One picture per image in a folder per output: "
        "overlay/STEM.jpg, grid/STEM.jpg, gif/STEM.gif, mp4/STEM.mp4; maps: the run's arrays in maps/ "
        "(maps.npy, block_maps.npy, targets.npy ..., one row per image, index.json); html: explorer.html"))
    image_format: str = field(default="jpg", metadata=_help("format of the overlays and grids",
                                                             choices=encode.IMAGE_FORMATS))
    quality: int = field(default=encode.QUALITY, metadata=_help("JPEG / WebP quality, 1 .. 100"))
    workers: Optional[int] = field(default=None, metadata={"help": (
        "writer threads beside the model (0: write each batch after explaining it; default: the cores the "
        "model leaves free on a CPU, at least 1, up to 4 beside a GPU)")})
    boxes: Optional[float] = field(default=None, metadata=_help(
        "draw the box of each final map's salient region on the overlay (threshold: a fraction of the map's "
        "maximum, e.g. 0.5); also stored in maps/boxes.npy", metavar="THRESHOLD"))
    max_side: int = field(default=encode.MAX_SIDE, metadata=_help("longer side of the drawn pictures, at most "
                                                                  "(0: the image's own)"))
    min_side: int = field(default=encode.MIN_SIDE, metadata=_help(
        "scale small pictures up so their shorter side is at least this (0: their own size)"))
    anim_side: int = field(default=encode.ANIM_SIDE, metadata=_help("longer side of the GIF / MP4 frames, at most"))
    gif_ms: int = field(default=700, metadata=_help("duration of a GIF frame, milliseconds"))
    mp4_fps: int = field(default=1, metadata=_help("frames (blocks) per second of the MP4s"))

    def check(self) -> Tuple[str, ...]:
        """The checks that need neither the files nor the model; returns the parsed outputs.

        Raises:
            ValueError: the first bad option, named.
        """
        outs = parse_outputs(self.outputs)
        if self.image_format not in encode.IMAGE_FORMATS:
            raise ValueError(f"image_format={self.image_format!r}: expected one of {', '.join(encode.IMAGE_FORMATS)}")
        if isinstance(self.quality, bool) or not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be an integer in 1 .. 100, got {self.quality!r}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise ValueError(f"workers must be >= 0, got {self.workers!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.boxes is not None and not 0.0 <= float(self.boxes) <= 1.0:
            raise ValueError(f"boxes: the threshold is a fraction of the map's maximum in [0, 1], got {self.boxes}")
        for name in ("max_side", "min_side", "anim_side"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.gif_ms < 1 or self.mp4_fps < 1:
            raise ValueError(f"gif_ms and mp4_fps must be >= 1, got {self.gif_ms} and {self.mp4_fps}")
        return outs
