"""The result type shared by the fast path, the reference and the baselines."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
from torch import Tensor


@dataclass
class DAAMResult:
    """Maps of one batch, all on the input's device.

    Attributes:
        block_maps: (B, L, h, w) float32, the per-block maps L_b (docs/method.md §3).
        maps: (B, L, h, w) float32, the accumulated maps D_b = sum_{i<=b} L_i; ``maps[:, -1]``
            is the final explanation.
        targets: (B,) long, the class explained per row (the predicted class c* from the
            memory bank in self-supervised mode, or -1 where no bank was given).
        logits: (B, K) float32 model output, or None for a model without a classifier head.
        features: (B, C) float32 pooled feature f, for a model without a head, else None.
        weights: (B, C) float32 dimension-wise weights w (self-supervised), else None.
        method: "grad", "direct", "reference" or a baseline's name.
        grid: (h, w) patch grid.
        head_maps: (B, L, H, h, w) float32, each head's term of L_b before the ReLU
            (``DAAM(model, heads=True)``), so ``relu(head_maps.sum(2)) == block_maps``;
            None otherwise.
        topk: rows per image: with ``target=TopK(k)`` / ``"top3"`` the rows are image-major,
            row ``i * topk + j`` is image i explained for its j-th best class (``targets``
            holds the class of each row); 1 otherwise.
    """

    block_maps: Tensor
    maps: Tensor
    targets: Tensor
    logits: Optional[Tensor] = None
    features: Optional[Tensor] = None
    weights: Optional[Tensor] = None
    method: str = "grad"
    grid: Tuple[int, int] = field(default=(0, 0))
    head_maps: Optional[Tensor] = None
    topk: int = 1

    @property
    def final(self) -> Tensor:
        """(B, h, w) the final accumulated map D_L."""
        return self.maps[:, -1]

    @property
    def num_blocks(self) -> int:
        return self.maps.shape[1]

    def to(self, device) -> "DAAMResult":
        """A copy with every tensor moved to ``device`` (e.g. "cpu" before saving)."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return DAAMResult(mv(self.block_maps), mv(self.maps), mv(self.targets), mv(self.logits),
                          mv(self.features), mv(self.weights), self.method, self.grid,
                          mv(self.head_maps), self.topk)

    def __getitem__(self, idx) -> "DAAMResult":
        """Select rows: ``res[i]`` or ``res[2:5]`` keeps the batch axis.

        With ``topk > 1`` the rows are (image, class) pairs; a selection that is not whole
        images gives a result with ``topk = 1`` (each row then stands alone).
        """
        n = self.maps.shape[0]
        if isinstance(idx, int):
            if not -n <= idx < n:
                raise IndexError(f"row {idx} out of range for {n} rows")
            idx = idx % n
            idx = slice(idx, idx + 1)
        sel = lambda t: None if t is None else t[idx]  # noqa: E731
        topk = self.topk
        if topk > 1:
            rows = torch.arange(n)[idx]
            whole = (rows.numel() % topk == 0 and rows.numel() > 0
                     and bool((rows.reshape(-1, topk) == rows.reshape(-1, topk)[:, :1] + torch.arange(topk)).all())
                     and bool((rows.reshape(-1, topk)[:, 0] % topk == 0).all()))
            topk = topk if whole else 1
        return DAAMResult(sel(self.block_maps), sel(self.maps), sel(self.targets), sel(self.logits),
                          sel(self.features), sel(self.weights), self.method, self.grid,
                          sel(self.head_maps), topk)

    def __len__(self) -> int:
        return self.maps.shape[0]

    def show(self, images=None, **kw):
        """The interactive explorer of these maps, inline in Jupyter (see :mod:`daam_fast.explore`).

        Args:
            images: None (the maps alone) or one RGB picture per image (B / topk): (N, 3, H, W)
                uint8 or float in [0, 1], or a list of PIL images / arrays.
            **kw: options of :func:`daam_fast.explore.page_html` (methods, class_names, mode, ...)
                and ``height`` of the frame in pixels (default 760).

        Returns:
            An ``IPython.display.HTML`` object (the page in an ``<iframe srcdoc>``), or the same
            HTML as a str where IPython is not installed.
        """
        from .explore import iframe_html, page_html
        height = kw.pop("height", 760)
        text = iframe_html(page_html(self.to("cpu"), images, **kw), height=height)
        try:
            from IPython.display import HTML
        except ImportError:
            return text
        return HTML(text)

    def _repr_html_(self):
        """Jupyter's rich display: the explorer of the maps alone (the first 16 images), or None
        (plain repr) where the page cannot be built (e.g. non-finite maps)."""
        try:
            from .explore import iframe_html, page_html
            return iframe_html(page_html(self.to("cpu"), None, max_rows=16))
        except (ValueError, TypeError, ImportError):
            return None

    @staticmethod
    def from_block_maps(block_maps: Tensor, targets: Tensor, **kw) -> "DAAMResult":
        """Build a result from (B, L, h, w) per-block maps, accumulating over blocks."""
        return DAAMResult(block_maps=block_maps, maps=torch.cumsum(block_maps, dim=1), targets=targets, **kw)
