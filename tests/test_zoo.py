"""The shipped model and its data: synthetic shapes, training script, weights, memory bank."""
import json
import os

import pytest
import torch

from daam_fast import zoo
from daam_fast.zoo.shapes import CLASSES, make_shapes
from daam_fast.zoo.train_shapes import EVAL_SEED, normalise


def test_shapes_deterministic_and_seeded():
    a, b, c = make_shapes(16, seed=3), make_shapes(16, seed=3), make_shapes(16, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, c.images)
    assert a.images.dtype == torch.uint8 and a.images.shape == (16, 3, 64, 64) and a.masks.shape == (16, 64, 64)


def test_shapes_ground_truth():
    batch = make_shapes(300, seed=11)
    assert len(CLASSES) >= 6 and set(batch.labels.tolist()) == set(range(len(CLASSES)))
    area = batch.masks.flatten(1).float().mean(1)
    assert (area > 0.02).all() and (area < 0.6).all()
    # the mask covers the labelled object: its pixels share one colour (up to 10 % shading),
    # which differs from the pixels just outside it on average
    for i in range(20):
        px = batch.images[i].float()[:, batch.masks[i]]                 # (3, n)
        spread = (px.max(1).values - px.min(1).values).max().item()
        assert spread <= 0.1 * 255 + 2, f"image {i}: masked pixels are not one object ({spread})"


def test_shapes_bad_args():
    with pytest.raises(ValueError):
        make_shapes(0)


def test_training_script_tiny_budget(tmp_path):
    from daam_fast.zoo.train_shapes import train
    r = train(steps=3, batch=8, lr=1e-3, seed=0, out=str(tmp_path), threads=1, eval_n=20, quiet=True)
    assert 0.0 <= r["accuracy"] <= 1.0
    from safetensors import safe_open
    with safe_open(str(tmp_path / "shapes_vit.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["classes"]) == list(CLASSES) and meta["steps"] == "3"
    assert (tmp_path / "shapes_vit_bank.pt").exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


shipped = pytest.mark.skipif(not os.path.exists(os.path.join(zoo.weights_dir(), "shapes_vit.safetensors")),
                             reason="shipped weights missing (python -m daam_fast.zoo.train_shapes)")


@shipped
def test_shipped_model_accuracy_on_fresh_seed():
    model = zoo.load_model("shapes_vit")
    b = make_shapes(500, seed=EVAL_SEED + 777_777)
    with torch.no_grad():
        acc = (model(normalise(b.images)).argmax(1) == b.labels).float().mean().item()
    assert acc >= 0.95, f"shipped model accuracy {acc:.3f} < 0.95"


@shipped
def test_headless_copy_and_bank():
    full, ssl = zoo.load_model("shapes_vit"), zoo.load_model("shapes_vit_ssl")
    assert ssl.num_classes == 0
    x = normalise(make_shapes(4, seed=5).images)
    with torch.no_grad():
        assert torch.allclose(ssl(x), full.forward_head(full.forward_features(x), pre_logits=True), atol=1e-6)
    bank = zoo.load_bank("shapes_vit")
    assert bank.dim == ssl.num_features and bank.num_classes == len(CLASSES)
    size = os.path.getsize(os.path.join(zoo.weights_dir(), "shapes_vit.safetensors"))
    assert size < 8 * 2**20


def test_unknown_model_named():
    with pytest.raises(ValueError, match="known: shapes_vit"):
        zoo.load_model("nope")


@shipped
def test_zoo_format_checkpoint_keeps_its_input_spec():
    """A zoo-format .safetensors passed as --checkpoint is the shipped model: same outputs, and
    pictures are prepared with its stored mean / std (not ImageNet's)."""
    from daam_fast.models import load_model_spec
    from daam_fast.preprocess import input_spec, prepare
    path = os.path.join(zoo.weights_dir(), "shapes_vit.safetensors")
    for headless in (False, True):
        shipped_model = zoo.load_model("shapes_vit", headless=headless)
        loaded = load_model_spec(checkpoint=path, headless=headless)
        assert input_spec(loaded) == input_spec(shipped_model)
        assert input_spec(loaded).mean == (0.5, 0.5, 0.5) and loaded.daam_classes == tuple(CLASSES)
        b = make_shapes(4, seed=6)
        x, _ = prepare(b.images, input_spec(loaded))
        assert torch.equal(x, normalise(b.images))          # the training normalisation, exactly
        with torch.no_grad():
            assert torch.equal(loaded(x), shipped_model(x))
