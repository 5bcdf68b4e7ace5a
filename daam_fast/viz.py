"""Pictures and videos of the attention flow: PNG, grid figure, animated GIF, MP4 (PyAV)."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["save_png", "save_gif", "save_mp4", "save_grid", "display_size"]


def _np(frames) -> np.ndarray:
    if isinstance(frames, Tensor):
        frames = frames.detach().cpu().numpy()
    return np.asarray(frames, dtype=np.uint8)


def display_size(h: int, w: int, min_side: int = 256) -> tuple:
    """The picture size for outputs: the image's own, scaled up so its shorter side is >= min_side."""
    s = max(1.0, min_side / min(h, w))
    return int(round(h * s)), int(round(w * s))


def save_png(image, path: str) -> None:
    """image: (H, W, 3) or (H, W) uint8."""
    from PIL import Image
    Image.fromarray(_np(image)).save(path)


def save_gif(frames, path: str, duration_ms: int = 700) -> None:
    """frames: (L, H, W, 3) uint8 -> looping animated GIF, one frame per block."""
    from PIL import Image
    arr = _np(frames)
    ims = [Image.fromarray(f) for f in arr]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=duration_ms, loop=0, optimize=False)


def save_mp4(frames, path: str, fps: int = 1) -> None:
    """frames: (L, H, W, 3) uint8 -> MP4 (H.264 if available, else MPEG-4), as the authors' 1-fps video."""
    import av
    arr = _np(frames)
    L, H, W, _ = arr.shape
    H2, W2 = H + H % 2, W + W % 2                       # yuv420p needs even sizes
    if (H2, W2) != (H, W):
        arr = np.pad(arr, ((0, 0), (0, H2 - H), (0, W2 - W), (0, 0)), mode="edge")
    with av.open(path, mode="w") as out:
        try:
            stream = out.add_stream("libx264", rate=fps)
        except Exception:  # noqa: BLE001 - codec missing from this FFmpeg build
            stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W2, H2, "yuv420p"
        for f in arr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def save_grid(frames, path: str, titles: Optional[Sequence[str]] = None, suptitle: str = "",
              image=None, cols: int = 0) -> None:
    """A matplotlib figure of all blocks' frames (L, H, W, 3), titled, optionally with the input first."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    arr = _np(frames)
    panels: List[np.ndarray] = ([_np(image)] if image is not None else []) + list(arr)
    names = (["input"] if image is not None else []) + list(titles or [f"block {i + 1}" for i in range(len(arr))])
    n = len(panels)
    cols = cols or min(n, 7)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.3 * rows + (0.4 if suptitle else 0)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p, t in zip(axes.flat, panels, names):
        ax.imshow(p)
        ax.set_title(t, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
