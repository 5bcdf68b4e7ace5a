"""What every sub-command shares, defined once: the exit codes and the error that maps to exit 2,
``--quiet``, ``--overwrite``, ``--mode``, the model spec (``--model``, ``--checkpoint``, ...,
``--bank``: resolved by :meth:`daam_fast.distributed.ModelSpec.load`), the DAAM options
(``--method`` with the explainer's method table as choices, ``--activation-checkpointing``,
``--compile``, ``--backend``) and their checks, and argparse defaults read from dataclasses.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple

import torch

# Exit codes of every sub-command (docs/cli.md).
EXIT_OK = 0          # all done
EXIT_FAILED = 1      # some inputs failed; the others are done, each failure printed with its reason
EXIT_USAGE = 2       # bad usage: nothing written


class UsageError(Exception):
    """Bad usage: :func:`daam_fast.cli.main` prints ``daam-fast COMMAND: <message>`` and returns 2."""


def default_of(config, name: str) -> Any:
    """The default of field ``name`` of a dataclass (class or instance): argparse defaults come
    from the dataclasses that the library uses, never typed a second time."""
    for f in dataclasses.fields(config):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:       # type: ignore[misc]
                return f.default_factory()                          # type: ignore[misc]
            raise ValueError(f"{type(config).__name__}.{name} has no default")
    raise KeyError(name)


def default_param(fn, name: str) -> Any:
    """The default of parameter ``name`` of the function ``fn`` (for options whose only home is a
    function's signature, e.g. :func:`daam_fast.distributed.explain_dataset`)."""
    import inspect
    value = inspect.signature(fn).parameters[name].default
    if value is inspect.Parameter.empty:
        raise ValueError(f"{getattr(fn, '__qualname__', fn)}({name}) has no default")
    return value


def from_args(config_cls, args, **overrides):
    """An instance of the dataclass ``config_cls`` from the parsed arguments of the same names."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}
    values.update(overrides)
    return config_cls(**values)


# ------------------------------------------------------------------------------------ small flags
def add_quiet(p: argparse.ArgumentParser, help: str = "no progress bar") -> None:
    p.add_argument("--quiet", action="store_true", help=help)


def add_overwrite(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--overwrite", action="store_true", help=help)


def render_modes() -> Tuple[str, ...]:
    from ..render import MODES
    return tuple(MODES)


def add_mode(p: argparse.ArgumentParser, default: str = "nonlinear") -> None:
    """``--mode``: how maps are drawn (the choices of :func:`daam_fast.render`)."""
    p.add_argument("--mode", default=default, choices=render_modes(), help=f"rendering (default {default})")


# ------------------------------------------------------------------------------------ DAAM options
def daam_methods() -> Tuple[str, ...]:
    """The names of the explainer's method table (:data:`daam_fast.methods.METHODS`): the ``--method`` choices."""
    from ..methods import METHODS
    return tuple(METHODS)


def _method_help(default: str) -> str:
    from ..methods import METHODS
    return (f"DAAM method (default {default}): "
            + "; ".join(f"{name} = {m.summary}" for name, m in METHODS.items()) + " (docs/method.md)")


def _backward_methods() -> Tuple[str, ...]:
    """The methods with a backward through the blocks (activation checkpointing applies to them)."""
    from ..methods import METHODS
    return tuple(name for name, m in METHODS.items() if not m.forward_only)


def backends() -> Tuple[str, ...]:
    from .._config import BACKENDS
    return tuple(BACKENDS)


@dataclass
class DAAMOptions:
    """The DAAM options of the command line (``--method``, ``--activation-checkpointing``,
    ``--compile``, ``--backend``) and their one check.

    Attributes:
        method: a method of the explainer's table ("grad", "direct", ...).
        checkpoint: activation checkpointing (``--activation-checkpointing``; "grad" only).
        compile: ``torch.compile`` the blocks.
        backend: backend of the fused ops (None: ``DAAM_FAST_BACKEND`` or auto).
    """

    method: str = "grad"
    checkpoint: bool = False
    compile: bool = False
    backend: Optional[str] = None

    def check(self) -> None:
        """Raises :class:`UsageError` naming the flags that do not go together."""
        if self.method not in daam_methods():
            raise UsageError(f"--method {self.method}: expected one of {', '.join(daam_methods())}")
        if self.checkpoint and self.method not in _backward_methods():
            raise UsageError(f"--activation-checkpointing applies to --method {' / '.join(_backward_methods())} "
                             f"(--method {self.method} runs no backward through the blocks)")
        if self.backend is not None and self.backend not in backends():
            raise UsageError(f"--backend {self.backend}: expected one of {', '.join(backends())}")

    def keywords(self) -> dict:
        """The :class:`daam_fast.DAAM` keywords besides ``method`` (only those set)."""
        out = {}
        if self.checkpoint:
            out["checkpoint"] = True
        if self.compile:
            out["compile"] = True
        if self.backend not in (None, "auto"):
            out["backend"] = self.backend
        return out


def add_daam_args(p: argparse.ArgumentParser, method: Optional[str] = DAAMOptions.method) -> None:
    """The DAAM options, as one argument group (``method=None``: no ``--method``, for a command
    that chooses its methods otherwise, as ``eval --methods``)."""
    g = p.add_argument_group("DAAM")
    if method is not None:
        g.add_argument("--method", default=method, choices=daam_methods(), help=_method_help(method))
    g.add_argument("--activation-checkpointing", action="store_true",
                   help=f"{' / '.join(_backward_methods())}: recompute each block in the backward "
                        "(less memory, about +0.7x time)")
    g.add_argument("--compile", action="store_true", help="torch.compile the blocks (first batch compiles; for GPUs)")
    g.add_argument("--backend", default=DAAMOptions.backend, choices=backends(),
                   help="backend of the fused ops (default: DAAM_FAST_BACKEND, else auto)")


def daam_args(args) -> DAAMOptions:
    """The checked :class:`DAAMOptions` of parsed arguments (raises :class:`UsageError`)."""
    opts = DAAMOptions(method=getattr(args, "method", DAAMOptions.method),
                       checkpoint=bool(getattr(args, "activation_checkpointing", False)),
                       compile=bool(getattr(args, "compile", False)), backend=getattr(args, "backend", None))
    opts.check()
    return opts


def daam_options(args) -> dict:
    """DAAM keyword options (``checkpoint``, ``compile``, ``backend``) from the parsed arguments, checked."""
    return daam_args(args).keywords()


# ------------------------------------------------------------------------------------ model spec
def add_model_args(p: argparse.ArgumentParser, batch_size: int = 16, bank: bool = True, daam: bool = True,
                   method: bool = True) -> None:
    """The model options of every sub-command that runs a model (and, with ``daam``, the DAAM
    options; without ``method``, all but ``--method``)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="shipped model (shapes_vit [default], shapes_vit_ssl), a timm name, "
                   "or dino / dinov2 (with --checkpoint: the original .pth)")
    g.add_argument("--checkpoint", default=None, help="weights (.safetensors/.pt/.pth) for --model, or a zoo file")
    g.add_argument("--pretrained", action="store_true", help="download timm's pretrained weights (needs network)")
    g.add_argument("--random-weights", action="store_true", help="timm model with random weights (testing only)")
    g.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    if bank:
        g.add_argument("--bank", default=None, help="memory bank (.pt) for a model without a head "
                                                    "(default for shapes_vit_ssl: its shipped bank)")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"images per model call (default {batch_size})")
    if daam:
        add_daam_args(p, DAAMOptions.method if method else None)


def model_spec(args, headless: bool = False):
    """The :class:`daam_fast.distributed.ModelSpec` of the parsed model options."""
    from ..distributed.spec import ModelSpec
    return ModelSpec(name=args.model, checkpoint=args.checkpoint, pretrained=args.pretrained,
                     random_weights=args.random_weights, headless=headless, bank=getattr(args, "bank", None))


def load_model(args, headless: bool = False):
    """(model, bank or None) of the parsed model options; a model or bank that cannot be loaded
    raises :class:`UsageError` with the loader's reason."""
    from ..models import ModelLoadError
    try:
        return model_spec(args, headless=headless).load(args.device)
    except (ModelLoadError, ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None


def model_from_args(args):
    """The model of the parsed model options (see :func:`load_model`)."""
    return load_model(args)[0]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch threads inside the block (0: leave as is), restored after."""
    before = torch.get_num_threads()
    try:
        if n:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(before)
