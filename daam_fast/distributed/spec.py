"""What every actor loads: :class:`ModelSpec` (picklable model + bank description), and the DAAM
options a run takes (derived from :class:`daam_fast.DAAM`'s signature, checked here only)."""
from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Optional, Union

__all__ = ["ModelSpec", "daam_option_names", "check_run_options"]

# DAAM keywords that change the maps (a resumed run would mix maps of two settings): refused as
# daam_options. Every other keyword-only argument of DAAM changes the cost only, and is accepted.
MAP_OPTIONS = frozenset({"normalize", "heads"})
# options that need a backward through the blocks: refused for a forward-only method
BACKWARD_OPTIONS = frozenset({"activation_checkpointing"})


def daam_option_names() -> frozenset:
    """The ``daam_options`` keys a run accepts: :class:`daam_fast.DAAM`'s keyword-only arguments
    less :data:`MAP_OPTIONS` (today activation_checkpointing, compile, backend)."""
    from ..explainer import DAAM
    params = inspect.signature(DAAM.__init__).parameters.values()
    return frozenset(p.name for p in params if p.kind is p.KEYWORD_ONLY) - MAP_OPTIONS


def check_run_options(method: str, daam_options: Optional[dict]) -> dict:
    """The one check of a run's method and DAAM options (before Ray starts); returns a copy.

    Raises:
        ValueError: a method not in the explainer's table, an unknown option, or an option
            that needs a backward (``activation_checkpointing``) with a forward-only method.
    """
    from ..methods import METHODS
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {', '.join(map(repr, METHODS))}")
    opts = dict(daam_options or {})
    known = daam_option_names()
    unknown = set(opts) - known
    if unknown:
        raise ValueError(f"daam_options: unknown {sorted(unknown)}; known: {sorted(known)}")
    backward = sorted(k for k in BACKWARD_OPTIONS if opts.get(k))
    if backward and METHODS[method].forward_only:
        grads = " / ".join(f"method={n!r}" for n, m in METHODS.items() if not m.forward_only)
        raise ValueError(f"daam_options {', '.join(f'{k}=True' for k in backward)} applies to {grads} "
                         f"(method={method!r} runs no backward through the blocks)")
    return opts


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A picklable description of the model and its memory bank, resolved inside each actor; also
    the one place where ``--model`` / ``--checkpoint`` / ``--bank`` of the command line are resolved.

    Args:
        name: a shipped model ("shapes_vit", "shapes_vit_ssl"; None = "shapes_vit"), a timm name,
            or "dino" / "dinov2" with ``checkpoint`` the original .pth.
        checkpoint: weights file for ``name`` (or a zoo-format .safetensors), see
            :func:`daam_fast.models.load_model_spec`.
        pretrained: timm's pretrained weights (downloaded by every actor: prefer ``checkpoint``).
        random_weights: a timm model with random weights (testing only).
        headless: drop the classifier head (self-supervised path).
        bank: memory bank file (.pt) for a headless model; the shipped ssl model uses its own.

    Example:
        >>> ModelSpec("deit_small_patch16_224", checkpoint="/shared/deit_small.pth")
    """

    name: Optional[str] = None
    checkpoint: Optional[str] = None
    pretrained: bool = False
    random_weights: bool = False
    headless: bool = False
    bank: Optional[str] = None

    def __post_init__(self):
        if self.name is None and self.checkpoint is None:       # one spelling of the default model
            object.__setattr__(self, "name", "shapes_vit")
        if self.name == "shapes_vit_ssl":
            object.__setattr__(self, "headless", True)

    @classmethod
    def coerce(cls, spec: Union["ModelSpec", str, dict, None]) -> "ModelSpec":
        """A ModelSpec from a spec, a model name / checkpoint path (str) or a dict of fields."""
        if isinstance(spec, ModelSpec):
            return spec
        if spec is None:
            return cls()
        if isinstance(spec, str):
            if os.path.isfile(spec) or spec.endswith((".safetensors", ".pt", ".pth")):
                return cls(checkpoint=spec)
            return cls(name=spec)
        if isinstance(spec, dict):
            unknown = set(spec) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"model_spec: unknown fields {sorted(unknown)}")
            return cls(**spec)
        raise ValueError(f"model_spec must be a ModelSpec, a str or a dict, not {type(spec).__name__}")

    def load(self, device: str = "cpu"):
        """(model, bank or None): the model in eval mode on ``device``."""
        from ..models import load_model_spec
        model = load_model_spec(self.name, self.checkpoint, self.pretrained, self.random_weights, device,
                                headless=self.headless)
        bank = None
        if self.bank:
            from ..bank import MemoryBank
            bank = MemoryBank.load(self.bank)
        elif getattr(model, "daam_name", None) == "shapes_vit_ssl":
            from .. import zoo
            bank = zoo.load_bank("shapes_vit")
        return model, bank
