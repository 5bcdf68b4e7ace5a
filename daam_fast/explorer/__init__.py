"""The interactive explorer: one self-contained HTML page per run (docs/method.md §3, §5).

:func:`explore` (``daam_fast.explore(res, images, path)``) writes the page; :func:`page_html`
returns it as a string (``res.show(images)`` shows it inline in Jupyter). The page needs no network: its
script, style, maps (scaled float16, base64) and pictures (base64 JPEG or PNG) are inline,
and it colours the maps itself, step for step as :func:`daam_fast.render.render` does.

Controls: image list, class switch (top-k rows), method switch, block slider and arrow keys,
accumulated D_b or per-block L_b, head toggles (the map recomputed in the page: ReLU of the
sum of the selected heads' terms, then accumulated), normalisation, colour map with a fixed
colour bar, opacity, threshold with the region outline and its bounding box, value under the
pointer.

Example:
    >>> import daam_fast
    >>> res = daam_fast.DAAM(model, heads=True)(x, target=daam_fast.TopK(3))
    >>> daam_fast.explore(res, rgb, "run.html", class_names=names)

``python -m daam_fast.explorer out.html`` writes a demo page from the shipped model.
"""
from __future__ import annotations

import html as _html
import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from ..result import DAAMResult
from . import _pack
from ._pack import ImagesLike
from ._shell import asset, standalone_page

__all__ = ["explore", "page_html", "read_page", "iframe_html"]

NORMALISATIONS = ("nonlinear", "linear", "raw")
COLOUR_MAPS = ("jet", "viridis", "inferno")
ClassNames = Optional[Union[Sequence[str], Mapping[int, str]]]


def _asset(name: str) -> str:
    return asset(__name__, name)


def _methods(res: Optional[DAAMResult], methods: Optional[Mapping[str, DAAMResult]]) -> Dict[str, DAAMResult]:
    out: Dict[str, DAAMResult] = {}
    if res is not None:
        _pack.check_result(res, "res")
        out[res.method] = res
    for k, r in (methods or {}).items():
        if r is res:
            continue
        key = str(k)
        if key in out:
            raise ValueError(f"methods: the name {key!r} is used twice (res.method is {res.method!r})")
        out[key] = r
    if not out:
        raise ValueError("nothing to show: pass a DAAMResult (res) or methods={name: DAAMResult}")
    for k, r in out.items():
        _pack.check_result(r, f"method {k!r}")
    first = next(iter(out.values()))
    for k, r in out.items():
        if (len(r), r.topk) != (len(first), first.topk):
            raise ValueError(f"method {k!r}: {len(r)} rows with topk={r.topk}, but the first method has "
                             f"{len(first)} rows with topk={first.topk}; every method must explain the same rows")
    return out


def page_data(res: Optional[DAAMResult], images: ImagesLike = None, methods: Optional[Mapping[str, DAAMResult]] = None,
              class_names: ClassNames = None, names: Optional[Sequence[str]] = None, title: str = "daam_fast explorer",
              mode: str = "nonlinear", colour_map: str = "jet", alpha: float = 0.4, beta: float = 0.8,
              image_format: str = "jpeg", quality: int = 85, max_side: int = 512, heat_side: int = 224,
              max_rows: Optional[int] = None) -> Dict[str, Any]:
    """The JSON document the page reads (see :func:`page_html` for the arguments)."""
    if mode not in NORMALISATIONS:
        raise ValueError(f"mode={mode!r}: expected one of {', '.join(NORMALISATIONS)}")
    if colour_map not in COLOUR_MAPS:
        raise ValueError(f"colour_map={colour_map!r}: expected one of {', '.join(COLOUR_MAPS)}")
    if image_format not in ("jpeg", "png"):
        raise ValueError(f"image_format={image_format!r}: expected 'jpeg' or 'png'")
    if not (0 <= alpha <= 1 and 0 <= beta <= 1):
        raise ValueError(f"alpha={alpha}, beta={beta}: both must lie in [0, 1]")
    ms = _methods(res, methods)
    first = next(iter(ms.values()))
    topk = first.topk
    n_img = len(first) // topk
    if max_rows is not None and n_img > max_rows:
        n_img = max_rows
        ms = {k: r[: n_img * topk] for k, r in ms.items()}
        if isinstance(images, (list, tuple)) or hasattr(images, "shape"):
            images = images[:n_img]
    pics = _pack.split_images(images, n_img)
    if names is not None and len(names) != n_img:
        raise ValueError(f"names: got {len(names)} names for {n_img} images")
    recs = [_pack.pack_method(k, r) for k, r in ms.items()]
    imgs, sizes = None, []
    if pics is not None:
        imgs = []
        for a in pics:
            url, W, H = _pack.encode_image(a, image_format, quality, max_side)
            imgs.append(url)
            sizes.append([W, H])
    else:
        sizes = [list(_pack.heat_size(tuple(recs[0]["grid"]), heat_side))] * n_img
    targets = recs[0]["targets"]
    cls = [[_pack.class_name(class_names, targets[i * topk + j]) for j in range(topk)] for i in range(n_img)]
    return {
        "version": 1, "title": str(title), "rows": n_img * topk, "topk": topk, "n_images": n_img,
        "names": [str(n) for n in names] if names is not None else [f"image {i}" for i in range(n_img)],
        "class_labels": cls, "images": imgs, "sizes": sizes, "methods": recs,
        "mode": mode, "cmap": colour_map, "alpha": float(alpha), "beta": float(beta),
        "tables": _pack.colour_tables(),
    }


def page_html(res: Optional[DAAMResult], images: ImagesLike = None, methods: Optional[Mapping[str, DAAMResult]] = None,
              class_names: ClassNames = None, names: Optional[Sequence[str]] = None, title: str = "daam_fast explorer",
              mode: str = "nonlinear", colour_map: str = "jet", alpha: float = 0.4, beta: float = 0.8,
              image_format: str = "jpeg", quality: int = 85, max_side: int = 512, heat_side: int = 224,
              max_rows: Optional[int] = None) -> str:
    """The explorer page as one self-contained HTML string (no network access, nothing external).

    Args:
        res: a DAAMResult: maps (B, L, h, w), optionally head_maps (B, L, H, h, w) and
            ``topk`` rows per image (image-major). May be None when ``methods`` is given.
        images: None (the maps alone), or one RGB picture per explained image (B / topk):
            (N, 3, H, W) uint8 or float in [0, 1] tensor, (N, H, W, 3) uint8 array, or a list
            of PIL images / arrays / tensors (sizes may differ). Not the normalised model input.
        methods: further results of the same rows, {name: DAAMResult} (e.g. "direct",
            "rollout", "gradcam"), for the method switch; ``res`` is listed first.
        class_names: names of the classes (list or {index: name}) for the class switch.
        names: one label per image for the image list (default "image i").
        title: the page's title.
        mode: the initial normalisation, "nonlinear" (authors' default), "linear" or "raw".
        colour_map: the initial colour map, "jet" (the authors'), "viridis" or "inferno".
        alpha, beta: initial weight of the colour map (the opacity control) and of the picture.
        image_format: "jpeg" (small) or "png" (lossless); quality: the JPEG quality.
        max_side: pictures whose longer side exceeds it are shrunk (bicubic) to it.
        heat_side: the longer side of the canvas when no pictures are given.
        max_rows: show only the first ``max_rows`` images (None: all).

    Returns:
        The HTML document (str); about 60 KB of page plus, for a ViT-S/16 (12 blocks, 6 heads,
        14 x 14), 52 KB of maps per image with head maps and 15-30 KB per 224 px JPEG.
    """
    data = page_data(res, images, methods, class_names, names, title, mode, colour_map, alpha, beta,
                     image_format, quality, max_side, heat_side, max_rows)
    return standalone_page(_asset("page.html"), _asset("page.css"), _asset("render.js") + "\n" + _asset("page.js"),
                           title, data, "daam-data")


def explore(res: Optional[DAAMResult], images: ImagesLike, path: Union[str, "os.PathLike[str]"],
            methods: Optional[Mapping[str, DAAMResult]] = None, class_names: ClassNames = None,
            **kw: Any) -> str:
    """Write the explorer page of a run to ``path`` (one self-contained HTML file).

    Args:
        res: the DAAMResult (maps (B, L, h, w); head_maps (B, L, H, h, w) for head toggles).
        images: one RGB picture per explained image, (N, 3, H, W) uint8 / float [0, 1], or
            None for the maps alone (see :func:`page_html`).
        path: the .html file to write (its folder is created).
        methods: {name: DAAMResult} of the same rows for the method switch.
        class_names: class names for the class switch and the image list.
        **kw: more options of :func:`page_html` (names, title, mode, colour_map, alpha,
            image_format, quality, max_side, max_rows).

    Returns:
        ``path`` as a str. Open it in any browser (file:// works; nothing is fetched).

    Example:
        >>> daam_fast.explore(res, rgb, "out/run.html", methods={"direct": res_direct})
    """
    text = page_html(res, images, methods=methods, class_names=class_names, **kw)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def iframe_html(page: str, height: int = 760) -> str:
    """The page inside an ``<iframe srcdoc>``, so several pages in one notebook stay apart."""
    return (f'<iframe srcdoc="{_html.escape(page, quote=True)}" style="width:100%;height:{int(height)}px;'
            f'border:1px solid #ccc;border-radius:4px" sandbox="allow-scripts"></iframe>')


def read_page(path_or_html: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
    """Decode the data of a written page (for checks): the JSON with each method's maps as tensors.

    Returns:
        The page's JSON dict, where every method record gains ``maps_t`` / ``block_t``
        (B, L, h, w) and, with heads, ``heads_t`` (B, L, H, h, w): float32 tensors exactly as
        the page decodes them (float16 value * row scale).
    """
    text = os.fspath(path_or_html)
    if "<" not in text[:200] and os.path.exists(text):
        with open(text, encoding="utf-8") as f:
            text = f.read()
    start = text.index('<script type="application/json" id="daam-data">')
    start = text.index(">", start) + 1
    data = json.loads(text[start:text.index("</script>", start)])
    rows = data["rows"]
    for rec in data["methods"]:
        h, w = rec["grid"]
        L = rec["L"]
        rec["maps_t"] = _pack.decode_f16(rec["maps"], rec["maps_scale"], (rows, L, h, w))
        rec["block_t"] = _pack.decode_f16(rec["block"], rec["block_scale"], (rows, L, h, w))
        if rec["H"]:
            rec["heads_t"] = _pack.decode_f16(rec["heads"], rec["heads_scale"], (rows, L, rec["H"], h, w))
    return data
