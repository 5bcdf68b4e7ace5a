"""Loading the model to explain: shipped zoo models, timm names, checkpoints, and foreign
checkpoint layouts converted to timm beside it (DINO: :mod:`.dino`, DINOv2: :mod:`.dinov2`,
what they share: :mod:`.checkpoint`), as timm keeps ``checkpoint_filter_fn`` beside each model.

Example:
    >>> from daam_fast.models import load_dinov2, load_model_spec
    >>> model = load_dinov2("dinov2_vits14_pretrain.pth", img_size=224)
    >>> model = load_model_spec("vit_small_patch16_224", checkpoint="vit_small.safetensors")
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from torch import nn

from .checkpoint import read_checkpoint, strip_prefixes, unwrap
from .dino import dino_to_timm, load_dino
from .dinov2 import dinov2_to_timm, load_dinov2

__all__ = ["load_model_spec", "class_names", "ModelLoadError", "load_dino", "dino_to_timm", "load_dinov2",
           "dinov2_to_timm"]


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to do."""


def _state_dict_from(path: str) -> tuple[dict, dict]:
    """(state dict, safetensors metadata) of a --checkpoint file; a training checkpoint's model
    entry is unwrapped and ``module.`` / ``model.`` / ``backbone.`` key prefixes stripped."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(path), meta
    obj = read_checkpoint(path)
    if isinstance(obj, dict):
        obj, _ = unwrap(obj, ("state_dict", "model", "module", "teacher", "student"))
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path}: not a state dict")
    return {strip_prefixes(k, ("module.", "model.", "backbone.")): v for k, v in obj.items()}, {}


def load_model_spec(name: Optional[str] = None, checkpoint: Optional[str] = None, pretrained: bool = False,
                    random_weights: bool = False, device: str = "cpu", headless: bool = False) -> nn.Module:
    """The model the user asked for, in eval mode on ``device``.

    Args:
        name: a shipped model ("shapes_vit", "shapes_vit_ssl"; the default), a timm model name,
            or "dino" / "dinov2" with ``checkpoint`` the original .pth of facebookresearch/dino
            or /dinov2 (no head: the self-supervised path; DINOv2 set up for 224 x 224 input).
        checkpoint: a state dict (.safetensors / .pt / .pth) for ``name`` (a timm architecture), or a
            zoo-format .safetensors whose metadata holds its config (then ``name`` may be omitted).
        pretrained: download timm's pretrained weights for ``name`` (needs network).
        random_weights: allow a timm model with random weights (testing only).
        headless: drop the classifier head (self-supervised path).
    """
    from .. import zoo
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda requested but no CUDA device is available")
    if checkpoint is None and (name is None or name in zoo.MODELS):
        return zoo.load_model(name or "shapes_vit", headless=headless, device=device)
    if name in ("dino", "dinov2"):
        if checkpoint is None:
            raise ModelLoadError(f"--model {name} needs --checkpoint PATH (the .pth file published by "
                                 f"facebookresearch/{name})")
        if not os.path.isfile(checkpoint):
            raise ModelLoadError(f"checkpoint {checkpoint}: no such file")
        try:
            model = load_dino(checkpoint) if name == "dino" else load_dinov2(checkpoint, img_size=224)
        except ValueError as e:
            raise ModelLoadError(f"{checkpoint}: {e}") from None
        return model.eval().to(device)
    import timm
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise ModelLoadError(f"checkpoint {checkpoint}: no such file")
        sd, meta = _state_dict_from(checkpoint)
        if "config" in meta:                       # zoo format: config, classes, mean / std stored
            model = zoo.from_metadata(meta, headless)
            if headless:
                sd = zoo.without_head(sd)
        else:
            if name is None:
                raise ModelLoadError(f"{checkpoint} has no model config: also pass --model <timm architecture>")
            head = sd.get("head.weight")
            num_classes = 0 if (headless or head is None) else head.shape[0]
            try:
                model = timm.create_model(name, pretrained=False, num_classes=num_classes)
            except Exception as e:  # noqa: BLE001
                raise ModelLoadError(f"unknown timm model {name!r}: {e}") from None
            if num_classes == 0:
                sd = {k: v for k, v in sd.items() if not k.startswith("head")}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing:
            raise ModelLoadError(f"{checkpoint}: missing weights for {len(missing)} tensors, e.g. {missing[:3]}")
        if unexpected:
            raise ModelLoadError(f"{checkpoint}: unexpected tensors {unexpected[:3]} (wrong --model?)")
        return model.eval().to(device)
    if pretrained:
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0 if headless else None)
        except Exception as e:  # noqa: BLE001 - hub errors come in many types
            raise ModelLoadError(f"could not get pretrained weights for {name!r} ({type(e).__name__}: {e}). "
                                 "Without network, download them elsewhere and pass --checkpoint PATH.") from None
        return model.eval().to(device)
    if random_weights:
        try:
            return timm.create_model(name, pretrained=False, **({"num_classes": 0} if headless else {})).eval().to(device)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"unknown timm model {name!r}: {e}") from None
    raise ModelLoadError(f"{name!r}: pass --pretrained (timm download), --checkpoint PATH, or --random-weights "
                         "(testing only); shipped models: " + ", ".join(zoo.MODELS))


def class_names(model: nn.Module) -> Optional[Sequence[str]]:
    """Human-readable class names where known (shipped models, ImageNet-1k heads)."""
    names = getattr(model, "daam_classes", None)
    if names:
        return list(names)
    k = int(getattr(model, "num_classes", 0) or 0)
    if k == 1000:
        try:
            from timm.data import ImageNetInfo
            info = ImageNetInfo()
            return [info.index_to_description(i) for i in range(1000)]
        except Exception:  # noqa: BLE001
            return None
    return None
