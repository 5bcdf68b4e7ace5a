"""What ``daam-fast explain`` writes, and how fast: choose outputs, draw with the render kernel,
write in threads behind a bounded queue.

Outputs (``--outputs``, default ``overlay,maps``; costs measured in docs/cli.md):

=========  ==========================  ====================================================
name       file                        what
=========  ==========================  ====================================================
overlay    ``<stem>/overlay.png``      final map D_L over the picture (boxes with ``--boxes``)
maps       ``<stem>/maps.npz``         block_maps, maps, target, class_name, logits ...
grid       ``<stem>/grid.png``         the input and D_1 ... D_L, titled
gif        ``<stem>/flow.gif``         the attention flow, one frame per block, one palette
mp4        ``<stem>/flow.mp4``         the same at 1 frame per second (H.264)
html       ``explorer.html``           one explorer page for the run (``daam_fast.explore``)
=========  ==========================  ====================================================

Example:
    >>> from daam_fast.outputs import explain_files
    >>> summary = explain_files(paths, model, "out", outputs="overlay,maps,gif")
"""
from .encode import (compose_grid, display_size, gif_palette, panel_size, png_bytes, save_gif, save_grid, save_maps,
                     save_mp4, save_png)
from .run import HTML_FILE, HTML_MAX_IMAGES, explain_files, unique_stems
from .writer import (DEFAULT_OUTPUTS, FILES, OUTPUTS, ImageJob, OutputWriter, WriteOptions, parse_outputs,
                     write_image)

__all__ = ["OUTPUTS", "DEFAULT_OUTPUTS", "FILES", "HTML_FILE", "HTML_MAX_IMAGES", "parse_outputs", "explain_files",
           "unique_stems", "ImageJob", "WriteOptions", "write_image", "OutputWriter", "display_size", "panel_size",
           "png_bytes", "save_png", "gif_palette", "save_gif", "save_mp4", "compose_grid", "save_grid", "save_maps"]
