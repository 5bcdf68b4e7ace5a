"""DAAM as a graph: the explanation as a model output, for ``torch.export``, ONNX and ONNX Runtime.

- :func:`saliency_module`: an ``nn.Module`` whose ``forward(x)`` returns ``(output, maps)``
  with no autograd at run time (the row method's backward traced into the graph).
- :func:`export_program`: the same as a ``torch.export.ExportedProgram`` with a dynamic batch.
- :func:`to_onnx`: an ONNX file (inputs ``pixels`` [, ``target``], outputs ``logits`` or
  ``features``, ``maps`` [, ``block_maps``], a dynamic batch; method, model and grid in its
  metadata), and :class:`OnnxExplainer`, which explains with it in ONNX Runtime and returns a
  :class:`daam_fast.DAAMResult`. These two need the ``export`` extra (onnx, onnxscript,
  onnxruntime).

Example:
    >>> from daam_fast.export import saliency_module, to_onnx, OnnxExplainer
    >>> logits, maps = saliency_module(model)(x)
    >>> to_onnx(model, "model.onnx")
    >>> res = OnnxExplainer("model.onnx")(x)          # res.maps as DAAM(model, method="row")(x)
"""
from __future__ import annotations

from ._targets import ClassInput
from .module import ExportError, SaliencyModule, export_program, saliency_module
from .onnx import OnnxExplainer, to_onnx

__all__ = ["saliency_module", "export_program", "to_onnx", "OnnxExplainer", "SaliencyModule", "ClassInput",
           "ExportError"]
