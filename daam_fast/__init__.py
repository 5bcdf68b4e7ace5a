"""daam_fast: Dynamic Accumulated Attention Maps for Vision Transformers, fast.

Example:
    >>> from daam_fast import DAAM, render
    >>> with DAAM(model) as daam:
    ...     res = daam(images)                 # (B, 3, H, W) normalised
    >>> frames = render(res.maps, images=rgb)  # (B, L, H, W, 3) uint8 attention flow
"""
from .bank import MemoryBank
from .explainer import DAAM
from .reference import daam_reference
from .render import render
from .result import DAAMResult

__version__ = "0.1.0"

__all__ = ["DAAM", "DAAMResult", "MemoryBank", "daam_reference", "render", "__version__"]
