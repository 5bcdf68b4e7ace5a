"""Targets (daam_fast.targets): a callable gives the same maps as the class it picks, through
DAAM (grad and direct), the reference and the baselines; top-k rows equal single-class calls;
a similarity target on a headless model equals the literal reference; bad targets and the
spellings 0.2.0 removed say what to use."""
import pytest
import torch

import daam_fast
from daam_fast import DAAM, BankTarget, MemoryBank, Similarity, TopK, baselines, daam_reference
from models import MODEL_CASES, tiny_vit
from tolerances import assert_close

CASES = ["tiny-N17-P1", "distilled-P2", "nonsquare-3x5"]


def _inputs(case, seed=1, **kw):
    factory, shape, batch, _ = MODEL_CASES[case]
    return factory(), torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def _pick(c):
    """A callable that picks logit c of every image (or c[i] of image i)."""
    if isinstance(c, int):
        return lambda out: out[:, c]
    return lambda out: out.gather(1, c.to(out.device)[:, None])[:, 0]


@pytest.mark.parametrize("case", CASES, ids=CASES)
@pytest.mark.parametrize("method", ["grad", "direct"])
def test_callable_picking_a_logit_equals_the_class_target(case, method):
    model, x = _inputs(case)
    per_image = torch.arange(x.shape[0]) % 3 + 1
    with DAAM(model, method=method) as daam:
        for c in (2, per_image):
            plain = daam(x, target=c)
            res = daam(x, target=_pick(c))
            assert_close(res.block_maps, plain.block_maps, max_rel=1e-6, name=f"{case} {method} {c}")
            if isinstance(c, torch.Tensor):                 # a list of ints is the same as the tensor
                assert torch.equal(daam(x, target=c.tolist()).block_maps, plain.block_maps)
    assert torch.equal(daam(x, target=_pick(2)).targets, torch.full((x.shape[0],), -1))   # a score has no class


@pytest.mark.parametrize("method", ["grad", "direct"])
def test_callable_target_in_the_reference(method):
    model, x = _inputs("distilled-P2")
    a = daam_reference(model, x, target=_pick(3), method=method)
    b = daam_reference(model, x, target=3, method=method)
    assert_close(a.block_maps, b.block_maps, max_rel=1e-6)


@pytest.mark.parametrize("name", baselines.BASELINES)
def test_callable_target_in_the_baselines(name):
    model, x = _inputs("tiny-N17-P1")
    t = torch.tensor([4, 1])
    a = baselines.explain(model, x, name, target=_pick(t))
    b = baselines.explain(model, x, name, target=t)
    assert_close(a.maps, b.maps, max_rel=1e-6, name=name)
    if name in ("grad_rollout", "gradcam"):                 # class-specific: another class changes the map
        c = baselines.explain(model, x, name, target=_pick(torch.tensor([0, 0])))
        assert not torch.allclose(c.maps, b.maps)


HEADLESS = {
    "N17-P1": dict(),
    "nonsquare-3x5-P3": dict(img_size=(48, 80), patch_size=16, reg_tokens=2),
    "avgpool": dict(global_pool="avg", fc_norm=True),
}


@pytest.mark.parametrize("case", list(HEADLESS), ids=list(HEADLESS))
@pytest.mark.parametrize("method", ["grad", "direct"])
def test_similarity_on_a_headless_model_equals_the_reference(case, method):
    kw = HEADLESS[case]
    model = tiny_vit(num_classes=0, **kw)
    H, W = kw.get("img_size", (32, 32))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, H, W, generator=g)
    with torch.no_grad():
        query = model(torch.randn(1, 3, H, W, generator=g))[0]              # another image's feature
    text = torch.randn(48, generator=g)                                      # a "text embedding"
    for tgt in (Similarity(query), lambda f: f @ text.to(f)):
        with DAAM(model, method=method) as daam:
            res = daam(x, target=tgt)
        ref = daam_reference(model, x, target=tgt, dtype=torch.float64, method=method)
        assert (ref.block_maps != 0).float().mean() > 0.05
        assert_close(res.block_maps, ref.block_maps.float(), name=f"{case} {method} {tgt}")
        assert res.features is not None and res.logits is None and (res.targets == -1).all()
    # no ReLU on G for a headless model unless asked: relu=True changes the maps
    plain = DAAM(model, method=method)(x, target=Similarity(query))
    relu = DAAM(model, method=method)(x, target=Similarity(query, relu=True))
    ref = daam_reference(model, x, target=Similarity(query, relu=True), dtype=torch.float64, method=method)
    assert_close(relu.block_maps, ref.block_maps.float())
    assert not torch.allclose(relu.block_maps, plain.block_maps)


def test_bank_target_votes_and_label_free_is_the_default():
    model = tiny_vit(num_classes=0)
    x = torch.randn(2, 3, 32, 32)
    bank = MemoryBank.from_features(torch.randn(30, 48), torch.arange(30) % 4, k=5)
    with DAAM(model) as daam:
        voted, free = daam(x, target=BankTarget(bank)), daam(x)
    assert ((voted.targets >= 0) & (voted.targets < 4)).all() and (free.targets == -1).all()
    assert voted.weights is not None and free.weights is not None
    assert not torch.equal(voted.weights, free.weights)


@pytest.mark.parametrize("method", ["grad", "direct"])
def test_top_k_rows_equal_single_target_calls(method):
    model, x = _inputs("distilled-P2")
    B, k = x.shape[0], 3
    with DAAM(model, method=method) as daam:
        res = daam(x, target=TopK(3))
        assert res.topk == k and res.block_maps.shape[0] == B * k
        top = res.logits[::k].topk(k, dim=1).indices
        assert torch.equal(res.targets, top.reshape(-1))
        for i in range(B):
            for j in range(k):
                one = daam(x[i:i + 1], target=int(top[i, j]))
                assert_close(res.block_maps[i * k + j], one.block_maps[0], max_rel=1e-5, name=f"image {i} class {j}")
    ref = daam_reference(model, x, target=TopK(k), dtype=torch.float64, method=method)
    assert ref.topk == k and torch.equal(ref.targets, res.targets)
    assert_close(res.block_maps, ref.block_maps.float())


def test_top_k_in_the_baselines():
    model, x = _inputs("tiny-N17-P1")
    res = baselines.gradcam(model, x, target=TopK(2))
    assert res.topk == 2 and res.maps.shape[0] == 4
    top = res.logits[::2].topk(2, dim=1).indices.reshape(-1)
    for r in range(4):
        one = baselines.gradcam(model, x[r // 2:r // 2 + 1], target=int(top[r]))
        assert_close(res.maps[r], one.maps[0], max_rel=1e-5)


def test_bad_targets_say_what_is_wrong():
    sup, ssl = tiny_vit(), tiny_vit(num_classes=0)
    x = torch.randn(2, 3, 32, 32)
    bank = MemoryBank.from_features(torch.randn(10, 48), torch.arange(10) % 3)
    cases = [
        (sup, dict(target=TopK(6)), ValueError, "k=6 exceeds the model's 5 classes"),
        (ssl, dict(target=TopK(2)), ValueError, "TopK: the model has no classifier head"),
        (sup, dict(target=BankTarget(bank)), ValueError, "BankTarget is for models without a classifier head"),
        (ssl, dict(target=[0, 1]), ValueError, "target given, but the model has no classifier head"),
        (sup, dict(target=lambda out: out), ValueError, r"target callable must return \(B,\) = \(2,\) scores, got shape \(2, 5\)"),
        (sup, dict(target=lambda out: out.argmax(1)), TypeError, "floating-point scores"),
        (sup, dict(target=lambda out: 1.0), TypeError, "must return a \\(B,\\) tensor of scores, got float"),
        (sup, dict(target=object()), TypeError, "target must be None, an int"),
        (sup, dict(target=True), TypeError, "not bool"),
        (ssl, dict(target=Similarity(torch.randn(7))), ValueError, "query has 7 channels, the model output 48"),
    ]
    for model, kw, err, msg in cases:
        for method in ("grad", "direct"):
            with pytest.raises(err, match=msg):
                DAAM(model, method=method)(x, **kw)
        with pytest.raises(err, match=msg):
            daam_reference(model, x, **kw)
    with pytest.raises(TypeError, match="bank must be a daam_fast.MemoryBank"):
        BankTarget("bank.pt")
    with pytest.raises(ValueError, match="k must be a positive int"):
        TopK(0)
    with pytest.raises(ValueError, match=r"query must be a \(C,\) or \(B, C\) tensor"):
        Similarity(torch.randn(2, 3, 4))
    for model in (sup, ssl):                                  # the explainer still works afterwards
        assert DAAM(model)(x).maps.shape == (2, 3, 4, 4)


def test_a_target_object_is_not_changed_by_a_call():
    """Bound copies are used, so one object serves models of different sizes."""
    small, big = tiny_vit(num_classes=5), tiny_vit(num_classes=10)
    tgt = TopK(4)
    a = DAAM(small)(torch.randn(2, 3, 32, 32), target=tgt)
    b = DAAM(big)(torch.randn(1, 3, 32, 32), target=tgt)
    assert a.block_maps.shape[0] == 8 and b.block_maps.shape[0] == 4 and tgt.adapter is None


def test_removed_spellings_name_the_one_to_use():
    """The target spellings 0.2.0 removed raise, naming the replacement (CHANGELOG.md)."""
    sup, ssl = tiny_vit(), tiny_vit(num_classes=0)
    x = torch.randn(2, 3, 32, 32)
    bank = MemoryBank.from_features(torch.randn(10, 48), torch.arange(10) % 3)
    for model, kw, msg in [
        (sup, dict(target="top3"), r"use target=TopK\(3\)"),
        (sup, dict(target="best"), "string targets were removed"),
        (sup, dict(topk=2), r"topk= was removed in daam_fast 0.2.0; use target=TopK\(k\)"),
        (ssl, dict(bank=bank), r"bank= was removed in daam_fast 0.2.0; use target=BankTarget\(bank\)"),
    ]:
        with pytest.raises(TypeError, match=msg):
            DAAM(model)(x, **kw)
        with pytest.raises(TypeError, match=msg):
            daam_reference(model, x, **kw)
    with pytest.raises(TypeError, match=r"use target=TopK\(k\)"):
        baselines.explain(sup, x, "rollout", topk=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        DAAM(sup)(x, colour=1)
    import daam_fast.targets
    for module in (daam_fast, daam_fast.targets):
        for name, use in [("ClassTarget", "target=c"), ("Score", "the callable itself"), ("LabelFree", "target=None")]:
            with pytest.raises(ImportError, match=f"{name} was removed in daam_fast 0.2.0; use {use}"):
                getattr(module, name)
    with pytest.raises(ImportError, match="ClassTarget was removed"):
        from daam_fast import ClassTarget  # noqa: F401
