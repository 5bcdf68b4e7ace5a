"""Input checks shared by the fast path, the reference and the baselines, and the checks
a call leaves to its end (the model layout itself lives in :mod:`daam_fast.adapters`)."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .adapters import Adapter


def _nonfinite_error(rows: List[int]) -> Exception:
    return ValueError(f"images contain NaN or inf (images {rows})")


def check_images(images: Tensor, adapter: Adapter, finite: bool = True) -> Optional[Tensor]:
    """Check a batch before the forward.

    Args:
        images: (B, C, H, W) float model input.  adapter: the model's adapter.
        finite: check for NaN / inf now (a host synchronisation); False returns the (B,)
            flags of the images that are not finite, for :class:`Checks` at the end of the call.

    Raises:
        TypeError / ValueError naming what is wrong; RuntimeError inside ``torch.inference_mode()``.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] != adapter.in_chans:
        raise ValueError(f"images have {images.shape[1]} channels, the model expects {adapter.in_chans}")
    if images.shape[0] == 0:
        raise ValueError("empty batch")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (normalised model input), got {images.dtype}; "
                         "use daam_fast.preprocess.prepare() for uint8 pictures")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("DAAM needs autograd: call it outside torch.inference_mode()")
    bad = ~torch.isfinite(images.detach()).flatten(1).all(dim=1)
    if not finite:
        return bad
    Checks([(bad, _nonfinite_error)]).raise_first()
    return None


def _output_error(per_image: int) -> Callable[[List[int]], Exception]:
    def make(rows: List[int]) -> Exception:
        idx = sorted({r // per_image for r in rows})
        return ValueError(f"the model's output is not finite (NaN or inf) for image(s) {idx[:10]}"
                          f"{' ...' if len(idx) > 10 else ''}: the input values overflow the network "
                          "(are the images normalised as the model expects?)")
    return make


def output_flags(out: Tensor) -> Tensor:
    """(R,) flags of the rows whose model output is NaN / inf (finite but huge pixels overflow
    float32 inside the network: the maps would be zero or NaN without a word)."""
    return ~torch.isfinite(out.detach()).flatten(1).all(dim=1)


class Checks:
    """Value checks of one call, read with one host synchronisation at its end.

    Each entry is (flags (R,) bool, make_error(bad rows) -> Exception); entries are in
    priority order (bad images before the model output they cause).
    """

    def __init__(self, entries=()):
        self.entries: List[Tuple[Tensor, Callable[[List[int]], Exception]]] = list(entries)

    def add(self, flags: Optional[Tensor], make_error: Callable[[List[int]], Exception]) -> None:
        if flags is not None:
            self.entries.append((flags, make_error))

    def add_images(self, flags: Optional[Tensor]) -> None:
        """Flags from :func:`check_images` (``finite=False``)."""
        self.add(flags, _nonfinite_error)

    def add_output(self, out: Tensor, per_image: int = 1) -> None:
        """The model output must be finite (see :func:`output_flags`)."""
        self.add(output_flags(out), _output_error(per_image))

    def raise_first(self) -> None:
        """Raise the first failing check's error (one synchronisation when all pass)."""
        if not self.entries:
            return
        flags = [f.flatten().to(self.entries[0][0].device) for f, _ in self.entries]
        if not bool(torch.cat(flags).any()):
            return
        for f, make in self.entries:
            rows = f.flatten().nonzero().flatten().tolist()
            if rows:
                raise make(rows)
