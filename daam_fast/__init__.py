"""daam_fast: Dynamic Accumulated Attention Maps for Vision Transformers, fast.

The public API, one spelling per concept:

- :class:`DAAM` explains a batch: ``res = DAAM(model, method="grad")(x, target=None)``;
  ``with DAAM(model) as daam:`` keeps the model patched for many calls.
- Targets (``target=``): None (the prediction), an int or (B,) class indices, :class:`TopK`,
  :class:`BankTarget` (with a :class:`MemoryBank`), :class:`Similarity`, or any callable
  ``f(output) -> (B,)`` (:mod:`daam_fast.targets`).
- :class:`DAAMResult`: ``maps`` (B, L, h, w) the accumulated attention flow, ``block_maps``,
  ``targets``, ``logits``...
- :func:`prepare` turns pictures into model input, :func:`render` maps into frames,
  :func:`explore` a run into an interactive HTML page; :func:`daam_reference` is the
  pure-PyTorch reference.

Example:
    >>> from daam_fast import DAAM, TopK, prepare, render
    >>> x, rgb = prepare(pictures, model)      # (B, 3, H, W) normalised input, uint8 pictures
    >>> res = DAAM(model)(x)                   # res.maps (B, L, h, w)
    >>> top = DAAM(model)(x, target=TopK(3))   # rows i*3 + j: image i, its j-th best class
    >>> frames = render(res.maps, images=rgb)  # (B, L, H, W, 3) uint8 attention flow
"""
from ._removed import removed_name
from .bank import MemoryBank
from .explainer import DAAM
from .explorer import explore
from .preprocess import prepare
from .reference import daam_reference
from .render import render
from .result import DAAMResult
from .targets import BankTarget, Similarity, TopK

__version__ = "0.2.0"

__all__ = ["DAAM", "DAAMResult", "MemoryBank", "TopK", "BankTarget", "Similarity", "prepare", "render", "explore",
           "daam_reference", "__version__"]


def __getattr__(name: str):
    raise removed_name(__name__, name)       # a removed name (e.g. ClassTarget) says what replaces it
