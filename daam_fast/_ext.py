"""The compiled extension ``daam_fast._C``, if it was built (C++ CPU kernels; CUDA when nvcc was found)."""
from __future__ import annotations

import warnings
from types import ModuleType
from typing import Optional

from . import _config

_mod: Optional[ModuleType] = None
_err: str = ""
_loaded = False


def ext() -> Optional[ModuleType]:
    """The extension module, or None (see :func:`ext_error`). Warns once when it is missing."""
    global _mod, _err, _loaded
    if not _loaded:
        _loaded = True
        if _config.no_ext():
            _err = "disabled by DAAM_FAST_NO_EXT=1"
        else:
            try:
                from . import _C  # type: ignore[attr-defined]
                _mod = _C
            except ImportError as e:
                _err = f"daam_fast._C is not built ({e})"
                warnings.warn(f"{_err}: using PyTorch ops (correct, slower on the CPU). "
                              "Reinstall with a C++ compiler and cmake to build it.", RuntimeWarning, stacklevel=2)
    return _mod


def ext_error() -> str:
    ext()
    return _err


def has_cpp() -> bool:
    return ext() is not None


def has_cuda_build() -> bool:
    m = ext()
    return bool(m is not None and m.has_cuda())
