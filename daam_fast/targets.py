"""What is explained: the scalar Y per image whose gradient gives the coefficients G_b.

A target turns the model's output (logits (B, K), or the pooled feature (B, C) of a model
without a head) into one score per image; DAAM, :func:`daam_fast.daam_reference` and the
baselines differentiate their sum. Each kind of target has one spelling:

=========================================  ==============================================
``target=``                                meaning
=========================================  ==============================================
None                                       each image's own prediction (its argmax logit);
                                           for a model without a head, the label-free
                                           weights (docs/method.md §4)
an int, or (B,) class indices              that class's logit (one class for every image,
(a tensor, or a list of ints)              or one per image)
``TopK(k)``                                each image's k best classes in one batched call,
                                           rows image-major (``res.topk == k``)
``BankTarget(bank)``                       model without a head: the memory bank's k-NN
                                           vote weights (docs/method.md §4)
``Similarity(query)``                      cosine similarity of the output to a query
any callable ``f(output) -> (B,)``         any differentiable score of the output: a
                                           regression output, a text embedding's dot
                                           product ``lambda f: f @ text``, ...
=========================================  ==============================================

Coefficients (docs/method.md §3): G_b is ReLU'd for a model with a classifier head (the
paper's supervised rule), not for a model without one (the self-supervised rule);
``Similarity(query, relu=...)`` or a :class:`Target` subclass's ``relu`` says otherwise.

Example:
    >>> from daam_fast import DAAM, TopK
    >>> res = DAAM(model)(x, target=TopK(3))               # rows i*3 + j: image i, j-th class
    >>> res = DAAM(dino)(x, target=lambda f: f @ text)     # headless: feature . text embedding
"""
from __future__ import annotations

import copy
import re
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._removed import removed_name
from .adapters import Adapter
from .bank import MemoryBank, dimension_weights, label_free_weights

__all__ = ["Target", "TopK", "BankTarget", "Similarity", "TargetLike"]

TargetLike = Union[None, int, Sequence[int], Tensor, "Target", Callable[[Tensor], Tensor]]


class Scored(NamedTuple):
    """What a target made of one output: y (R,) scores with the graph (Y = y.sum()), and what
    the result reports: targets (R,) long (-1: no class), logits (R, K) / features (R, C)
    float32 detached, weights (R, C) or None."""

    y: Tensor
    targets: Tensor
    logits: Optional[Tensor]
    features: Optional[Tensor]
    weights: Optional[Tensor]

    def reported(self) -> dict:
        """targets, logits, features, weights: the keywords of :meth:`DAAMResult.from_block_maps`."""
        return {"targets": self.targets, "logits": self.logits, "features": self.features, "weights": self.weights}


# (flags (R,) bool on the device, error maker(list of bad rows) -> Exception): value checks
# that would stall the GPU if read before the maps are formed; read once at the end.
Deferred = Tuple[Tensor, Callable[[List[int]], Exception]]


class Target:
    """Base class of the target objects (:class:`TopK`, :class:`BankTarget`, :class:`Similarity`).

    A plain callable ``f(output) -> (B,)`` covers most custom targets; a subclass is for one
    that needs more: it sets ``head`` (True: needs a classifier head, False: needs a model
    without one, None: either), may set ``relu`` and ``per_image``, and implements :meth:`score`.

    Attributes:
        per_image: rows explained per image (k for :class:`TopK`, else 1).
        relu: ReLU on G_b (None: on iff the model has a classifier head).
    """

    head: Optional[bool] = None
    per_image: int = 1
    relu: Optional[bool] = None
    adapter: Optional[Adapter] = None
    batch: int = 0

    def bind(self, adapter: Adapter, batch: int) -> "Target":
        """A copy checked against the model and the batch size (before any forward).

        Raises:
            ValueError / TypeError: the target cannot apply to this model or batch.
        """
        name = type(self).__name__
        if self.head is True and adapter.num_classes == 0:
            raise ValueError(f"{name}: the model has no classifier head (self-supervised path: use target=None, "
                             "target=BankTarget(bank), or a callable scoring the feature)")
        if self.head is False and adapter.num_classes > 0:
            raise ValueError(f"{name} is for models without a classifier head (num_classes=0)")
        bound = copy.copy(self)
        bound.adapter, bound.batch = adapter, int(batch)
        bound._check()
        return bound

    def _check(self) -> None:
        """Subclass hook: checks needing the adapter / batch (self.adapter, self.batch)."""

    def relu_coefficients(self) -> bool:
        """Whether G_b is ReLU'd (docs/method.md §3): by default iff the model has a head."""
        return self.adapter.num_classes > 0 if self.relu is None else bool(self.relu)

    def expand(self, images: Tensor) -> Tensor:
        """The batch the model runs: each image ``per_image`` times, image-major."""
        return images if self.per_image == 1 else images.repeat_interleave(self.per_image, dim=0)

    def score(self, out: Tensor) -> Scored:
        """Scores from the model output (R, K) or (R, C), R = batch * per_image."""
        raise NotImplementedError

    def deferred(self) -> List[Deferred]:
        """Value checks left for the end of the call (no host synchronisation before)."""
        return []

    def _report(self, out: Tensor, targets: Optional[Tensor] = None, weights: Optional[Tensor] = None,
                y: Optional[Tensor] = None) -> Scored:
        det = out.detach().float()
        sup = self.adapter.num_classes > 0
        if targets is None:
            targets = torch.full((out.shape[0],), -1, dtype=torch.long, device=out.device)
        return Scored(y, targets, det if sup else None, None if sup else det, weights)


class _Classes(Target):
    """``target=None`` / an int / (B,) class indices on a model with a head: the pre-softmax
    logit of a class (docs/method.md §2).

    Args:
        index: None (each image's argmax), an int for every image, or (B,) class indices
            (tensor or list of ints).
    """

    head = True

    def __init__(self, index: Union[None, int, Sequence[int], Tensor] = None):
        self.index = index
        self._t: Optional[Tensor] = None

    def _check(self) -> None:
        idx, B, K = self.index, self.batch, self.adapter.num_classes
        if idx is None:
            return
        if isinstance(idx, bool):
            raise TypeError("target must be an int, a sequence of ints or a (B,) tensor, not bool")
        if isinstance(idx, int):
            t = torch.full((B,), idx, dtype=torch.long)
        else:
            t = torch.as_tensor(idx)
            if t.is_floating_point() or t.dtype == torch.bool:
                raise TypeError(f"target must be integer class indices, got {t.dtype}")
            t = t.long().flatten() if t.dim() <= 1 else t
            if t.dim() != 1 or (t.numel() != B and t.numel() != 1):
                raise ValueError(f"target must be an int or have one entry per image ({B}), got shape {tuple(t.shape)}")
            t = t.expand(B) if t.numel() == 1 else t
        if t.device.type == "cpu":                      # checked now; a device tensor at the end
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= K:
                raise ValueError(f"target {lo if lo < 0 else hi} out of range for a model with {K} classes")
        self._t = t

    def expand(self, images: Tensor) -> Tensor:
        if self._t is not None and self._t.device != images.device:   # before the forward: no blocking copy after it
            self._t = self._t.to(images.device, non_blocking=True)
        return super().expand(images)

    def _range_error(self, rows: List[int]) -> Exception:
        t = self._t.cpu()
        bad = [int(t[i]) for i in rows]
        return ValueError(f"target {bad[0]} out of range for a model with {self.adapter.num_classes} classes")

    def deferred(self) -> List[Deferred]:
        if self._t is None or self._t.device.type == "cpu":
            return []
        return [((self._t < 0) | (self._t >= self.adapter.num_classes), self._range_error)]

    def score(self, out: Tensor) -> Scored:
        if self._t is None:
            t = out.detach().argmax(dim=1)
        else:
            t = self._t.to(out.device)
        idx = t.clamp(0, out.shape[1] - 1)              # a bad index fails at the end, not on the device
        return self._report(out, targets=t, y=out.gather(1, idx[:, None])[:, 0])


class TopK(Target):
    """Each image's k best classes, explained in one batched call.

    Rows are image-major: row ``i * k + j`` of the result is image i explained for its j-th
    best class (``res.targets`` names it, ``res.topk == k``). The model runs on the batch
    repeated k times.

    Args:
        k: classes per image, 1 <= k <= the number of classes.

    Example:
        >>> res = DAAM(model)(x, target=TopK(3))     # x (B, 3, H, W) -> res.maps (3B, L, h, w)
        >>> res.targets.view(-1, 3)                  # (B, 3): each image's 3 best classes
    """

    head = True

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"TopK: k must be a positive int, got {k!r}")
        self.k = self.per_image = int(k)

    def _check(self) -> None:
        if self.k > self.adapter.num_classes:
            raise ValueError(f"TopK: k={self.k} exceeds the model's {self.adapter.num_classes} classes")

    def score(self, out: Tensor) -> Scored:
        k = self.k
        top = out.detach()[::k].topk(k, dim=1).indices.reshape(-1)         # (B * k,) image-major
        return self._report(out, targets=top, y=out.gather(1, top[:, None])[:, 0])


class BankTarget(Target):
    """Model without a head: Y = sum_d w_d f_d with the dimension-wise weights w of the
    memory bank's k-NN vote (docs/method.md §4); the voted class c* is reported.

    Args:
        bank: a :class:`daam_fast.MemoryBank` of the model's training features (n, C).

    Example:
        >>> res = DAAM(dino)(x, target=BankTarget(bank))   # res.targets (B,) voted classes, res.weights (B, C)
    """

    head = False

    def __init__(self, bank: MemoryBank):
        if not isinstance(bank, MemoryBank):
            raise TypeError(f"bank must be a daam_fast.MemoryBank, got {type(bank).__name__}")
        self.bank = bank

    def bind(self, adapter: Adapter, batch: int) -> "Target":
        if adapter.num_classes > 0:
            raise ValueError("BankTarget is for models without a classifier head (num_classes=0)")
        return super().bind(adapter, batch)

    def score(self, out: Tensor) -> Scored:
        w, c = dimension_weights(out.detach(), self.bank)
        return self._report(out, targets=c, weights=w, y=(w.to(out.dtype) * out).sum(dim=1))


class _LabelFree(Target):
    """``target=None`` on a model without a head: Y = sum_d w_d f_d with the label-free weights
    w = minmax(f'^2 / |sum f'^2|) (the image as its own single neighbour, docs/method.md §4)."""

    head = False

    def score(self, out: Tensor) -> Scored:
        w = label_free_weights(out.detach())
        return self._report(out, weights=w, y=(w.to(out.dtype) * out).sum(dim=1))


class _Score(Target):
    """A callable target: any differentiable score of the model output, ``fn(output) -> (B,)``.

    ``output`` is the logits (B, K) of a model with a head, else the pooled feature (B, C),
    in the model's dtype and with its graph. Examples: a regression output ``lambda o: o[:, 0]``,
    a text embedding's dot product ``lambda f: f @ text``. The reported targets are -1.

    Args:
        fn: the score function.
        relu: ReLU on G_b (None: as the model's default, on iff it has a head).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], relu: Optional[bool] = None):
        if not callable(fn):
            raise TypeError(f"target: the score function must be callable, got {type(fn).__name__}")
        self.fn, self.relu = fn, relu

    def score(self, out: Tensor) -> Scored:
        s = self.fn(out)
        if not isinstance(s, Tensor):
            raise TypeError(f"target callable must return a (B,) tensor of scores, got {type(s).__name__}")
        if s.dim() == 2 and s.shape[1] == 1:
            s = s[:, 0]
        if tuple(s.shape) != (out.shape[0],):
            raise ValueError(f"target callable must return (B,) = ({out.shape[0]},) scores, got shape {tuple(s.shape)}")
        if not s.is_floating_point():
            raise TypeError(f"target callable must return floating-point scores, got {s.dtype}")
        return self._report(out, y=s)


class Similarity(_Score):
    """Cosine similarity of the output (the feature of a model without a head) to a query.

    Args:
        query: (C,) or (B, C) query feature, e.g. the feature of another image or a text
            embedding in the same space.
        relu: ReLU on G_b (None: on iff the model has a classifier head).

    Example:
        >>> res = DAAM(dino)(x, target=Similarity(dino(x_query)[0]))
    """

    def __init__(self, query: Tensor, relu: Optional[bool] = None):
        if not isinstance(query, Tensor) or query.dim() not in (1, 2):
            raise ValueError("Similarity: query must be a (C,) or (B, C) tensor")
        self.query = query.detach()
        super().__init__(self._cos, relu)

    def _cos(self, out: Tensor) -> Tensor:
        q = self.query.to(device=out.device, dtype=out.dtype)
        if q.shape[-1] != out.shape[1]:
            raise ValueError(f"Similarity: query has {q.shape[-1]} channels, the model output {out.shape[1]}")
        return F.cosine_similarity(out, q.expand_as(out) if q.dim() == 1 else q, dim=1)


def as_target(target: TargetLike, adapter: Adapter, batch: int) -> Target:
    """The bound :class:`Target` of a user's ``target`` argument (see the module docstring).

    Args:
        target: None, an int, (B,) class indices (tensor or list of ints), a target object
            or a callable ``f(output) -> (B,)``.  adapter: the model's adapter.  batch: B.

    Raises:
        ValueError / TypeError naming what is wrong, before any forward; a removed spelling
        (a string such as "top3") names the one to use.
    """
    if isinstance(target, str):
        m = re.fullmatch(r"top(\d+)", target.strip().lower())
        use = f"target=TopK({m.group(1)})" if m else "TopK(k), an int class or a callable"
        raise TypeError(f"target={target!r}: string targets were removed in daam_fast 0.2.0; use {use}")
    if target is None:
        target = _Classes() if adapter.num_classes > 0 else _LabelFree()
    elif isinstance(target, (int, list, tuple, Tensor)) or hasattr(target, "__array__"):
        if adapter.num_classes == 0:
            raise ValueError("target given, but the model has no classifier head (self-supervised path: "
                             "target=BankTarget(bank) with a MemoryBank, or a callable scoring the feature)")
        target = _Classes(target)
    elif not isinstance(target, Target):
        if not callable(target):
            raise TypeError(f"target must be None, an int, (B,) class indices, TopK(k), BankTarget(bank), "
                            f"Similarity(query) or a callable f(output) -> (B,) scores; got {type(target).__name__}")
        target = _Score(target)
    return target.bind(adapter, batch)


def __getattr__(name: str):
    raise removed_name(__name__, name)       # a removed name (e.g. ClassTarget) says what replaces it
