"""How every explainer (DAAM, the reference, the baselines) holds a model, safely shared by threads.

- :func:`frozen`: eval mode and no parameter gradients while at least one explanation of the
  model runs (reference-counted: the first call records and changes the flags, the last one
  restores them exactly). The parameters are constants of an explanation: with
  ``requires_grad`` off, autograd saves no layer inputs for weight gradients, and the graph
  starts where the explainer starts it.
- :class:`Patches`: each block's attention forward (through the model's adapter,
  ``adapter.attn_forward(b, core, active)``) and any other (module, attribute, replacement) the
  explainer needs. Installing is reference-counted under a lock: every patch set on one module
  attribute shares one dispatcher, the model is restored exactly (the instance attribute
  removed) when the last patch set is released, also on error. A module attribute set by
  anything else (another hook library) is refused, never patched over.
- The call: :meth:`Patches.active` makes one patch set, with one call's state, the active one
  in the current context (a :mod:`contextvars` variable: this thread, or this asyncio task).
  The dispatcher runs the active patch set's replacement; in a context with none (another
  thread's plain ``model(x)``, another explanation's context) it runs the class's own
  forward, the library's code bit for bit. So explanations and plain inference share one
  model from many threads, each call with its own capture state.

What the threads share while an explanation runs: the modules' ``training`` flags (eval) and
the parameters' ``requires_grad`` (off). A plain inference thread sees eval mode; a thread
that trains the model at the same time would see no gradients (explain and train apart).

Example:
    >>> with frozen(model), patched(adapter, make_core):
    ...     out = adapter.run(images)           # the replacements serve this context only
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from torch import nn

from .adapters import Adapter
from .adapters.base import Core

__all__ = ["Patches", "frozen", "patched", "current", "in_this_call", "resume"]

Replacement = Tuple[nn.Module, str, Callable]

_LOCK = threading.RLock()          # installing / restoring attributes and flags (rare, quick)


class _Call(NamedTuple):
    """What the current context runs: the active patch set's replacements and the call's state."""

    table: Dict[Tuple[int, str], Callable]
    state: Any


_CALL: contextvars.ContextVar[Optional[_Call]] = contextvars.ContextVar("daam_fast_call", default=None)


def current() -> Any:
    """The state of the explanation running in this context (thread / task), or None."""
    call = _CALL.get()
    return None if call is None else call.state


def in_this_call(fn: Callable) -> Callable:
    """``fn`` as a module hook that acts only in the call that registers it.

    A forward hook fires in every thread that runs the module; the returned hook calls ``fn``
    only in the context whose active call was current when it was made, else does nothing.
    """
    owner = _CALL.get()

    def hook(*args, **kwargs):
        if owner is not None and _CALL.get() is owner:
            return fn(*args, **kwargs)
        return None

    return hook


@contextlib.contextmanager
def _entered(call: Optional[_Call]) -> Iterator[None]:
    token = _CALL.set(call)
    try:
        yield
    finally:
        _CALL.reset(token)


def resume() -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of contexts that make this context's call active again (for code that runs
    later, maybe in another thread: activation checkpointing's recompute in the backward)."""
    call = _CALL.get()
    return lambda: _entered(call)


# ---------------------------------------------------------------------------------- frozen
_FROZEN: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter while any ``frozen(model)`` is entered.

    Reference-counted per model: the first entry records every module's ``training`` flag and
    which parameters require grad and changes only those; the last exit restores them
    exactly (also on error; the exception is re-raised). Calls from many threads overlap
    freely.

    Args:
        model: any ``nn.Module``.
    """
    with _LOCK:
        held = _FROZEN.get(model)
        if held is None:
            # only what changes is touched, both ways: a model already in eval mode skips the
            # recursive eval() and ~300 module attribute writes
            modes = [(m, m.training) for m in model.modules()]
            params = [p for p in model.parameters() if p.requires_grad]
            held = _FROZEN[model] = [0, modes, params]
            try:
                if any(mode for _, mode in modes):
                    model.eval()
                for p in params:
                    p.requires_grad_(False)
            except BaseException:
                _thaw(model)
                raise
        held[0] += 1
    try:
        yield model
    finally:
        with _LOCK:
            held[0] -= 1
            if held[0] == 0:
                _thaw(model)


def _thaw(model: nn.Module) -> None:
    _, modes, params = _FROZEN.pop(model)
    for p in params:
        p.requires_grad_(True)
    for m, mode in modes:
        if m.training != mode:
            m.training = mode


# ---------------------------------------------------------------------------------- patches
class _Installed:
    """One module attribute served by the dispatcher, and how many patch sets use it."""

    def __init__(self, mod: nn.Module, name: str):
        self.refs = 0
        original = getattr(type(mod), name)
        key = (id(mod), name)

        def dispatch(*args, **kwargs):
            call = _CALL.get()
            if call is not None:
                f = call.table.get(key)
                if f is not None:
                    return f(*args, **kwargs)
            return original(mod, *args, **kwargs)          # no call here: the class's own code

        dispatch.__wrapped__ = original
        self.dispatch = dispatch


_INSTALLED: Dict[Tuple[int, str], _Installed] = {}


def _always() -> bool:
    return True


class Patches:
    """A patch set: replacements for each block's attention forward (and ``extra`` attributes),
    installed while held, serving only the contexts where it is :meth:`active`.

    The replacements are built once, here (DAAM keeps one per explainer so that compiled code
    is reused). :meth:`acquire` / :meth:`release` (or ``with patches:``) are reference-counted
    and may be called from any thread; the model is restored when the last holder of every
    patch set on it releases.

    Args:
        adapter: the model's adapter (:func:`daam_fast.adapters.get_adapter`).
        make_core: ``make_core(b) -> core(x, rows, ctx)``, block b's computation given its
            attention input (see :class:`daam_fast.adapters.base.Adapter.attn_forward`);
            None patches no attention.
        wrap: applied to each attention replacement (e.g. ``torch.compiler.disable``).
        extra: more (module, attribute, replacement) triples, e.g. block forwards.

    Raises:
        RuntimeError: on :meth:`acquire`, if one of the attributes is set on its module by
            something else (another hook library); nothing is left patched.
    """

    def __init__(self, adapter: Adapter, make_core: Optional[Callable[[int], Core]] = None, *,
                 wrap: Optional[Callable] = None, extra: Sequence[Replacement] = ()):
        self.adapter = adapter
        items: List[Tuple[str, Replacement]] = []
        if make_core is not None:
            for b, attn in enumerate(adapter.attns):
                f = adapter.attn_forward(b, make_core(b), _always)
                items.append((f"blocks[{b}].attn.forward", (attn, "forward", wrap(f) if wrap else f)))
        items += [(f"{type(mod).__name__}.{name}", (mod, name, f)) for mod, name, f in extra]
        self._items = items
        self.table: Dict[Tuple[int, str], Callable] = {(id(mod), name): f for _, (mod, name, f) in items}
        self._refs = 0

    def acquire(self) -> "Patches":
        """Install (first holder) or count one more holder."""
        with _LOCK:
            if self._refs == 0:
                done: List[Tuple[int, str]] = []
                try:
                    for label, (mod, name, _) in self._items:
                        key = (id(mod), name)
                        inst = _INSTALLED.get(key)
                        if inst is None or mod.__dict__.get(name) is not inst.dispatch:
                            if name in mod.__dict__:
                                raise RuntimeError(f"{label} is already patched (another explainer's or hook "
                                                   "library's replacement is set on this model)")
                            inst = _INSTALLED[key] = _Installed(mod, name)
                            setattr(mod, name, inst.dispatch)       # an instance attribute over the class's
                        inst.refs += 1
                        done.append(key)
                except BaseException:
                    self._uninstall(done)
                    raise
            self._refs += 1
        return self

    def release(self) -> None:
        """One holder less; the last one restores every attribute (the class's shows again)."""
        with _LOCK:
            if self._refs == 0:
                raise RuntimeError("this patch set is not held")
            self._refs -= 1
            if self._refs == 0:
                self._uninstall([(id(mod), name) for _, (mod, name, _) in self._items])

    def _uninstall(self, keys: List[Tuple[int, str]]) -> None:
        by_key = {(id(mod), name): (mod, name) for _, (mod, name, _) in self._items}
        for key in reversed(keys):
            inst = _INSTALLED[key]
            inst.refs -= 1
            if inst.refs == 0:
                del _INSTALLED[key]
                mod, name = by_key[key]
                if mod.__dict__.get(name) is inst.dispatch:
                    del mod.__dict__[name]

    def __enter__(self) -> "Patches":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.release()
        return False  # never swallow

    def active(self, state: Any = None) -> contextlib.AbstractContextManager:
        """Context: this patch set, with one call's ``state`` (read back by :func:`current`), is
        the one the dispatchers run in the current context (thread / asyncio task)."""
        return _entered(_Call(self.table, state))


@contextlib.contextmanager
def patched(adapter: Adapter, make_core: Optional[Callable[[int], Core]] = None, *,
            wrap: Optional[Callable] = None, extra: Sequence[Replacement] = ()) -> Iterator[Patches]:
    """Context: a :class:`Patches` held and active in this context for the duration (one call of
    the reference or a baseline). Arguments as :class:`Patches`."""
    with Patches(adapter, make_core, wrap=wrap, extra=extra) as p, p.active():
        yield p
