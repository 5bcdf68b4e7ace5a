"""DAAM options that change how the maps are computed, not what: activation_checkpointing=True
and compile=True (torch.compile of the blocks), and the exact row reductions that are always on
(switched off here through their private switches). Against the default path and the
reference, on odd shapes and every adapter family."""
import pytest
import torch

from daam_fast import DAAM, daam_reference
from models import MODEL_CASES, tiny_vit
from test_adapters import CASES as ADAPTER_CASES
from test_adapters import _make, _x
from tolerances import assert_close

CKPT_CASES = ["tiny-N17-P1", "patch8-N785-B3", "distilled-P2", "registers-P5", "qknorm-layerscale",
              "nonsquare-3x5", "dynamic-4x6", "avgpool"]


def _inputs(case, seed=1):
    factory, shape, batch, _ = MODEL_CASES[case]
    return factory(), torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", CKPT_CASES, ids=CKPT_CASES)
def test_activation_checkpointing_equals_default_and_reference(case):
    model, x = _inputs(case)
    with DAAM(model) as daam:
        plain = daam(x)
    with DAAM(model, activation_checkpointing=True) as daam:
        ck = daam(x)
        again = daam(x)                                  # the patched forwards are reused
    ref = daam_reference(model, x, dtype=torch.float64)
    assert (ref.block_maps > 0).float().mean() > 0.05
    assert torch.equal(ck.targets, plain.targets)
    assert_close(ck.block_maps, plain.block_maps, max_rel=1e-6, name=f"{case} checkpoint vs default")
    assert_close(ck.block_maps, ref.block_maps, name=f"{case} checkpoint vs reference")
    assert torch.equal(again.block_maps, ck.block_maps)


@pytest.mark.parametrize("case", list(ADAPTER_CASES), ids=list(ADAPTER_CASES))
def test_activation_checkpointing_every_family(case):
    model, _family = _make(case)
    x = _x(batch=3)
    with DAAM(model) as daam:
        plain = daam(x)
    with _without_reductions(DAAM(model, activation_checkpointing=True), last=True) as daam:
        ck = daam(x)
    assert_close(ck.block_maps, plain.block_maps, max_rel=1e-6, name=f"{case} checkpoint")


def _without_reductions(daam: DAAM, first: bool = False, last: bool = False) -> DAAM:
    """``daam`` with the exact first / last block row reductions switched off (before its first call)."""
    if first:
        daam._reduce_first = False
    if last:
        daam._reduce_last = False
    return daam


def _saved_bytes(model, x, first_block_reduction: bool = True, **kw) -> int:
    """Bytes of the distinct storages autograd keeps for the backward during one DAAM call,
    outside checkpointed regions (their own saved tensors are dropped and recomputed)."""
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with _without_reductions(DAAM(model, **kw), first=not first_block_reduction) as daam:
            daam(x)
    return sum(seen.values())


def test_activation_checkpointing_keeps_far_less_for_the_backward():
    model = tiny_vit(img_size=224, patch_size=8, embed_dim=64, depth=6, num_heads=2)     # 785 tokens
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    full = _saved_bytes(model, x)
    ck = _saved_bytes(model, x, activation_checkpointing=True)
    assert full > 0 and ck < 0.3 * full, (ck, full)


def test_activation_checkpointing_restores_and_refuses_direct():
    model, x = _inputs("tiny-N17-P1")
    with pytest.raises(ValueError, match="activation_checkpointing=True applies to method='grad'"):
        DAAM(model, method="direct", activation_checkpointing=True)
    with torch.no_grad():
        before = model(x)
    with DAAM(model, activation_checkpointing=True) as daam:
        daam(x)
        with torch.no_grad():                            # the model as usual inside the context
            inside = model(x)
    assert all("forward" not in m.__dict__ for m in model.modules())
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, inside) and torch.equal(before, after)


def test_activation_checkpointing_without_recompute_still_gives_the_maps(monkeypatch):
    """The maps come back as gradients of per-block sinks (no hook that could fire before a
    block was recomputed): if checkpointing kept everything instead of recomputing, the maps
    are the same."""
    model, x = _inputs("tiny-N17-P1")
    daam = DAAM(model, activation_checkpointing=True)
    real = torch.utils.checkpoint.checkpoint
    ref = daam(x)

    def no_recompute(f, *args, **kw):                   # keeps everything: nothing is recomputed
        kw.pop("use_reentrant", None)
        kw.pop("context_fn", None)
        return f(*args, **kw)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", no_recompute)
    assert_close(daam(x).block_maps, ref.block_maps, max_rel=1e-6)
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", real)


@pytest.mark.parametrize("method", ["grad", "direct"])
def test_compile_equals_eager(method):
    model, x = _inputs("registers-P5")
    with DAAM(model, method=method) as daam:
        eager = daam(x)
    from torch._dynamo.utils import counters
    graphs = counters["stats"]["unique_graphs"]
    d = DAAM(model, method=method, compile=True)
    with d:
        first = d(x)
    assert counters["stats"]["unique_graphs"] > graphs        # really compiled, not silently eager
    assert all("forward" not in m.__dict__ for m in model.modules())
    with d:                                              # re-entry reuses the compiled code
        x2 = torch.randn_like(x)
        second = d(x2)
    with DAAM(model, method=method) as daam:
        eager2 = daam(x2)
    assert torch.equal(first.targets, eager.targets)
    assert_close(first.block_maps, eager.block_maps, name=f"compile {method}")
    assert_close(first.logits, eager.logits, name="compile logits")
    assert_close(second.block_maps, eager2.block_maps, name=f"compile {method}, new inputs")


@pytest.mark.parametrize("case", ["registers-P5", "avgpool"])
@pytest.mark.parametrize("method", ["grad", "direct"])
def test_compile_without_graph_breaks(case, method):
    """The capturing attention compiles inside each block ("grad": the maps come back as
    gradients of per-block sinks, no hook; "direct": a plain slot store, replayed by Dynamo):
    no graph break, and later calls with new inputs reuse the graphs (no recompile)."""
    from torch._dynamo.utils import counters
    model, x = _inputs(case)
    torch._dynamo.reset()                               # compile afresh: no graphs cached by other tests
    counters.clear()
    with DAAM(model, method=method, compile=True, heads=True) as daam:
        first = daam(x)
        graphs = counters["stats"]["unique_graphs"]
        second = daam(torch.randn_like(x))
    assert graphs > 0 and sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == graphs                 # no recompile on the second call
    with DAAM(model, method=method, heads=True) as daam:
        eager = daam(x)
    assert_close(first.block_maps, eager.block_maps, name=f"{case} compiled")
    assert_close(first.head_maps, eager.head_maps, name=f"{case} compiled heads")
    assert second.block_maps.shape == first.block_maps.shape


@pytest.mark.parametrize("case", ["tiny-N17-P1", "distilled-P2", "registers-P5", "qknorm-layerscale",
                                  "nonsquare-3x5"])
def test_reduce_first_block_is_exact_and_keeps_less(case):
    """Block 1 only needs dY/dT_1[0]: its residual + MLP path keeps a graph on row 0 only."""
    model, x = _inputs(case)
    on, off = DAAM(model), _without_reductions(DAAM(model), first=True)
    assert on._reduce_first and not off._reduce_first
    a, b = on(x), off(x)
    assert_close(a.block_maps, b.block_maps, name=f"{case} first-block reduction")
    assert_close(a.logits, b.logits, name="logits")
    assert _saved_bytes(model, x) < _saved_bytes(model, x, first_block_reduction=False)


def test_reduce_first_block_only_where_it_applies():
    assert not DAAM(MODEL_CASES["avgpool"][0]())._reduce_first           # G_1 needs every patch row
    assert not DAAM(MODEL_CASES["tiny-N17-P1"][0](), method="direct")._reduce_first
    assert not DAAM(tiny_vit(depth=1))._reduce_first                      # block 1 is the last block


def test_compile_every_block_past_the_recompile_limit():
    """The middle blocks share one forward's code and each gets its own graph (the capture is
    per block): with more such blocks than Dynamo's recompile limit, every block must still
    run compiled (the limit is raised for the call), none falls back to eager."""
    import torch._dynamo.config as dynamo_config
    from torch._dynamo.utils import counters
    model, x = tiny_vit(depth=6), torch.randn(2, 3, 32, 32)
    torch._dynamo.reset()
    counters.clear()
    with dynamo_config.patch(recompile_limit=2):                  # 4 middle blocks > 2
        with DAAM(model, compile=True) as daam:
            res = daam(x)
        assert dynamo_config.recompile_limit == 2                 # the process-wide setting is untouched
    assert counters["stats"]["unique_graphs"] >= 6, dict(counters["stats"])   # one graph per block
    assert_close(res.block_maps, DAAM(model)(x).block_maps, name="compiled, past the limit")
