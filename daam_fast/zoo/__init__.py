"""Models shipped with daam_fast (no network needed).

``shapes_vit``: a small timm VisionTransformer (64 x 64 input, patch 8, 6 blocks) trained on
the synthetic shapes of :mod:`daam_fast.zoo.shapes` by :mod:`daam_fast.zoo.train_shapes`.
``load_model("shapes_vit", headless=True)`` is the same network without its head (the
self-supervised path), and ``load_bank("shapes_vit")`` its memory bank of training features.

Example:
    >>> from daam_fast.zoo import load_model, load_bank
    >>> model = load_model()                  # eval mode, classes in model.daam_classes
"""
from __future__ import annotations

import json
import os
from typing import Dict

from torch import nn

from ..bank import MemoryBank
from .shapes import CLASSES

__all__ = ["MODELS", "CLASSES", "load_model", "load_bank", "weights_dir", "model_info", "from_metadata",
           "without_head"]

MODELS: Dict[str, str] = {
    "shapes_vit": "ViT (64x64, patch 8, dim 96, depth 6, 3 heads) trained on daam_fast.zoo.shapes; 6 classes",
    "shapes_vit_ssl": "the same network without its head, for the self-supervised path (bank: shapes_vit)",
}


def weights_dir() -> str:
    return os.path.join(os.path.dirname(__file__), "weights")


def _file(name: str) -> str:
    base = name[:-4] if name.endswith("_ssl") else name
    if name not in MODELS:
        raise ValueError(f"unknown shipped model {name!r}; known: {', '.join(MODELS)}")
    path = os.path.join(weights_dir(), f"{base}.safetensors")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: reinstall daam_fast or run python -m daam_fast.zoo.train_shapes")
    return path


def model_info(name: str = "shapes_vit") -> dict:
    """The metadata stored with the weights: config, classes, accuracy, training run."""
    from safetensors import safe_open
    with safe_open(_file(name), framework="pt") as f:
        return dict(f.metadata())


def from_metadata(meta: dict, headless: bool = False) -> nn.Module:
    """An untrained timm ``VisionTransformer`` from a zoo-format file's metadata.

    Args:
        meta: the safetensors metadata: "config" (the model's keyword arguments, JSON), and
            where present "classes", "mean" and "std" (JSON).
        headless: build with ``num_classes=0`` (load the weights without ``head.*``, see
            :func:`without_head`).

    Returns:
        the model, with ``pretrained_cfg`` holding the stored input size / mean / std (so
        :func:`daam_fast.preprocess.input_spec` prepares pictures as in training) and
        ``daam_classes`` the class names.
    """
    from timm.models.vision_transformer import VisionTransformer
    cfg = json.loads(meta["config"])
    if headless:
        cfg["num_classes"] = 0
    model = VisionTransformer(**cfg)
    if "mean" in meta and "std" in meta:
        size = cfg.get("img_size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        model.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {}, input_size=(3, *size),
                                    mean=tuple(json.loads(meta["mean"])), std=tuple(json.loads(meta["std"])),
                                    interpolation=meta.get("interpolation", "bilinear"),
                                    num_classes=cfg.get("num_classes", 1000))
    if "classes" in meta:
        model.daam_classes = tuple(json.loads(meta["classes"]))
    return model


def without_head(state: dict) -> dict:
    """``state`` without the classifier's ``head.*`` tensors (for a headless model)."""
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def load_model(name: str = "shapes_vit", headless: bool = False, device="cpu") -> nn.Module:
    """Build a shipped model and load its weights (eval mode).

    Args:
        name: "shapes_vit" or "shapes_vit_ssl" (the latter is ``headless=True``).
        headless: build with ``num_classes=0`` and load every weight but the head.
        device: where to put it.
    """
    from safetensors.torch import load_file
    if name.endswith("_ssl"):
        headless = True
    model = from_metadata(model_info(name), headless)
    state = load_file(_file(name))
    model.load_state_dict(without_head(state) if headless else state)
    model.daam_name = "shapes_vit_ssl" if headless else "shapes_vit"
    return model.eval().to(device)


def load_bank(name: str = "shapes_vit") -> MemoryBank:
    """The memory bank of training features shipped with ``name``."""
    base = name[:-4] if name.endswith("_ssl") else name
    if base not in MODELS:
        raise ValueError(f"unknown shipped model {name!r}; known: {', '.join(MODELS)}")
    return MemoryBank.load(os.path.join(weights_dir(), f"{base}_bank.pt"))
