"""The context manager: restores everything, re-raises, leaves the model usable, memory flat."""

import pytest
import torch

from daam_fast import DAAM
from daam_fast._session import current
from models import tiny_vit


def _state(model):
    return [(name, dict(m.__dict__).get("forward")) for name, m in model.named_modules()]


def test_restores_on_exit_and_model_output_unchanged():
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    before_state = _state(model)
    with torch.no_grad():
        before = model(x)
    with DAAM(model) as daam:
        with torch.no_grad():
            inside = model(x)          # outside a DAAM call the model computes exactly timm's output
        daam(x)
        with torch.no_grad():
            inside2 = model(x)
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(inside, before, atol=1e-6) and torch.allclose(inside2, before, atol=1e-6)
    assert torch.equal(after, before)
    assert _state(model) == before_state


def test_exception_inside_is_reraised_and_restored():
    model = tiny_vit()
    before_state = _state(model)
    with pytest.raises(KeyError, match="boom"):
        with DAAM(model):
            raise KeyError("boom")
    assert _state(model) == before_state
    with pytest.raises(IndexError):           # pytorch-grad-cam swallows IndexError in __exit__: we don't
        with DAAM(model):
            [][1]
    assert _state(model) == before_state


def test_exception_in_call_leaves_no_state():
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    with DAAM(model) as daam:
        with pytest.raises(ValueError, match="target 99 out of range"):
            daam(x, target=99)
        res = daam(x)                       # still works after an error
        assert res.maps.shape == (2, 3, 4, 4)
        assert current() is None


def test_two_explainers_on_one_model_share_it():
    """Two explainers (two methods) held on one model at once: each call gets its own maps, and
    the model is restored when the last one exits."""
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    want_grad, want_row = DAAM(model)(x).block_maps, DAAM(model, method="row")(x).block_maps
    with DAAM(model) as grad:
        with DAAM(model, method="row") as row:
            assert torch.equal(row(x).block_maps, want_row)
            assert torch.equal(grad(x).block_maps, want_grad)
        assert "forward" in model.blocks[0].attn.__dict__                 # still held by the first
        assert torch.equal(grad(x).block_maps, want_grad)
    assert _state(model) == _state(tiny_vit())


def test_foreign_patch_refused():
    model = tiny_vit()
    model.blocks[1].attn.forward = lambda *a, **k: None                   # another hook library's
    with pytest.raises(RuntimeError, match=r"blocks\[1\]\.attn\.forward is already patched"):
        with DAAM(model):
            pass
    del model.blocks[1].attn.forward
    assert _state(model) == _state(tiny_vit())


def test_reentrant_same_explainer():
    model = tiny_vit()
    daam = DAAM(model)
    with daam:
        with daam:
            daam(torch.randn(1, 3, 32, 32))
        assert "forward" in model.blocks[0].attn.__dict__
    assert "forward" not in model.blocks[0].attn.__dict__


from memory import live_tensors as _live_tensors  # noqa: E402
from memory import rss_mb as _rss_mb  # noqa: E402


def test_memory_flat_over_100_uses():
    model = tiny_vit(img_size=64, embed_dim=96)
    x = torch.randn(4, 3, 64, 64)
    for _ in range(5):                      # warm-up: allocator pools, lazy inits
        with DAAM(model) as daam:
            daam(x)
    tensors0, rss0 = _live_tensors(), _rss_mb()
    for _ in range(100):
        with DAAM(model) as daam:
            res = daam(x)
        del res, daam
    tensors1, rss1 = _live_tensors(), _rss_mb()
    assert tensors1 <= tensors0, f"live tensors grew {tensors0} -> {tensors1}"
    assert rss1 - rss0 < 30, f"RSS grew by {rss1 - rss0:.1f} MB over 100 uses"
