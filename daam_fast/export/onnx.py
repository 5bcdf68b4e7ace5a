"""DAAM as an ONNX graph, and explaining with it in ONNX Runtime.

Needs the ``export`` extra: ``pip install daam-fast[export]`` (onnx, onnxscript, onnxruntime).
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .._extras import require
from ..result import DAAMResult
from ..targets import BankTarget
from .module import ExportError, SaliencyModule, _where, export_program, saliency_module

__all__ = ["to_onnx", "OnnxExplainer", "read_metadata", "DEFAULT_OPSET"]

DEFAULT_OPSET = 18
_PREFIX = "daam_fast."                     # metadata keys: daam_fast.method, daam_fast.model, ...


def _need(module: str):
    return require(module, "daam_fast.export's ONNX files")


def to_onnx(model: Union[nn.Module, SaliencyModule], path: Union[str, os.PathLike], method: str = "row",
            opset: int = DEFAULT_OPSET, *, target=None, block_maps: bool = False, targets: bool = True,
            input_size: Optional[Tuple[int, int]] = None, model_name: str = "",
            metadata: Optional[Dict[str, str]] = None, optimize: bool = True) -> str:
    """Write DAAM of ``model`` as an ONNX file that ONNX Runtime runs without PyTorch.

    The graph has the input ``pixels`` (B, C, H, W) float32 (and ``target`` (B,) int64 with
    ``target=ClassInput()``), the outputs ``logits`` (B, K) or ``features`` (B, C), ``maps``
    (B, L, h, w), with ``block_maps`` ``block_maps`` (B, L, h, w), with ``targets`` ``targets``
    (B,) int64 (the class explained, -1 where none); the batch is dynamic.
    Its metadata holds ``daam_fast.method``, ``daam_fast.model``, ``daam_fast.grid`` ("h,w"),
    ``daam_fast.input_size`` ("H,W"), ``daam_fast.target`` and ``daam_fast.output``
    (:func:`read_metadata`). The same model exported twice gives the same bytes.

    Args:
        model: a model :func:`saliency_module` takes, or a :class:`SaliencyModule`.
        path: the .onnx file to write.
        method, target, block_maps, targets, input_size, model_name: as :func:`saliency_module`
            (``targets`` on by default: :class:`OnnxExplainer` reports them).
        opset: the ONNX opset (default 18).
        metadata: more metadata entries (str -> str), e.g. the checkpoint, mean and std.
        optimize: run the exporter's ONNX optimiser (default): constant folding and fused
            patterns leave about a quarter of the nodes, and ONNX Runtime then runs the graph
            faster where each op's fixed cost counts (small models, small batches). Off, the
            conversion takes about half the time.

    Returns:
        The path written.

    Raises:
        ExportError: an op could not be converted (the message names its block where known).
    """
    onnx = _need("onnx")
    _need("onnxscript")
    sal = model if isinstance(model, SaliencyModule) else saliency_module(
        model, method, target, block_maps=block_maps, targets=targets, input_size=input_size,
        model_name=model_name)
    program = export_program(sal)          # built once per module (kept on it)
    inputs = ["pixels", "target"] if sal.takes_target else ["pixels"]
    outputs = ([sal.output_name, "maps"] + (["block_maps"] if sal.block_maps else [])
               + (["targets"] if sal.targets else []))
    try:
        onx = torch.onnx.export(program, (), None, dynamo=True, opset_version=int(opset), input_names=inputs,
                                output_names=outputs, external_data=False, verbose=False,
                                optimize=bool(optimize))
    except Exception as e:
        raise ExportError(f"method={sal.method!r}: the ONNX conversion failed{_where(sal.graph, e)}: "
                          f"{type(e).__name__}: {e}") from e
    proto = onx.model_proto
    _strip_trace_metadata(proto.graph)
    for fn in proto.functions:
        _strip_trace_metadata(fn)
    info = {"method": sal.method, "model": sal.model_name, "grid": f"{sal.grid[0]},{sal.grid[1]}",
            "input_size": f"{sal.input_size[0]},{sal.input_size[1]}", "target": sal.target,
            "output": sal.output_name, "in_chans": str(sal.in_chans)}
    info.update({k: str(v) for k, v in (metadata or {}).items()})
    del proto.metadata_props[:]
    for k in sorted(info):
        entry = proto.metadata_props.add()
        entry.key, entry.value = _PREFIX + k, info[k]
    proto.producer_name = "daam_fast"
    path = os.fspath(path)
    onnx.save_model(proto, path)
    return path


def _strip_trace_metadata(graph) -> None:
    """Drop the exporter's per-node records of where each op was traced (Python stack traces,
    which name local files and a per-process counter): the file is then the same for the same
    model, wherever and however often it is exported."""
    for node in graph.node:
        del node.metadata_props[:]
        for attr in node.attribute:
            if attr.HasField("g"):
                _strip_trace_metadata(attr.g)
            for g in attr.graphs:
                _strip_trace_metadata(g)
    for v in list(getattr(graph, "value_info", [])) + list(getattr(graph, "input", [])) + list(getattr(graph, "output", [])):
        del v.metadata_props[:]
    if hasattr(graph, "metadata_props"):
        del graph.metadata_props[:]


def read_metadata(path: Union[str, os.PathLike]) -> Dict[str, str]:
    """The ``daam_fast.*`` metadata of an ONNX file written by :func:`to_onnx`, without the prefix."""
    onnx = _need("onnx")
    proto = onnx.load(os.fspath(path), load_external_data=False)
    return {p.key[len(_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(_PREFIX)}


class OnnxExplainer:
    """Explains with an ONNX file written by :func:`to_onnx`, in ONNX Runtime (no PyTorch model).

    Called as :class:`daam_fast.DAAM` is, it returns a :class:`daam_fast.DAAMResult`, so code
    that explains with DAAM can check the deployed graph.

    Args:
        path: the .onnx file.
        providers: ONNX Runtime execution providers (default: the CPU's).
        threads: intra-op threads of the session (None: ONNX Runtime's default, or the
            count ``session_options`` sets; when both are given, it is set on them).
        session_options: an ``onnxruntime.SessionOptions`` for the session (None: ONNX
            Runtime's defaults), e.g. with a shorter spin-wait of its threads on a machine
            whose cores are shared (docs/export.md, Speed).

    Attributes:
        method, model_name, grid, input_size, target: from the file's metadata.

    Example:
        >>> ex = OnnxExplainer("model.onnx")
        >>> res = ex(x)                                    # x (B, C, H, W) tensor or array
        >>> res.maps.shape                                 # (B, L, h, w)
    """

    def __init__(self, path: Union[str, os.PathLike], providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: Optional[int] = None, session_options=None):
        ort = _need("onnxruntime")
        self.path = os.fspath(path)
        opts = session_options if session_options is not None else ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(self.path, sess_options=opts, providers=list(providers))
        meta = self.session.get_modelmeta().custom_metadata_map
        info = {k[len(_PREFIX):]: v for k, v in meta.items() if k.startswith(_PREFIX)}
        if "method" not in info:
            raise ValueError(f"{self.path}: not a DAAM graph written by daam_fast.export.to_onnx (no daam_fast "
                             "metadata)")
        self.metadata = info
        self.method = info["method"]
        self.model_name = info.get("model", "")
        self.target = info.get("target", "prediction")
        self.grid = tuple(int(v) for v in info["grid"].split(","))
        self.input_size = tuple(int(v) for v in info["input_size"].split(","))
        self.in_chans = int(info.get("in_chans", 3))
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]

    @property
    def takes_target(self) -> bool:
        return "target" in self._inputs

    def run(self, pixels: np.ndarray, target: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        """The graph's outputs by name for ``pixels`` (B, C, H, W) float32 (and ``target`` (B,) int64)."""
        feed = {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)}
        if self.takes_target:
            if target is None:
                raise ValueError(f"{self.path} takes the class as its second input: pass target=")
            feed["target"] = np.ascontiguousarray(target, dtype=np.int64)
        return dict(zip(self._outputs, self.session.run(self._outputs, feed)))

    def __call__(self, images, target=None) -> DAAMResult:
        """Explain a batch.

        Args:
            images: (B, C, H, W) float pixels at ``input_size``, normalised as the model
                expects (tensor or array).
            target: None (what the graph holds), or (B,) / int classes for a graph that takes
                the class as its input. A graph holding its target accepts None or that same
                target (its class; a ``BankTarget`` for a graph holding a bank).

        Returns:
            DAAMResult: maps, block_maps (B, L, h, w), logits or features, targets (the class
            explained; -1 for a model without a head), method and grid.
        """
        x = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_chans, *self.input_size):
            raise ValueError(f"images must be (B, {self.in_chans}, {self.input_size[0]}, {self.input_size[1]}) "
                             f"for {self.path}, got {tuple(x.shape)}")
        B = x.shape[0]
        t = None
        if isinstance(target, BankTarget):
            if self.target != "bank":
                raise ValueError(f"{self.path} holds the target {self.target!r}, not a memory bank")
        elif target is not None and not (isinstance(target, int) and self.target == f"class:{target}"):
            if not self.takes_target:
                raise ValueError(f"{self.path} holds its target ({self.target}); it takes no other target= (export "
                                 "with target=ClassInput() for a class given per call)")
            t = np.asarray(target.cpu() if isinstance(target, Tensor) else target, dtype=np.int64).reshape(-1)
            t = np.ascontiguousarray(np.broadcast_to(t, (B,))) if t.size == 1 else t
        outs = self.run(x, t)
        maps = torch.from_numpy(outs["maps"])
        if "block_maps" in outs:
            bm = torch.from_numpy(outs["block_maps"])
        else:
            bm = torch.cat([maps[:, :1], maps[:, 1:] - maps[:, :-1]], dim=1)
        logits = torch.from_numpy(outs["logits"]) if "logits" in outs else None
        features = torch.from_numpy(outs["features"]) if "features" in outs else None
        if "targets" in outs:
            targets = torch.from_numpy(outs["targets"])
        elif logits is None:
            targets = torch.full((B,), -1, dtype=torch.long)
        elif t is not None:
            targets = torch.from_numpy(np.array(t))
        elif self.target.startswith("class:"):
            targets = torch.full((B,), int(self.target.split(":")[1]), dtype=torch.long)
        else:
            targets = logits.argmax(dim=1)
        return DAAMResult(block_maps=bm, maps=maps, targets=targets, logits=logits, features=features,
                          method=self.method, grid=self.grid)

    def __enter__(self) -> "OnnxExplainer":
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def __repr__(self) -> str:
        return (f"OnnxExplainer({self.path!r}, method={self.method!r}, model={self.model_name!r}, "
                f"grid={self.grid}, target={self.target!r})")

