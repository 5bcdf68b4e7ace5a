"""How explainers hold a model (daam_fast._session): frozen() and the patch sets restore exactly
what they changed, on exit and on error, are reference-counted, serve only the context where
a call is active, and refuse to patch over another library's replacement."""
import threading

import pytest
import torch

from daam_fast._session import Patches, current, frozen, patched
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


def test_frozen_is_reference_counted():
    model = tiny_vit().train()
    before = _flags(model)
    outer = frozen(model)
    outer.__enter__()
    with frozen(model):
        assert not any(m.training for m in model.modules())
    assert not any(m.training for m in model.modules())          # still held by the outer one
    outer.__exit__(None, None, None)
    assert _flags(model) == before


def test_patched_replaces_and_restores_every_attention():
    model = tiny_vit()
    adapter = get_adapter(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y0 = model(x)
    log = []
    with patched(adapter, _core_calls(log)), torch.no_grad():
        model(x)
    assert log == [0, 1, 2]
    assert all(v is None for v in _forwards(model).values())
    p = Patches(adapter, _core_calls(log))
    with p, p.active(), torch.no_grad():                     # re-entered after exit: the same replacements
        model(x)
    with p, p.active(), torch.no_grad():
        model(x)
    assert log == [0, 1, 2] * 3
    with torch.no_grad():
        assert torch.equal(model(x), y0)


def test_held_but_not_active_runs_the_modules_own_forward():
    model = tiny_vit()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y0 = model(x)
    log = []
    p = Patches(get_adapter(model), _core_calls(log))
    with p, torch.no_grad():
        assert "forward" in model.blocks[0].attn.__dict__
        assert torch.equal(model(x), y0)                     # held, but no call active in this context
        with p.active("state"):
            assert current() == "state"
            seen = []
            t = threading.Thread(target=lambda: seen.append((current(), model(x))))
            t.start()
            t.join()
            assert seen[0][0] is None and torch.equal(seen[0][1], y0)    # another thread: the model
            assert log == []
            model(x)
            assert log == [0, 1, 2]
        assert current() is None
    assert all(v is None for v in _forwards(model).values())


def test_patch_sets_share_attributes_reference_counted():
    model = tiny_vit()
    adapter = get_adapter(model)
    x = torch.randn(1, 3, 32, 32)
    log_a, log_b = [], []
    a, b = Patches(adapter, _core_calls(log_a)), Patches(adapter, _core_calls(log_b))
    a.acquire()
    b.acquire()
    a.acquire()
    with torch.no_grad(), b.active():
        model(x)
    assert log_a == [] and log_b == [0, 1, 2]
    b.release()
    a.release()
    assert all("forward" in m.__dict__ for m in adapter.attns)       # a is held once more
    with torch.no_grad(), a.active():
        model(x)
    assert log_a == [0, 1, 2]
    a.release()
    assert all(v is None for v in _forwards(model).values())
    with pytest.raises(RuntimeError, match="not held"):
        a.release()


def test_patched_restores_on_error_and_refuses_foreign_patches():
    model = tiny_vit()
    adapter = get_adapter(model)
    before = _forwards(model)
    extra = [(model.blocks[2], "forward", lambda *a, **k: None)]
    with pytest.raises(KeyError, match="boom"):
        with patched(adapter, _core_calls([]), extra=extra):
            assert "forward" in model.blocks[2].__dict__
            raise KeyError("boom")
    assert _forwards(model) == before
    # a refusal half-way (the block patch after the attention ones) leaves nothing behind
    model.blocks[2].forward = lambda *a, **k: None
    with pytest.raises(RuntimeError, match=r"Block\.forward is already patched"):
        with patched(adapter, _core_calls([]), extra=extra):
            pass
    del model.blocks[2].forward
    assert _forwards(model) == before
    # ... also while another patch set holds the attentions: that one is untouched
    with patched(adapter, _core_calls([])):
        held = _forwards(model)
        model.blocks[2].forward = lambda *a, **k: None
        with pytest.raises(RuntimeError, match=r"Block\.forward is already patched"):
            with patched(adapter, _core_calls([]), extra=extra):
                pass
        del model.blocks[2].forward
        assert _forwards(model) == held
    assert _forwards(model) == before
