"""The monitor's page: one self-contained HTML file of a logged run (``daam-fast monitor view``).

For each probe image: its picture with the map D_b of the chosen step and block over it (a
step slider over the logged steps, a block slider), the prediction, and the curves of its
scalars over the steps (the mean over the probes in grey), alerts marked in red and listed.
Like the explorer, the page needs no network: script, style, pictures (PNG) and maps (float16,
each step's map divided by its largest value, base64) are inline; every name is escaped.
"""
from __future__ import annotations

import base64
import io
import math
import os
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from ..explorer._shell import asset, standalone_page
from .history import History, load_history

__all__ = ["page_html", "write_page"]


def _png(pic: torch.Tensor) -> str:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pic.permute(1, 2, 0).contiguous().numpy(), "RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _finite(v: Any) -> Optional[float]:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def page_data(h: History, title: str) -> Dict[str, Any]:
    """The JSON document the page reads."""
    if not len(h):
        raise ValueError("the history has no logged step yet")
    T = len(h)
    N, L, gh, gw = (int(v) for v in h.maps[0].shape)
    maps = torch.stack([torch.as_tensor(np.asarray(m)) for m in h.maps]).float()           # (T, N, L, h, w)
    top = maps.flatten(2).abs().amax(2).clamp_min(1e-30).view(T, N, 1, 1, 1)
    q = (maps / top).numpy().astype("<f2")
    keys = []
    for s in h.scalars:
        keys += [k for k in s if k not in keys]
    scalars = {k: [[_finite(v) for v in s.get(k, [None] * N)] for s in h.scalars] for k in keys}
    return {
        "version": 1, "title": str(title), "names": [str(n) for n in h.names], "classes": h.classes,
        "steps": [int(s) for s in h.steps], "N": N, "L": L, "grid": [gh, gw], "method": h.method,
        "pictures": [_png(p) for p in h.pictures] if h.pictures is not None else None,
        "maps": base64.b64encode(q.tobytes()).decode("ascii"), "scalars": scalars,
        "alerts": [{"step": a.step, "image": a.image, "quantity": a.quantity, "value": _finite(a.value),
                    "reason": a.reason} for a in h.alerts],
    }


def page_html(history: Union[History, str, "os.PathLike[str]"], title: str = "daam_fast monitor") -> str:
    """The page of a run as one HTML string.

    Args:
        history: a :class:`History` (``monitor.history``) or the monitor's log folder.
        title: the page's title.

    Returns:
        The HTML document: about 25 KB of page plus, per logged step, 2 * N * L * h * w bytes
        of maps (base64: 4/3 of that).
    """
    h = history if isinstance(history, History) else load_history(history)
    return standalone_page(asset(__package__, "view.html"), asset(__package__, "view.css"),
                           asset(__package__, "view.js"), title, page_data(h, title), "monitor-data")


def write_page(history: Union[History, str, "os.PathLike[str]"], path: Union[str, "os.PathLike[str]"],
               title: str = "daam_fast monitor") -> str:
    """Write :func:`page_html` to ``path`` (its folder is created); returns the path."""
    text = page_html(history, title)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
