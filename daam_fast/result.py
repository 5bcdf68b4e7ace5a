"""The result type shared by the fast path, the reference and the baselines.

Every producer builds it one way, :meth:`DAAMResult.from_block_maps`. The one reference from
here up to a sub-system is the display hook: :meth:`DAAMResult.show` and Jupyter's
:meth:`DAAMResult._repr_html_` import :mod:`daam_fast.explorer` when called (never at import).
"""
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
        topk: rows per image: with ``target=TopK(k)`` the rows are image-major,
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
        """The interactive explorer of these maps, inline in Jupyter (see :func:`daam_fast.explore`).

        Args:
            images: None (the maps alone) or one RGB picture per image (B / topk): (N, 3, H, W)
                uint8 or float in [0, 1], or a list of PIL images / arrays.
            **kw: options of :func:`daam_fast.explorer.page_html` (methods, class_names, mode, ...)
                and ``height`` of the frame in pixels (default 760).

        Returns:
            An ``IPython.display.HTML`` object (the page in an ``<iframe srcdoc>``), or the same
            HTML as a str where IPython is not installed.
        """
        height = kw.pop("height", 760)
        text = self._explorer_frame(images, height=height, **kw)
        try:
            from IPython.display import HTML
        except ImportError:
            return text
        return HTML(text)

    def _repr_html_(self):
        """Jupyter's rich display: the explorer of the maps alone (the first 16 images), or None
        (plain repr) where the page cannot be built (e.g. non-finite maps)."""
        try:
            return self._explorer_frame(None, max_rows=16)
        except (ValueError, TypeError, ImportError):
            return None

    def _explorer_frame(self, images, height: int = 760, **kw) -> str:
        """The display hook: the explorer page of these maps in an ``<iframe srcdoc>``. The only
        import from the result up to a sub-system (:mod:`daam_fast.explorer`), made when a
        result is displayed, never at import."""
        from .explorer import iframe_html, page_html
        return iframe_html(page_html(self.to("cpu"), images, **kw), height=height)

    @classmethod
    def from_block_maps(cls, block_maps: Tensor, targets: Tensor, *, logits: Optional[Tensor] = None,
                        features: Optional[Tensor] = None, weights: Optional[Tensor] = None, method: str = "grad",
                        grid: Optional[Tuple[int, int]] = None, topk: int = 1, normalize: bool = False,
                        head_maps: Optional[Tensor] = None, maps: Optional[Tensor] = None) -> "DAAMResult":
        """The one way a result is built (the fast path, the reference, the baselines).

        Args:
            block_maps: (B, L, h, w), or (B, L, h * w) with ``grid``, the per-block maps L_b.
            targets: (B,) long, the class explained per row (-1: none).
            logits: (B, K) or None, as the attribute (``Scored.reported()`` gives it with the
                targets); detached here.
            features: (B, C) or None, likewise.
            weights: (B, C) or None, likewise.
            method: the result's ``method``.
            grid: (h, w) patch grid (default: block_maps' last two axes).
            topk: rows per image (``target=TopK(k)``: k).
            normalize: per-block min-max normalisation (L - min) / (max - min + 1e-10).
            head_maps: None or (B, L, H, h, w) / (B, L, H, h * w) per-head terms (not normalised).
            maps: None (the accumulated maps D_b, the cumulative sum of the block maps over L), or
                the maps of a method that accumulates otherwise (rollout), shaped as block_maps.

        Returns:
            DAAMResult with block_maps / maps (B, L, h, w) float32 (float64 for float64 maps).

        Raises:
            ValueError: the maps do not fill the grid.

        Example:
            >>> res = DAAMResult.from_block_maps(torch.rand(2, 12, 14, 14), torch.tensor([3, 7]))
        """
        B, L = block_maps.shape[:2]
        h, w = tuple(block_maps.shape[-2:]) if grid is None else grid
        n = block_maps[0, 0].numel()
        if n != h * w:
            raise ValueError(f"{n} patch tokens do not fill the {h}x{w} grid")
        bm = block_maps.reshape(B, L, h * w)
        if normalize:
            lo, hi = bm.amin(dim=-1, keepdim=True), bm.amax(dim=-1, keepdim=True)
            bm = (bm - lo) / (hi - lo + 1e-10)
        bm = _float(bm.reshape(B, L, h, w).detach())
        maps = torch.cumsum(bm, dim=1) if maps is None else _float(maps.reshape(B, L, h, w).detach())
        det = lambda t: None if t is None else t.detach()  # noqa: E731
        if head_maps is not None:
            head_maps = _float(head_maps.detach().reshape(B, L, -1, h, w))
        return cls(block_maps=bm, maps=maps, targets=targets.detach(), logits=det(logits), features=det(features),
                   weights=det(weights), method=method, grid=(h, w), head_maps=head_maps, topk=topk)


def _float(t: Tensor) -> Tensor:
    return t if t.dtype == torch.float64 else t.float()
