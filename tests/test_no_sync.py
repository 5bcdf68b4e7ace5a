"""No host synchronisation inside a DAAM call between the forward and the map results
the value checks (NaN / inf images, a model output that overflowed, class
indices on the device) are read once, at the end of the call.

On the CPU: every Python-level read of a tensor's value (``item``, ``bool``, ``int``,
``float``, ``tolist``, ``nonzero``, ``__index__``) is counted while the method runs (the
forward, the backward and the maps); there must be none. On a GPU: the call runs under
``torch.cuda.set_sync_debug_mode("error")`` up to its final check."""
import pytest
import torch

from daam_fast import DAAM, BankTarget, MemoryBank, TopK
from daam_fast._checks import Checks
from daam_fast.methods import METHODS
from models import tiny_vit

READS = ["item", "__bool__", "__int__", "__float__", "tolist", "nonzero", "__index__"]


@pytest.fixture
def reads(monkeypatch):
    """{"run": reads while a method runs, "end": reads in the final check}."""
    counts = {"run": [], "end": []}
    where = [None]
    for name in READS:
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            if where[0] is not None:
                counts[where[0]].append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)

    def window(key, fn):
        def wrapped(*a, **k):
            where[0] = key
            try:
                return fn(*a, **k)
            finally:
                where[0] = None
        return wrapped
    for m in METHODS.values():
        monkeypatch.setattr(m, "run", window("run", m.run))
    monkeypatch.setattr(Checks, "raise_first", window("end", Checks.raise_first))
    return counts


CALLS = {
    "class": (dict(), dict(target=torch.tensor([1, 3]))),
    "top2": (dict(), dict(target=TopK(2))),
    "bank": (dict(num_classes=0),
             dict(target=BankTarget(MemoryBank.from_features(torch.randn(20, 48), torch.arange(20) % 3)))),
    "label-free": (dict(num_classes=0), dict()),
    "avgpool": (dict(global_pool="avg"), dict()),
    "registers": (dict(reg_tokens=2), dict()),
}


@pytest.mark.parametrize("case", list(CALLS), ids=list(CALLS))
@pytest.mark.parametrize("method", list(METHODS))
def test_no_value_read_between_forward_and_maps(case, method, reads):
    model_kw, call_kw = CALLS[case]
    if method == "row" and model_kw.get("global_pool") == "avg":
        pytest.skip("row refuses mean-pooled models (docs/method.md §8)")
    DAAM(tiny_vit(**model_kw), method=method, heads=True)(torch.randn(2, 3, 32, 32), **call_kw)
    assert reads["run"] == [], f"host reads while the method ran: {reads['run']}"
    assert len(reads["end"]) == 1                      # the call's one read, at its end (and the spy works)


def test_errors_after_the_maps_keep_their_messages():
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"images contain NaN or inf \(images \[1\]\)"):
        DAAM(model)(x)
    x = torch.randn(2, 3, 32, 32)
    x[0].view(-1)[::7] = 1e30                          # finite pixels that overflow the network
    with pytest.raises(ValueError, match=r"the model's output is not finite \(NaN or inf\) for image\(s\) \[0\]"):
        DAAM(model, method="direct")(x)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (sync debug mode)")
@pytest.mark.parametrize("method", list(METHODS))
def test_cuda_call_without_sync(method, monkeypatch):
    """Each call runs under set_sync_debug_mode("error") from its start to its final check (which
    turns the mode off: its one read); the mode is set again before the next call."""
    model = tiny_vit().cuda()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    target = torch.tensor([1, 2], device="cuda")          # made before the mode: a blocking copy
    DAAM(model, method=method, heads=True)(x, target=target)   # warm-up (lazy init may synchronise)
    DAAM(model, method=method)(x, target=3)
    torch.cuda.synchronize()
    end = Checks.raise_first
    ends = []

    def checked(self):
        torch.cuda.set_sync_debug_mode(0)                 # the one allowed read, at the end
        ends.append(method)
        return end(self)
    monkeypatch.setattr(Checks, "raise_first", checked)
    try:
        torch.cuda.set_sync_debug_mode("error")
        res = DAAM(model, method=method, heads=True)(x, target=target)
        torch.cuda.set_sync_debug_mode("error")
        DAAM(model, method=method)(x, target=3)           # a host target: copied before the forward, not after
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(ends) == 2                                 # both calls reached their final check under the mode
    assert res.maps.is_cuda and torch.isfinite(res.maps).all()
