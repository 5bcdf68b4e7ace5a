"""DAAM as a module with no autograd at run time, and as a ``torch.export`` program.

:func:`saliency_module` traces the computation of :mod:`daam_fast.export._compute` (the row
method's forward, its backward on the rows the head reads, and the maps) with
``make_fx(tracing_mode="symbolic")`` over a function of (weights, pixels) that runs the model
through ``torch.func.functional_call``: the backward becomes ordinary aten ops in the graph,
and the batch stays a symbol. :func:`export_program` hands that graph to
``torch.export.export`` with a dynamic batch.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.fx.experimental.proxy_tensor import make_fx

from .._session import frozen, patched
from ..adapters import get_adapter
from ._compute import METHODS, Computation
from ._simplify import fold_products
from ._targets import target_spec

__all__ = ["SaliencyModule", "ExportError", "saliency_module", "export_program", "model_input_size"]


class ExportError(RuntimeError):
    """The model cannot be exported: the message names the method, the block and the op."""


def model_input_size(model: nn.Module) -> Tuple[int, int]:
    """(H, W) the model's input size: timm ``patch_embed.img_size``, Hugging Face
    ``config.image_size``, torchvision ``image_size``."""
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None) if pe is not None else None
    if size is None:
        cfg = getattr(model, "config", None)
        size = getattr(cfg, "image_size", None) if cfg is not None else getattr(model, "image_size", None)
    if size is None:
        raise ValueError(f"cannot read the input size of {type(model).__name__}: pass input_size=(H, W)")
    if isinstance(size, int):
        size = (size, size)
    return int(size[0]), int(size[1])


class SaliencyModule(nn.Module):
    """The traced DAAM computation: ``forward(x[, target]) -> (output, maps[, block_maps][, targets])``.

    Built by :func:`saliency_module`. The graph is a plain ``torch.fx.GraphModule`` of aten
    ops, the backward included; the model's weights are this module's buffers (shared with
    the model, not copied).

    Attributes:
        method: "row" or "grad".  grid: (h, w).  input_size: (H, W).  output_name: "logits"
        or "features".  takes_target: the graph's second input is the class (B,) int64.
        target: the target it holds, in words ("prediction", "class:3", "input", "bank" ...).
        block_maps: whether the per-block maps are an output (after maps).
        targets: whether the classes explained are the last output.
    """

    def __init__(self, graph: nn.Module, weights: Dict[str, Tensor], *, method: str, grid: Tuple[int, int],
                 input_size: Tuple[int, int], in_chans: int, output_name: str, target: str, takes_target: bool,
                 block_maps: bool, targets: bool, model_name: str):
        super().__init__()
        self.graph = graph
        self._names = list(weights)
        for i, t in enumerate(weights.values()):
            self.register_buffer(f"w{i}", t, persistent=True)
        self.method, self.grid, self.input_size, self.in_chans = method, grid, input_size, in_chans
        self.output_name, self.target, self.takes_target = output_name, target, takes_target
        self.block_maps, self.targets, self.model_name = block_maps, targets, model_name
        self._program = None                    # (max_batch, ExportedProgram), by export_program

    def weights(self) -> Dict[str, Tensor]:
        """The weights by the model's own names (``model.`` + the parameter or buffer name)."""
        return {n: getattr(self, f"w{i}") for i, n in enumerate(self._names)}

    def forward(self, x: Tensor, target: Optional[Tensor] = None):
        """Explain a batch.

        Args:
            x: (B, C, H, W) float32 pixels, normalised as the model expects, at ``input_size``.
            target: (B,) int64 classes, only for a module built with ``target=ClassInput()``.

        Returns:
            (output, maps), then block_maps and targets where the module was built with them:
            output (B, K) logits or (B, C) features float32; maps (B, L, h, w) the accumulated
            maps D_b; block_maps (B, L, h, w) the per-block maps L_b; targets (B,) int64 the
            class explained (the memory bank's vote with a bank, -1 where there is none).
        """
        args = (x, target) if self.takes_target else (x,)
        out, maps, bm, cls = self.graph(self.weights(), *args)
        return (out, maps) + ((bm,) if self.block_maps else ()) + ((cls,) if self.targets else ())

    def example_inputs(self, batch: int = 2) -> Tuple[Tensor, ...]:
        """Random inputs of the module's shapes: pixels and, where it takes one, the target."""
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, self.in_chans, *self.input_size, generator=g)
        return (x, torch.zeros(batch, dtype=torch.long)) if self.takes_target else (x,)


def _block_of(node_meta: dict) -> Optional[str]:
    """'blocks[3]' / the module path of an fx node from its recorded module stack, or None."""
    stack = node_meta.get("nn_module_stack") or {}
    for path, _ in reversed(list(stack.values())):
        path = str(path)
        for key in ("blocks.", "layer.", "layers."):
            i = path.find(key)
            if i >= 0:
                idx = path[i + len(key):].split(".")[0]
                if idx.isdigit():
                    return f"blocks[{idx}]"
    return None


def saliency_module(model: nn.Module, method: str = "row", target=None, *, block_maps: bool = False,
                    targets: bool = False, input_size: Optional[Tuple[int, int]] = None, model_name: str = "") -> SaliencyModule:
    """DAAM of ``model`` as a module that needs no autograd when it runs.

    The row method's backward (or, with ``method="grad"``, the whole backward to the input of
    the blocks) is traced into the graph: the module runs under ``torch.no_grad()``, in
    ``torch.export``, and in ONNX Runtime (:func:`daam_fast.export.to_onnx`). Its maps and
    outputs equal eager ``DAAM(model, method=method)`` (float32, rel. err. < 1e-5).

    Args:
        model: a model :class:`daam_fast.DAAM` explains (timm, Hugging Face, torchvision, DINO),
            in eval mode; its weights are shared, not copied.
        method: "row" (a forward and a backward on the rows the head reads, about one
            inference; not for mean-pooled models) or "grad" (the whole backward).
        target: None (each image's prediction; a model without a head: the label-free
            weights), an int (that class), :class:`ClassInput` (the class is the graph's
            second input (B,)), ``BankTarget(bank)`` (the bank's features become constants of
            the graph), or a callable ``f(output) -> (B,)`` (``Similarity(query)``) that traces.
        block_maps: also return the per-block maps (B, L, h, w).
        targets: also return the classes explained (B,) int64 (last).
        input_size: (H, W) of the pixels (default: the model's own, :func:`model_input_size`).
        model_name: a name kept with the module (written into the ONNX metadata).

    Returns:
        SaliencyModule: ``forward(x[, target]) -> (output, maps[, block_maps][, targets])``.

    Raises:
        ValueError: the model or the target cannot be explained this way (the message names
            the reason and the method to use).
        ExportError: an op of the model could not be traced (the message names its block).

    Example:
        >>> sal = saliency_module(model)                  # method="row", the prediction
        >>> logits, maps = sal(x)                         # maps (B, L, h, w), maps[:, -1] final
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: an exported graph holds one of {', '.join(METHODS)}")
    adapter = get_adapter(model)
    if method == "row" and (adapter.pool != "token" or adapter.head_rows is None):
        raise ValueError("method='row' cannot export this model: the row method follows the rows the head "
                         "reads, and a mean-pooled model (global_pool='avg') reads every patch row; "
                         "use method='grad'")
    spec = target_spec(target, adapter)
    size = tuple(input_size) if input_size is not None else model_input_size(model)
    x = torch.randn(2, adapter.in_chans, *size, generator=torch.Generator().manual_seed(0))
    h, w = adapter.grid(x)
    L = adapter.depth
    comp = Computation(model, adapter, method, spec)
    weights = {n: t.detach() for n, t in list(comp.named_parameters()) + list(comp.named_buffers())}

    def run(tensors: Dict[str, Tensor], pixels: Tensor, *cls: Tensor):
        out, bm, explained = torch.func.functional_call(comp, tensors, (pixels, *cls), strict=True)
        bm = bm.reshape(bm.shape[0], L, h, w)
        return out, torch.cumsum(bm, dim=1), bm, explained

    example = (x, torch.zeros(2, dtype=torch.long)) if spec.takes_input else (x,)
    with frozen(model), patched(adapter, comp.core):
        try:
            # tensors the target closes over (a callable's query) are constants of the graph
            graph = make_fx(run, tracing_mode="symbolic", record_module_stack=True,
                            _allow_non_fake_inputs=True)(weights, *example)
        except (ValueError, TypeError, ExportError):
            raise
        except Exception as e:
            where = comp.failed_in
            at = f"in blocks[{where}]" if where is not None else "outside the blocks (embedding, head or target)"
            raise ExportError(f"method={method!r}: tracing {type(model).__name__} failed {at}: "
                              f"{type(e).__name__}: {e}") from e
    out_name = "logits" if adapter.num_classes > 0 else "features"
    return SaliencyModule(fold_products(graph), weights, method=method, grid=(h, w), input_size=size, in_chans=adapter.in_chans,
                          output_name=out_name, target=spec.describe(), takes_target=spec.takes_input,
                          block_maps=block_maps, targets=targets, model_name=model_name or type(model).__name__)


def export_program(model: nn.Module, method: str = "row", target=None, *, block_maps: bool = False,
                   targets: bool = False, input_size: Optional[Tuple[int, int]] = None, model_name: str = "",
                   max_batch: int = 1 << 16) -> "torch.export.ExportedProgram":
    """DAAM of ``model`` as a ``torch.export.ExportedProgram`` with a dynamic batch.

    Args:
        model, method, target, block_maps, targets, input_size, model_name: as :func:`saliency_module`
            (``model`` may also be a :class:`SaliencyModule` already built).
        max_batch: the largest batch the program accepts.

    Returns:
        ExportedProgram: ``program.module()(x[, target])`` returns what the module does.

    Raises:
        ExportError: ``torch.export`` could not take the traced graph (the message names the
            block of the op where the module stack says).
    """
    sal = model if isinstance(model, SaliencyModule) else saliency_module(
        model, method, target, block_maps=block_maps, targets=targets, input_size=input_size,
        model_name=model_name)
    if sal._program is not None and sal._program[0] == max_batch:
        return sal._program[1]
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    args = sal.example_inputs(2)
    shapes = ({0: batch}, {0: batch}) if sal.takes_target else ({0: batch},)
    try:
        program = torch.export.export(sal, args, dynamic_shapes=shapes, strict=False)
    except Exception as e:
        raise ExportError(f"method={sal.method!r}: torch.export failed{_where(sal.graph, e)}: "
                          f"{type(e).__name__}: {e}") from e
    sal._program = (max_batch, program)          # the module's graph is fixed: export it once
    return program


def _where(graph: nn.Module, err: Exception) -> str:
    """' in blocks[i] (node)' for the first graph node the error names, else ''."""
    text = str(err)
    for node in getattr(graph, "graph", torch.fx.Graph()).nodes:
        if node.op == "call_function" and node.name in text:
            block = _block_of(node.meta)
            return f" in {block} ({node.name})" if block else f" at {node.name}"
    return ""
