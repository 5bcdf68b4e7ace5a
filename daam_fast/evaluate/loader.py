"""The images of an evaluation: generated shapes (labels and masks) or a folder (optional masks)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["EvalData", "load_data"]


@dataclass
class EvalData:
    """Images ready for :func:`daam_fast.evaluate.evaluate`.

    Attributes:
        images: (n, 3, H, W) normalised model input, or None when no image could be read.
        masks: (n, H, W) bool object masks, or None.
        labels: (n,) int64 classes where the data has them (shapes), else None.
        name: what the data is, for the report.
        failed: (path, reason) of every skipped file.
    """

    images: Optional[Tensor]
    masks: Optional[Tensor]
    labels: Optional[Tensor]
    name: str
    failed: List[Tuple[str, str]] = field(default_factory=list)


def load_data(data: str, masks: Optional[str], spec, num_images: Optional[int] = None, seed: int = 0,
              device="cpu") -> EvalData:
    """``data="shapes"``: ``num_images`` (default 500) generated shapes with labels and masks;
    else a directory of images (all, or the first ``num_images``) with optional masks in ``masks``
    (``<stem>.png`` or ``<stem>_mask.png``), prepared per ``spec`` (:func:`daam_fast.preprocess.input_spec`).

    Raises:
        ValueError: shapes for a non-square model input, or ``data`` neither "shapes" nor a directory.
    """
    from ..preprocess import prepare
    if data == "shapes":
        from ..zoo.shapes import make_shapes
        if spec.size[0] != spec.size[1]:
            raise ValueError("--data shapes needs a square model input")
        batch = make_shapes(num_images or 500, seed=seed, size=spec.size[0])
        x, _ = prepare(batch.images, spec, device=device)
        return EvalData(x, batch.masks.to(device), batch.labels.to(device), f"the shapes dataset (seed {seed})")
    if not os.path.isdir(data):
        raise ValueError(f"--data must be 'shapes' or a directory, got {data}")
    x, mk, _used, failed = _load_dir(data, masks, spec, num_images, device)
    return EvalData(x, mk, None, data, failed)


def _load_dir(data: str, masks_dir: Optional[str], spec, num: Optional[int], device):
    from ..io import ImageReadError, expand_inputs, read_image
    from ..preprocess import prepare
    paths, problems = expand_inputs([data])
    paths = [p for p in paths if not os.path.splitext(os.path.basename(p))[0].endswith("_mask")]
    if num:
        paths = paths[:num]
    pics, masks, used, failed = [], [], [], list(problems)
    mask_index = {}
    if masks_dir is not None:
        mpaths, mprob = expand_inputs([masks_dir])
        failed += mprob
        for mp in mpaths:
            stem = os.path.splitext(os.path.basename(mp))[0]
            mask_index[stem[:-5] if stem.endswith("_mask") else stem] = mp
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        try:
            pic = read_image(p, max_side=4 * max(spec.size))
            mk = None
            if masks_dir is not None:
                if stem not in mask_index:
                    raise ImageReadError(f"no mask {stem}.png or {stem}_mask.png in {masks_dir}")
                m = read_image(mask_index[stem]).amax(dim=0)
                if tuple(m.shape) != tuple(pic.shape[-2:]):
                    raise ImageReadError(f"mask {mask_index[stem]} is {tuple(m.shape)}, the image {tuple(pic.shape[-2:])}")
                mk = torch.nn.functional.interpolate((m > 127).float()[None, None], size=spec.size, mode="nearest")[0, 0] > 0.5
        except ImageReadError as e:
            failed.append((p, str(e)))
            continue
        pics.append(pic)
        masks.append(mk)
        used.append(p)
    if not pics:
        return None, None, used, failed
    x, _ = prepare(pics, spec, device=device)
    return x, (torch.stack(masks).to(device) if masks_dir is not None else None), used, failed
