"""Memory bank and dimension-wise importance weights for self-supervised models (docs/method.md §4)."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MemoryBank", "dimension_weights", "label_free_weights"]


class MemoryBank:
    """L2-normalised training features with integer labels, for the k-NN vote of docs/method.md §4.

    Args:
        features: (K_bank, C) features; normalised to unit L2 norm on construction.
        labels: (K_bank,) integer labels.
        k: number of neighbours (20 in the paper).
        temperature: vote temperature T (0.07 in the paper).

    Example:
        >>> bank = MemoryBank.from_features(train_feats, train_labels)
        >>> bank.save("bank.pt"); bank = MemoryBank.load("bank.pt")
    """

    def __init__(self, features: Tensor, labels: Tensor, k: int = 20, temperature: float = 0.07):
        if features.dim() != 2:
            raise ValueError(f"MemoryBank: features must be (K_bank, C), got {tuple(features.shape)}")
        if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(f"MemoryBank: labels must be ({features.shape[0]},), got {tuple(labels.shape)}")
        if labels.dtype.is_floating_point:
            raise ValueError("MemoryBank: labels must be integers")
        if not torch.isfinite(features).all():
            raise ValueError("MemoryBank: features contain NaN or inf")
        if k < 1 or temperature <= 0:
            raise ValueError(f"MemoryBank: need k >= 1 and temperature > 0, got k={k}, T={temperature}")
        self.features = F.normalize(features.float(), dim=1)
        self.labels = labels.long()
        self.k = int(k)
        self.temperature = float(temperature)
        self._num_classes = int(self.labels.max().item()) + 1 if self.labels.numel() else 0   # read once, here
    @classmethod
    def from_features(cls, features: Tensor, labels: Tensor, k: int = 20, temperature: float = 0.07) -> "MemoryBank":
        """Build a bank from raw (unnormalised) features (K_bank, C) and labels (K_bank,)."""
        return cls(features.detach(), labels.detach(), k=k, temperature=temperature)

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    @property
    def num_classes(self) -> int:
        """Labels are 0 .. num_classes - 1 (read once on construction: no device read per call)."""
        return self._num_classes

    def to(self, device) -> "MemoryBank":
        out = MemoryBank.__new__(MemoryBank)
        out.features, out.labels = self.features.to(device), self.labels.to(device)
        out.k, out.temperature, out._num_classes = self.k, self.temperature, self._num_classes
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Save to a ``.pt`` file (features, labels, k, temperature)."""
        torch.save({"features": self.features.cpu(), "labels": self.labels.cpu(), "k": self.k,
                    "temperature": self.temperature, "format": "daam_fast.MemoryBank/1"}, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location="cpu") -> "MemoryBank":
        """Load a bank written by :meth:`save`."""
        d = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
        if not isinstance(d, dict) or d.get("format") != "daam_fast.MemoryBank/1":
            raise ValueError(f"{path}: not a daam_fast memory bank")
        return cls(d["features"], d["labels"], k=d["k"], temperature=d["temperature"])

    def __repr__(self) -> str:
        return (f"MemoryBank(size={self.features.shape[0]}, dim={self.dim}, classes={self.num_classes}, "
                f"k={self.k}, T={self.temperature})")


def _normalise_weights(p: Tensor) -> Tensor:
    """Step 5 of docs/method.md §4, batched: p (B, C) -> w in [0, 1]."""
    s = p.sum(dim=1, keepdim=True).abs()
    w = torch.where(s > 0, p / torch.where(s > 0, s, torch.ones_like(s)), p)
    lo, hi = w.min(dim=1, keepdim=True).values, w.max(dim=1, keepdim=True).values
    span = hi - lo
    return torch.where(span > 0, (w - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.ones_like(w))


def dimension_weights(features: Tensor, bank: MemoryBank) -> Tuple[Tensor, Tensor]:
    """Dimension-wise importance weights w (docs/method.md §4), batched.

    Args:
        features: (B, C) pooled features f (unnormalised).
        bank: the memory bank.

    Returns:
        (w, c_star): (B, C) weights in [0, 1] and (B,) predicted labels of the k-NN vote.
    """
    if features.shape[1] != bank.dim:
        raise ValueError(f"memory bank has feature dim {bank.dim}, model features have {features.shape[1]}")
    bank = bank.to(features.device)
    f = F.normalize(features.detach().float(), dim=1)                  # f'
    sims = f @ bank.features.T                                          # (B, K_bank)
    k = min(bank.k, sims.shape[1])
    s, idx = sims.topk(k, dim=1)                                        # (B, k)
    lab = bank.labels[idx]                                              # (B, k)
    votes = torch.zeros(f.shape[0], bank.num_classes, device=f.device, dtype=f.dtype)
    votes.scatter_add_(1, lab, torch.exp(s / bank.temperature))
    c_star = votes.argmax(dim=1)                                        # (B,)
    keep = (lab == c_star[:, None]).to(f.dtype)                         # (B, k), at least one True
    z = bank.features[idx]                                              # (B, k, C)
    p = (keep[:, :, None] * z).sum(dim=1) * f / keep.sum(dim=1, keepdim=True)  # mean_j f' * z_j
    return _normalise_weights(p), c_star


def label_free_weights(features: Tensor) -> Tensor:
    """The default without a bank: the image is its own single neighbour, p = f' * f' = f'^2,
    then the same normalisation (step 5) as with a bank. Returns (B, C)."""
    f = F.normalize(features.detach().float(), dim=1)
    return _normalise_weights(f * f)
