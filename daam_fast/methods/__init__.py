"""The DAAM methods, one module each, in ONE table: :data:`METHODS` (name -> method object).

Everything that offers a choice of method (``DAAM(method=...)``, the CLI, video, Ray, eval)
reads this table, so a new method is one module ``daam_fast/methods/<name>.py`` defining
``METHOD`` (a :class:`~daam_fast.methods.base.Method`) and one line in ``_MODULES`` below.

- "grad" (:mod:`.grad`): the paper's G_b = dY/dT_b[0] from one backward (docs/method.md §2).
- "direct" (:mod:`.direct`): forward only, G_b along the residual path (docs/method.md §7).
- "row" (:mod:`.row`): forward only, then a backward on the rows the head reads (docs/method.md §8).
"""
from __future__ import annotations

import importlib
from typing import Dict

from .base import Method

__all__ = ["METHODS", "Method"]

_MODULES = (
    "grad",
    "direct",
    "row",
)

METHODS: Dict[str, Method] = {}
for _mod in _MODULES:
    _m = importlib.import_module(f"{__name__}.{_mod}").METHOD
    METHODS[_m.name] = _m
