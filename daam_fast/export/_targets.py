"""What an exported graph explains: the targets a graph can hold, fixed when it is traced."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import Tensor

from ..adapters import Adapter
from ..bank import MemoryBank
from ..targets import BankTarget, Target

__all__ = ["ClassInput", "TargetSpec", "target_spec"]


class ClassInput:
    """The class explained is the graph's second input, ``target`` (B,) int64 (a model with a head).

    Example:
        >>> sal = saliency_module(model, target=ClassInput())
        >>> logits, maps = sal(x, torch.tensor([3, 1]))
    """

    def __repr__(self) -> str:
        return "ClassInput()"


@dataclass(frozen=True)
class TargetSpec:
    """A target in the form the traced computation reads.

    Attributes:
        kind: "prediction" (each image's argmax), "class" (``index`` for every image),
            "input" (the graph's second input), "label-free" (a model without a head), "bank" (the memory bank's
            vote; ``bank`` becomes constants of the graph) or "score" (``fn(output) -> (B,)``,
            traced into the graph).
        index: the class of kind "class".  bank: the bank of kind "bank".
        fn: the score of kind "score".  relu_override: ReLU on G_b (None: iff the model has a head).
    """

    kind: str
    index: int = -1
    bank: Optional[MemoryBank] = None
    fn: Optional[Callable] = None
    relu_override: Optional[bool] = None

    def relu(self, adapter: Adapter) -> bool:
        """Whether G_b is ReLU'd (docs/method.md §3)."""
        return adapter.num_classes > 0 if self.relu_override is None else bool(self.relu_override)

    @property
    def takes_input(self) -> bool:
        return self.kind == "input"

    def describe(self) -> str:
        """One word for metadata: prediction, class:K, input, label-free, bank, score."""
        return f"class:{self.index}" if self.kind == "class" else self.kind


def target_spec(target, adapter: Adapter) -> TargetSpec:
    """The :class:`TargetSpec` of a user's ``target``.

    Args:
        target: None (the prediction; a model without a head: the label-free weights), an
            int (that class for every image), :class:`ClassInput` (the graph's second input),
            ``BankTarget(bank)`` (a model without a head), or a callable ``f(output) -> (B,)``
            (``Similarity(query)`` too) that traces.

    Raises:
        ValueError / TypeError: the target cannot be held by a graph or does not fit the model.
    """
    head = adapter.num_classes > 0
    if isinstance(target, (list, tuple, Tensor)) or hasattr(target, "__array__"):
        raise ValueError("an exported graph holds one class for every image (an int); per-image classes are "
                         "the graph's second input: target=ClassInput()")
    if target is None:
        return TargetSpec("prediction" if head else "label-free")
    if isinstance(target, bool):
        raise TypeError("target must be an int class, not bool")
    if isinstance(target, int):
        if not head:
            raise ValueError("a class target needs a model with a classifier head (this one has none: use "
                             "target=None or BankTarget(bank))")
        if not 0 <= target < adapter.num_classes:
            raise ValueError(f"target {target} out of range for a model with {adapter.num_classes} classes")
        return TargetSpec("class", index=int(target))
    if isinstance(target, ClassInput):
        if not head:
            raise ValueError("ClassInput needs a model with a classifier head")
        return TargetSpec("input")
    if isinstance(target, BankTarget):
        if head:
            raise ValueError("BankTarget is for models without a classifier head (num_classes=0)")
        return TargetSpec("bank", bank=target.bank)
    if isinstance(target, Target):
        fn = getattr(target, "fn", None)            # a score of the output (Similarity): traced as it is
        if callable(fn):
            return TargetSpec("score", fn=fn, relu_override=getattr(target, "relu", None))
        raise ValueError(f"{type(target).__name__} cannot be held by an exported graph (one row per image); "
                         "use None, an int, ClassInput(), BankTarget(bank) or a callable")
    if callable(target):
        return TargetSpec("score", fn=target)
    raise TypeError(f"an exported graph's target is None, an int, ClassInput(), BankTarget(bank) or a callable "
                    f"f(output) -> (B,); got {type(target).__name__}")
