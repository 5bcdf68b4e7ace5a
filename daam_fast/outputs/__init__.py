"""What ``daam-fast explain`` writes, and how fast: choose outputs, draw with the render kernel,
write in threads behind a bounded queue.

Outputs (``--outputs``, default ``overlay,maps``; costs measured in docs/cli.md). One folder
per output, none per image (a file or a folder costs 0.02-0.9 ms of system CPU on the disks
measured, as much as a small model's explanation of an image):

=========  ============================  ==================================================
name       file                          what
=========  ============================  ==================================================
overlay    ``overlay/<stem>.png``        final map D_L over the picture (boxes with ``--boxes``)
maps       ``maps/*.npy``, index.json    the run's arrays, one row per input in input order:
                                         maps, block_maps, targets, logits (or features,
                                         weights), explained (:mod:`.store`, :func:`load_maps`)
grid       ``grid/<stem>.png``           the input and D_1 ... D_L, titled
gif        ``gif/<stem>.gif``            the attention flow, one frame per block, one palette
mp4        ``mp4/<stem>.mp4``            the same at 1 frame per second (H.264)
html       ``explorer.html``             one explorer page for the run (``daam_fast.explore``)
=========  ============================  ==================================================

Example:
    >>> from daam_fast.outputs import explain_files
    >>> summary = explain_files(paths, model, "out", outputs="overlay,maps,gif")
"""
from .encode import compose_grid, display_size, gif_palette, panel_size, png_bytes, save_gif, save_grid, save_mp4, save_png
from .run import HTML_FILE, HTML_MAX_IMAGES, ExplainOptions, default_workers, explain_files, unique_stems
from .store import MAPS_DIR, MapStore, load_maps
from .writer import (DEFAULT_OUTPUTS, FILES, OUTPUTS, ImageJob, OutputWriter, WriteOptions, parse_outputs,
                     picture_path, render_overlays, write_image, write_images)

__all__ = ["OUTPUTS", "DEFAULT_OUTPUTS", "FILES", "MAPS_DIR", "HTML_FILE", "HTML_MAX_IMAGES", "parse_outputs",
           "ExplainOptions", "explain_files", "default_workers", "unique_stems", "picture_path", "MapStore", "load_maps", "ImageJob",
           "WriteOptions", "write_image", "write_images", "render_overlays", "OutputWriter", "display_size",
           "panel_size", "png_bytes", "save_png", "gif_palette", "save_gif", "save_mp4", "compose_grid", "save_grid"]
