"""The explain session (daam_fast._session): frozen() and patched() restore exactly what they
changed, on exit and on error, and refuse to patch a model twice."""
import pytest
import torch

from daam_fast._session import frozen, patched
from daam_fast.adapters import get_adapter
from models import tiny_vit


def _flags(model):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])


def _forwards(model):
    return {n: m.__dict__.get("forward") for n, m in model.named_modules()}


def test_frozen_restores_mixed_flags_exactly():
    model = tiny_vit().train()
    model.blocks[1].eval()                                   # mixed modes and flags come back as they were
    model.blocks[0].attn.qkv.weight.requires_grad_(False)
    before = _flags(model)
    with frozen(model):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
    assert _flags(model) == before
    with pytest.raises(KeyError, match="boom"):
        with frozen(model):
            raise KeyError("boom")
    assert _flags(model) == before


def _core_calls(log):
    def make_core(b):
        def core(x, rows, ctx):
            log.append(b)
            return torch.zeros_like(x)
        return core
    return make_core


def test_patched_replaces_and_restores_every_attention():
    model = tiny_vit()
    adapter = get_adapter(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y0 = model(x)
    log = []
    p = patched(adapter, _core_calls(log))
    with p, torch.no_grad():
        model(x)
    assert log == [0, 1, 2]
    assert all(v is None for v in _forwards(model).values())
    with p, torch.no_grad():                                 # re-entered after exit: the same replacements
        model(x)
    assert log == [0, 1, 2] * 2
    with torch.no_grad():
        assert torch.equal(model(x), y0)


def test_patched_inactive_runs_the_modules_own_forward():
    model = tiny_vit()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y0 = model(x)
    log = []
    with patched(get_adapter(model), _core_calls(log), active=lambda: False), torch.no_grad():
        assert torch.equal(model(x), y0)
    assert log == []


def test_patched_restores_on_error_and_refuses_twice():
    model = tiny_vit()
    adapter = get_adapter(model)
    before = _forwards(model)
    extra = [(model.blocks[2], "forward", lambda *a, **k: None)]
    with pytest.raises(KeyError, match="boom"):
        with patched(adapter, _core_calls([]), extra=extra):
            assert "forward" in model.blocks[2].__dict__
            raise KeyError("boom")
    assert _forwards(model) == before
    with patched(adapter, _core_calls([])) as p:
        with pytest.raises(RuntimeError, match=r"blocks\[0\]\.attn\.forward is already patched"):
            with patched(adapter, _core_calls([])):
                pass
        assert all("forward" in a.__dict__ for a in adapter.attns)    # the first patch set is untouched
        with pytest.raises(RuntimeError, match="already applied"):
            p.__enter__()
    assert _forwards(model) == before
    # a refusal half-way (the block patch after the attention ones) leaves nothing behind
    model.blocks[2].forward = lambda *a, **k: None
    with pytest.raises(RuntimeError, match=r"Block\.forward is already patched"):
        with patched(adapter, _core_calls([]), extra=extra):
            pass
    del model.blocks[2].forward
    assert _forwards(model) == before
