"""The spellings 0.2.0 removed, each with the one that replaces it (CHANGELOG.md), in one place.

A removed keyword or target spelling raises ``TypeError`` / ``ValueError`` naming its
replacement instead of a bare "unexpected keyword argument".
"""
from __future__ import annotations

from typing import Mapping

__all__ = ["REMOVED_OPTIONS", "REMOVED_CALL_KEYWORDS", "REMOVED_NAMES", "RemovedNameError", "reject_keywords",
           "removed_name"]

# DAAM(model, ...) options
REMOVED_OPTIONS: Mapping[str, str] = {
    "checkpoint": "activation_checkpointing=True",
    "reduce_first_block": "nothing: the first block's row reduction is exact and always on where it applies",
    "reduce_last_block": "nothing: the last block's row reduction is exact and always on where it applies",
}

# DAAM(model)(images, ...), daam_reference(...), the baselines' calls
REMOVED_CALL_KEYWORDS: Mapping[str, str] = {
    "bank": "target=BankTarget(bank)",
    "topk": "target=TopK(k)",
}


def reject_keywords(where: str, given: Mapping[str, object], removed: Mapping[str, str]) -> None:
    """Raise ``TypeError`` for the first keyword in ``given``: naming its replacement when it is
    a removed spelling, else as Python does for an unknown keyword. Nothing when ``given`` is empty."""
    for name in given:
        if name in removed:
            raise TypeError(f"{where}: {name}= was removed in daam_fast 0.2.0; use {removed[name]}")
        raise TypeError(f"{where} got an unexpected keyword argument {name!r}")


# names daam_fast and daam_fast.targets no longer export
REMOVED_NAMES: Mapping[str, str] = {
    "ClassTarget": "target=c (an int) or target=classes (a (B,) tensor or a list of ints)",
    "Score": "the callable itself: target=f with f(output) -> (B,) scores",
    "LabelFree": "target=None (a model without a head is explained with the label-free weights)",
}


class RemovedNameError(ImportError):
    """A name 0.2.0 removed was imported or read; the message names its replacement. An
    ImportError, so that ``from daam_fast import ClassTarget`` shows the message."""


def removed_name(module: str, name: str) -> AttributeError:
    """For a module's ``__getattr__``: raises :class:`RemovedNameError` for a removed name;
    else returns the AttributeError to raise."""
    if name in REMOVED_NAMES:
        raise RemovedNameError(f"{module}.{name} was removed in daam_fast 0.2.0; use {REMOVED_NAMES[name]}")
    return AttributeError(f"module {module!r} has no attribute {name!r}")
