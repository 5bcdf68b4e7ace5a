"""Pictures and videos of the attention flow: JPEG / PNG / WebP, grid picture, animated GIF, MP4 (PyAV).

Thin names over :mod:`daam_fast.outputs.encode`, where the encoders live (libjpeg-turbo,
libpng and Pillow pictures, one GIF palette for all frames, PIL-drawn grid, H.264 through PyAV). Frames come from
:func:`daam_fast.render.render`; matplotlib is used only for report figures (``daam-fast demo``).

Example:
    >>> from daam_fast import render
    >>> from daam_fast.viz import save_gif
    >>> save_gif(render(res.maps, images=rgb)[0], "flow.gif")      # (L, H, W, 3) uint8 frames
"""
from __future__ import annotations

from .outputs.encode import display_size, save_gif, save_grid, save_image, save_mp4

__all__ = ["save_image", "save_gif", "save_mp4", "save_grid", "display_size"]
