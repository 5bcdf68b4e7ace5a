"""What every sub-command shares, defined once: the exit codes and the error that maps to exit 2,
``--quiet``, ``--overwrite``, ``--mode``, the model spec (``--model``, ``--checkpoint``, ...,
``--bank``: resolved by :meth:`daam_fast.distributed.ModelSpec.load`), the DAAM options
(``--method`` with the explainer's method table as choices, ``--activation-checkpointing``,
``--compile``, ``--backend``) and their checks, and :func:`add_options`: flags and defaults
derived from an options dataclass.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Tuple

import torch

# Exit codes of every sub-command (docs/cli.md).
EXIT_OK = 0          # all done
EXIT_FAILED = 1      # some inputs failed; the others are done, each failure printed with its reason
EXIT_USAGE = 2       # bad usage: nothing written


class UsageError(Exception):
    """Bad usage: :func:`daam_fast.cli.main` prints ``daam-fast COMMAND: <message>`` and returns 2."""


def default_of(config, name: str) -> Any:
    """The default of field ``name`` of a dataclass (class or instance)."""
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
    function's signature, e.g. :meth:`daam_fast.bank.MemoryBank.from_features`)."""
    import inspect
    value = inspect.signature(fn).parameters[name].default
    if value is inspect.Parameter.empty:
        raise ValueError(f"{getattr(fn, '__qualname__', fn)}({name}) has no default")
    return value


# ------------------------------------------------------------------------------------ flags from a dataclass
def _flag_type(hint) -> Tuple[Any, Optional[Tuple[Any, ...]]]:
    """(argparse type, choices from a Literal) of a field's type hint; Optional[X] is X."""
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _flag_type(args[0])
    if origin is typing.Literal:
        values = typing.get_args(hint)
        return type(values[0]), values
    if hint in (int, float, str):
        return hint, None
    return None, None


def add_options(p, config_cls, *, only: Optional[Iterable[str]] = None, exclude: Iterable[str] = ()) -> list:
    """Add one argparse flag per field of the dataclass ``config_cls`` to ``p`` (a parser or an
    argument group), with the field's default: the CLI's defaults are the dataclass's, written
    once (as ``transformers.HfArgumentParser`` does).

    The flag is ``--field-name`` and its destination the field's name, so
    :func:`from_args` gives the dataclass back. The field's ``metadata`` says the rest:

    - ``help``: the help text (``%(default)s`` names the default), or a function of no arguments
      returning it;
    - ``flag``: another flag name (e.g. ``"--activation-checkpointing"``);
    - ``choices``: the accepted values, or a function of no arguments returning them (for tables
      that are imported late); a ``Literal[...]`` type gives them too;
    - ``type``: the parser of one value (default: from the type hint, ``Optional[X]`` -> ``X``);
    - ``metavar``, ``required``;
    - ``cli``: False for a field that is no flag.

    A ``bool`` field is a switch: ``--name`` sets True when the default is False, ``--no-name``
    sets False when it is True.

    Args:
        p: the parser or argument group to add to.
        config_cls: the options dataclass.
        only: add only these fields (default: all but ``exclude`` and those with ``cli=False``).
        exclude: fields to leave out.

    Returns:
        The argparse actions added, each marked with ``options_field = (config_cls, name)``.
    """
    hints = typing.get_type_hints(config_cls)
    wanted = None if only is None else set(only)
    skip = set(exclude)
    actions = []
    for f in dataclasses.fields(config_cls):
        md = f.metadata
        if not md.get("cli", True) or f.name in skip or (wanted is not None and f.name not in wanted):
            continue
        default = default_of(config_cls, f.name)
        help = md.get("help")
        kw: dict = {"dest": f.name, "help": help() if callable(help) else help}
        flag = md.get("flag") or "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            if default and not md.get("flag"):
                flag = "--no-" + f.name.replace("_", "-")
            kw.update(action="store_false" if default else "store_true", default=default)
        else:
            typ, choices = _flag_type(hints[f.name])
            if "choices" in md:
                choices = md["choices"]() if callable(md["choices"]) else md["choices"]
            kw.update(default=default, type=md.get("type", typ))
            if choices is not None:
                kw["choices"] = tuple(choices)
            if md.get("flag") and isinstance(flag, str):        # argparse would name the value after the field
                kw["metavar"] = flag.lstrip("-").replace("-", "_").upper()
            for key in ("metavar", "required"):
                if key in md:
                    kw[key] = md[key]
            if kw["type"] is None:
                raise TypeError(f"{config_cls.__name__}.{f.name}: no flag type for {hints[f.name]!r}; "
                                "give metadata type= or cli=False")
        action = p.add_argument(*((flag,) if isinstance(flag, str) else tuple(flag)), **kw)
        action.options_field = (config_cls, f.name)
        actions.append(action)
    return actions


def to_argv(config) -> list:
    """The flags that give the dataclass instance ``config`` back through :func:`add_options`, one
    per field (None left out; a switch only where it differs from its default): the command line
    that reproduces a run."""
    argv = []
    for f in dataclasses.fields(config):
        value, md = getattr(config, f.name), f.metadata
        if not md.get("cli", True) or value is None:
            continue
        flag = md.get("flag") or "--" + f.name.replace("_", "-")
        flag = flag if isinstance(flag, str) else flag[0]
        if isinstance(value, bool):
            default = default_of(config, f.name)
            if value != default:
                argv.append(flag if md.get("flag") or not default else "--no-" + f.name.replace("_", "-"))
            continue
        if isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, float):
            value = f"{value:g}"
        argv += [flag, str(value)]
    return argv


def from_args(config_cls, args, **overrides):
    """An instance of the dataclass ``config_cls`` from the parsed arguments of the same names."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}
    values.update(overrides)
    return config_cls(**values)


def refuse_existing(path: str, overwrite: bool) -> None:
    """Raises :class:`UsageError` if the output file ``path`` exists and ``--overwrite`` was not given."""
    if os.path.exists(path) and not overwrite:
        raise UsageError(f"{path} exists: pass --overwrite to replace it")


def finish(failed, summary: str) -> int:
    """Print ``failed: PATH: REASON`` to stderr for each (path, reason) of ``failed``, then the
    run's one-line ``summary``; returns the exit code (:data:`EXIT_FAILED` if any failed)."""
    for p, r in failed:
        print(f"failed: {p}: {r}", file=sys.stderr)
    print(summary)
    return EXIT_FAILED if failed else EXIT_OK


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


def _method_help() -> str:
    from ..methods import METHODS
    summaries = "; ".join(f"{name} = {m.summary}" for name, m in METHODS.items()).replace("%", "%%")
    return f"DAAM method (default %(default)s): {summaries} (docs/method.md)"


def _backward_methods() -> Tuple[str, ...]:
    """The methods with a backward through the blocks (activation checkpointing applies to them)."""
    from ..methods import METHODS
    return tuple(name for name, m in METHODS.items() if not m.forward_only)


def backends() -> Tuple[str, ...]:
    from .._config import BACKENDS
    return tuple(BACKENDS)


def _checkpointing_help() -> str:
    return (f"{' / '.join(_backward_methods())}: recompute each block in the backward "
            "(less memory, about +0.7x time)")


@dataclass
class DAAMOptions:
    """The DAAM options of the command line (``--method``, ``--activation-checkpointing``,
    ``--compile``, ``--backend``) and their one check.

    Attributes:
        method: a method of the explainer's table ("grad", "direct", ...).
        activation_checkpointing: recompute each block in the backward ("grad" only).
        compile: ``torch.compile`` the blocks.
        backend: backend of the fused ops (None: ``DAAM_FAST_BACKEND`` or auto).
    """

    method: str = field(default="grad", metadata={"choices": daam_methods, "help": _method_help})
    activation_checkpointing: bool = field(default=False, metadata={"help": _checkpointing_help})
    compile: bool = field(default=False, metadata={"help": "torch.compile the blocks (first batch compiles; for GPUs)"})
    backend: Optional[str] = field(default=None, metadata={
        "choices": backends, "help": "backend of the fused ops (default: DAAM_FAST_BACKEND, else auto)"})

    def check(self) -> None:
        """Raises :class:`UsageError` naming the flags that do not go together."""
        if self.method not in daam_methods():
            raise UsageError(f"--method {self.method}: expected one of {', '.join(daam_methods())}")
        if self.activation_checkpointing and self.method not in _backward_methods():
            raise UsageError(f"--activation-checkpointing applies to --method {' / '.join(_backward_methods())} "
                             f"(--method {self.method} runs no backward through the blocks)")
        if self.backend is not None and self.backend not in backends():
            raise UsageError(f"--backend {self.backend}: expected one of {', '.join(backends())}")

    def keywords(self) -> dict:
        """The :class:`daam_fast.DAAM` keywords besides ``method`` (only those set)."""
        out = {}
        if self.activation_checkpointing:
            out["activation_checkpointing"] = True
        if self.compile:
            out["compile"] = True
        if self.backend not in (None, "auto"):
            out["backend"] = self.backend
        return out


def add_daam_args(p: argparse.ArgumentParser, method: bool = True) -> None:
    """The DAAM options, as one argument group (``method=False``: no ``--method``, for a command
    that chooses its methods otherwise, as ``eval --methods``)."""
    add_options(p.add_argument_group("DAAM"), DAAMOptions, exclude=() if method else ("method",))


def daam_args(args) -> DAAMOptions:
    """The checked :class:`DAAMOptions` of parsed arguments (raises :class:`UsageError`)."""
    opts = from_args(DAAMOptions, args)
    opts.check()
    return opts


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
        add_daam_args(p, method)


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
