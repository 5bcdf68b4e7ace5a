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

__all__ = ["MODELS", "CLASSES", "load_model", "load_bank", "weights_dir", "model_info"]

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


def load_model(name: str = "shapes_vit", headless: bool = False, device="cpu") -> nn.Module:
    """Build a shipped model and load its weights (eval mode).

    Args:
        name: "shapes_vit" or "shapes_vit_ssl" (the latter is ``headless=True``).
        headless: build with ``num_classes=0`` and load every weight but the head.
        device: where to put it.
    """
    from safetensors.torch import load_file
    from timm.models.vision_transformer import VisionTransformer
    if name.endswith("_ssl"):
        headless = True
    meta = model_info(name)
    cfg = json.loads(meta["config"])
    if headless:
        cfg["num_classes"] = 0
    model = VisionTransformer(**cfg)
    state = load_file(_file(name))
    if headless:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    model.load_state_dict(state)
    mean, std = tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"]))
    model.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {}, input_size=(3, cfg["img_size"], cfg["img_size"]),
                                mean=mean, std=std, interpolation="bilinear", num_classes=cfg["num_classes"])
    model.daam_classes = tuple(json.loads(meta["classes"]))
    model.daam_name = "shapes_vit_ssl" if headless else "shapes_vit"
    return model.eval().to(device)


def load_bank(name: str = "shapes_vit") -> MemoryBank:
    """The memory bank of training features shipped with ``name``."""
    base = name[:-4] if name.endswith("_ssl") else name
    if base not in MODELS:
        raise ValueError(f"unknown shipped model {name!r}; known: {', '.join(MODELS)}")
    return MemoryBank.load(os.path.join(weights_dir(), f"{base}_bank.pt"))
