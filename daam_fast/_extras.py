"""Optional dependencies: import one, or fail with one line that names the extra to install.

The core (torch, timm, numpy, pillow, safetensors, tqdm) explains tensors and picture files,
renders and writes the explorer page; each other feature needs an extra of the package:

==========  ===========================================  ======================================
extra       installs                                     for
==========  ===========================================  ======================================
video       av                                           videos, the MP4 output of explain   
ray         ray[data]                                    ``daam-fast batch``, ``explain_dataset``
hf          transformers                                 Hugging Face ViT / DeiT models
eval        matplotlib                                   ``daam-fast eval`` report, demo figure
monitor     tensorboard, lightning                       ``daam_fast.monitor``
export      onnx, onnxscript, onnxruntime                ``daam_fast.export``
heif        pillow-heif                                  HEIC / HEIF pictures
triton      triton                                       the Triton kernels
==========  ===========================================  ======================================
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtra", "EXTRAS", "require", "install_hint", "missing_extra"]

# top-level module -> the extra that installs it
EXTRAS = {
    "av": "video",
    "ray": "ray",
    "pyarrow": "ray",
    "transformers": "hf",
    "matplotlib": "eval",
    "tensorboard": "monitor",
    "lightning": "monitor",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
    "pillow_heif": "heif",
    "triton": "triton",
}


_PIP_NAMES = {"pillow_heif": "pillow-heif"}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message (one line) names the extra."""


def install_hint(extra: str) -> str:
    """``pip install "daam-fast[extra]"``."""
    return f'pip install "daam-fast[{extra}]"'


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (dotted names allowed) for ``feature``, or raise :class:`MissingExtra`.

    Args:
        module: the module to import, e.g. ``"av"`` or ``"matplotlib.pyplot"``.
        feature: what needs it, e.g. ``"video files"``.

    Returns:
        The imported module.

    Raises:
        MissingExtra: ``"<package> is needed for <feature>: pip install "daam-fast[<extra>]""``.

    Example:
        >>> av = require("av", "video files")
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        missing = (getattr(e, "name", None) or top).split(".")[0]
        extra = EXTRAS.get(missing, EXTRAS.get(top))
        hint = install_hint(extra) if extra else f"pip install {missing}"
        package = _PIP_NAMES.get(missing, missing)
        raise MissingExtra(f"{package} is needed for {feature}: {hint}", name=missing) from None


def missing_extra(error: ImportError, feature: str):
    """The one-line message for ``error`` when it is a missing optional dependency, else None.

    A :class:`MissingExtra` keeps its own message; an ImportError of a module of :data:`EXTRAS`
    (``No module named 'av'``) becomes ``"av is needed for <feature>: pip install "daam-fast[video]""``.
    """
    if isinstance(error, MissingExtra):
        return str(error)
    name = (getattr(error, "name", None) or "").split(".")[0]
    if name not in EXTRAS:
        return None
    return f"{_PIP_NAMES.get(name, name)} is needed for {feature}: {install_hint(EXTRAS[name])}"
