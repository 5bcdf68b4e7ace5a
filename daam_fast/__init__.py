"""daam_fast: Dynamic Accumulated Attention Maps for Vision Transformers, fast.

Example:
    >>> from daam_fast import DAAM, TopK, render
    >>> with DAAM(model) as daam:
    ...     res = daam(images)                 # (B, 3, H, W) normalised
    ...     top = daam(images, target=TopK(3)) # rows i*3 + j: image i, its j-th best class
    >>> frames = render(res.maps, images=rgb)  # (B, L, H, W, 3) uint8 attention flow
"""
from .bank import MemoryBank
from .explainer import DAAM
from .reference import daam_reference
from .render import render
from .result import DAAMResult
from . import explore  # noqa: E402  (callable module: daam_fast.explore(res, images, path))
from .targets import BankTarget, ClassTarget, LabelFree, Score, Similarity, Target, TopK

__version__ = "0.2.0"

__all__ = ["DAAM", "DAAMResult", "MemoryBank", "daam_reference", "render", "__version__",
           "Target", "ClassTarget", "TopK", "BankTarget", "LabelFree", "Score", "Similarity", "explore"]
