"""The public API is small, documented, and has one spelling per concept."""
import inspect
import types

import pytest
import torch

import daam_fast
from daam_fast import DAAM, prepare
from daam_fast.preprocess import input_spec
from models import tiny_vit

PUBLIC = ["DAAM", "DAAMResult", "MemoryBank", "TopK", "BankTarget", "Similarity", "prepare", "render", "explore",
          "daam_reference", "__version__"]


def test_all_is_exact_and_public():
    assert sorted(daam_fast.__all__) == sorted(PUBLIC)
    for name in daam_fast.__all__:
        assert hasattr(daam_fast, name)
        assert name == "__version__" or not name.startswith("_"), name
        obj = getattr(daam_fast, name)
        if name != "__version__":
            assert not isinstance(obj, types.ModuleType), name            # names, not modules
            assert obj.__module__.startswith("daam_fast."), name
    assert daam_fast.__version__ == "0.2.0"


def test_public_docstrings_have_shapes():
    for name in daam_fast.__all__:
        if name == "__version__":
            continue
        doc = inspect.getdoc(getattr(daam_fast, name))
        assert doc and len(doc) > 80, name
    for obj in (daam_fast.DAAM.__call__, daam_fast.DAAMResult.from_block_maps, daam_fast.targets):
        doc = inspect.getdoc(obj)
        assert doc and len(doc) > 80, obj
    assert "(B, L, h, w)" in inspect.getdoc(daam_fast.DAAMResult)
    for f in (daam_fast.DAAM, daam_fast.prepare, daam_fast.render, daam_fast.explore, daam_fast.daam_reference):
        assert "Example" in inspect.getdoc(f), f


def test_render_explore_prepare_are_plain_functions():
    for f in (daam_fast.render, daam_fast.explore, daam_fast.prepare, daam_fast.daam_reference):
        assert isinstance(f, types.FunctionType), f


def test_prepare_takes_the_model_or_its_spec():
    model = tiny_vit()
    pics = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    x, rgb = prepare(pics, model)
    assert x.shape == (2, 3, 32, 32) and rgb.shape == (2, 3, 32, 32) and rgb.dtype == torch.uint8
    x2, rgb2 = prepare(pics, input_spec(model))
    assert torch.equal(x, x2) and torch.equal(rgb, rgb2)
    assert DAAM(model)(x).maps.shape == (2, 3, 4, 4)
    with pytest.raises(TypeError, match="model_or_spec must be a model"):
        prepare(pics, (32, 32))


def test_removed_options_name_the_replacement():
    model = tiny_vit()
    with pytest.raises(TypeError, match=r"checkpoint= was removed in daam_fast 0.2.0; use activation_checkpointing=True"):
        DAAM(model, checkpoint=True)
    for name in ("reduce_first_block", "reduce_last_block"):
        with pytest.raises(TypeError, match=f"{name}= was removed in daam_fast 0.2.0; use nothing: .* always on"):
            DAAM(model, **{name: False})
    with pytest.raises(TypeError, match="unexpected keyword argument 'normalise'"):
        DAAM(model, normalise=True)
    params = inspect.signature(DAAM).parameters
    assert list(params)[:2] == ["model", "method"]
    assert [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY] == \
        ["normalize", "activation_checkpointing", "heads", "compile", "backend"]


def test_a_call_patches_by_itself_and_the_context_keeps_the_patches():
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    daam = DAAM(model)
    one = daam(x)                                                    # enters and leaves by itself
    assert all("forward" not in m.__dict__ for m in model.modules())
    with daam:
        patched = [m for m in model.modules() if "forward" in m.__dict__]
        assert patched                                               # patched for the whole block
        a, b = daam(x), daam(x)
        assert [m for m in model.modules() if "forward" in m.__dict__] == patched
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert torch.equal(a.maps, one.maps) and torch.equal(b.maps, one.maps)
