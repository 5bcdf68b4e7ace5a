"""method="row" (docs/method.md §8): the fast path against its literal reference, the known
answers (a depth-1 model and the last block equal "grad"), batches, targets, headless models,
every adapter family, and what it refuses.

Each case names the layout it exercises (tests/models.py, tests/test_adapters.py).
"""
import pytest
import timm
import torch
from timm.layers import Attention
from timm.models.vision_transformer import ResPostBlock

from daam_fast import DAAM, BankTarget, MemoryBank, daam_reference
from daam_fast.models import load_dino
from models import MODEL_CASES, randomize, tiny_vit
from test_adapters import CASES as ADAPTER_CASES
from test_adapters import DinoViT, _dino_checkpoint, _make, eva, spread
from tolerances import assert_close


def fast(model, x, **kw):
    with DAAM(model, method="row") as d:
        return d(x, **kw)


def reference(model, x, **kw):
    return daam_reference(model, x, dtype=torch.float64, method="row", **kw)


def grad(model, x, **kw):
    with DAAM(model) as d:
        return d(x, **kw)


TIMM_CASES = ["tiny-N17-P1", "deit_tiny-N197", "patch8-N785-B3", "distilled-P2", "registers-P5",
              "qknorm-layerscale", "scale-norm", "nonsquare-3x5", "dynamic-4x6", "no-embed-class"]


def _input(shape, batch, seed=1):
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", TIMM_CASES, ids=TIMM_CASES)
def test_row_equals_literal_reference(case):
    factory, shape, batch, _ = MODEL_CASES[case]
    model = factory()
    x = _input(shape, batch)
    ref = reference(model, x)
    assert (ref.block_maps > 0).float().mean() > 0.05                  # not a degenerate map
    res = fast(model, x)
    assert res.method == "row"
    assert torch.equal(res.targets, ref.targets)
    assert_close(res.block_maps, ref.block_maps, name=f"{case} row block_maps")
    assert_close(res.maps, ref.maps, name=f"{case} row maps")
    assert_close(res.logits, ref.logits, name=f"{case} logits")
    # the last block is exact (only the row path reaches the head): == grad
    g = grad(model, x)
    assert_close(res.block_maps[:, -1], g.block_maps[:, -1], name=f"{case} last block vs grad")


FAMILY_CASES = ["hf-vit-cls", "hf-vit-model", "hf-deit-cls", "hf-deit-teacher", "tv-vit", "tv-vit-h4",
                "timm-eva-rope", "timm-beit-relpos"]


@pytest.mark.parametrize("case", FAMILY_CASES, ids=FAMILY_CASES)
def test_row_every_family(case):
    """HF ViT/DeiT (teacher: the head reads 2 rows), torchvision, EVA with rotary embeddings
    (the [class] row has none), BEiT (the relative position bias rows are kept as constants)."""
    model, _ = _make(case)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref = reference(model, x)
    assert (ref.block_maps > 0).float().mean() > 0.05
    res = fast(model, x)
    assert_close(res.block_maps, ref.block_maps, name=f"{case} row block_maps")
    g = grad(model, x)
    assert_close(res.block_maps[:, -1], g.block_maps[:, -1], name=f"{case} last block vs grad")
    assert torch.equal(res.targets, g.targets)


class _GatedAttention(Attention):
    """timm's Attention with its sigmoid output gate (the constructor's ``gated=True``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, gated=True, **kwargs)


@pytest.mark.parametrize("factory", [lambda: tiny_vit(attn_layer=_GatedAttention),
                                     lambda: tiny_vit(block_fn=ResPostBlock, init_values=None),
                                     lambda: eva(scale_attn_inner=True, global_pool="token")],
                         ids=["gated-attention", "post-norm-ResPostBlock", "eva-scale-norm"])
def test_row_where_direct_is_refused(factory):
    """Blocks that "direct" refuses (a gate or scale-norm between T and proj, post-norm) act on each
    token separately outside the attention, so the row path applies to them as they are."""
    model = factory()
    with pytest.raises(ValueError, match="method='direct' cannot explain"):
        DAAM(model, method="direct")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    ref = reference(model, x)
    assert (ref.block_maps > 0).float().mean() > 0.05
    res = fast(model, x)
    assert_close(res.block_maps, ref.block_maps, name="row block_maps")
    assert_close(res.block_maps[:, -1], grad(model, x).block_maps[:, -1], name="last block vs grad")


def test_row_dino_layout_self_supervised():
    """A DINO checkpoint loaded into timm (headless): label-free weights and a memory bank."""
    model = load_dino(_dino_checkpoint(spread(DinoViT(depth=3))))
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    bank = MemoryBank.from_features(torch.randn(30, 192), torch.arange(30) % 3, k=5)
    for kw in (dict(), dict(target=BankTarget(bank))):
        ref = reference(model, x, **kw)
        res = fast(model, x, **kw)
        assert_close(res.block_maps, ref.block_maps, name=f"dino row {sorted(kw)}")
        assert torch.equal(res.targets, ref.targets)
        assert_close(res.weights, ref.weights.float(), name="weights")
        g = grad(model, x, **kw)
        assert_close(res.block_maps[:, -1], g.block_maps[:, -1], name="dino last block vs grad")


@pytest.mark.parametrize("factory", [lambda: tiny_vit(depth=1), lambda: tiny_vit(depth=1, num_classes=0),
                                     lambda: randomize(timm.create_model("deit_tiny_distilled_patch16_224",
                                                                         img_size=48, depth=1)),
                                     lambda: tiny_vit(depth=1, reg_tokens=2, qk_norm=True, init_values=0.5)],
                         ids=["depth1", "depth1-headless", "depth1-distilled", "depth1-reg-qknorm-ls"])
def test_row_exact_on_depth_one(factory):
    """A depth-1 model has no later block: the row path is the whole gradient, so row == grad."""
    model = factory()
    size = model.patch_embed.img_size
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(3))
    assert_close(fast(model, x).block_maps, grad(model, x).block_maps, name="depth 1: row vs grad")


def test_row_is_an_approximation_before_the_last_block():
    """Earlier blocks drop the paths through the other tokens: they differ from grad (a test
    that row does not silently run grad), yet stay close on a small model."""
    model = tiny_vit(depth=4)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    r, g = fast(model, x).block_maps, grad(model, x).block_maps
    first = (r[:, 0] - g[:, 0]).abs().max() / g[:, 0].abs().max()
    assert first > 1e-4
    assert_close(r[:, -1], g[:, -1], name="last block")


def test_row_batch_consistency_and_targets():
    factory, shape, _, _ = MODEL_CASES["deit_tiny-N197"]
    model = factory()
    x = _input(shape, 3, seed=5)
    t = torch.tensor([3, 1, 0])
    batch = fast(model, x, target=t)
    for i in range(3):
        one = fast(model, x[i:i + 1], target=int(t[i]))
        assert_close(batch.block_maps[i], one.block_maps[0], name=f"image {i}: batch vs alone")
    ref = reference(model, x, target=t)
    assert_close(batch.block_maps, ref.block_maps, name="explicit targets")
    assert torch.equal(batch.targets, t)


def test_row_headless_timm_with_bank():
    model = tiny_vit(num_classes=0, reg_tokens=1)
    x = torch.randn(2, 3, 32, 32)
    bank = MemoryBank.from_features(torch.randn(40, 48), torch.arange(40) % 4, k=6)
    ref = reference(model, x, target=BankTarget(bank))
    res = fast(model, x, target=BankTarget(bank))
    assert_close(res.block_maps, ref.block_maps, name="headless row with bank")
    assert torch.equal(res.targets, ref.targets)


def test_row_stops_the_forward_after_the_last_keys_and_restores_the_model():
    """The last block's MLP only ever sees the R rows of the row graph (the forward stopped
    after k_L, v_L), and afterwards the model is as before: outputs, flags, forwards."""
    model = randomize(timm.create_model("deit_tiny_distilled_patch16_224", img_size=48, depth=2))
    model.train()
    x = torch.randn(2, 3, 48, 48)
    seen = []
    h = model.blocks[-1].mlp.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    try:
        fast(model, x)
    finally:
        h.remove()
    assert seen == [2]                                                 # distilled: R = 2 rows
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert not any("forward" in blk.attn.__dict__ for blk in model.blocks)
    model.eval()
    with torch.no_grad():
        before = model(x)
    fast(model, x)
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_row_refuses_mean_pooled_models():
    with pytest.raises(ValueError, match="mean-pooled"):
        fast(tiny_vit(global_pool="avg", fc_norm=True), torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="mean-pooled"):
        reference(tiny_vit(global_pool="avg", fc_norm=True), torch.randn(1, 3, 32, 32))


def test_row_heads_topk_and_callable_targets():
    """The options every method takes: per-head terms (== the reference's), top-k rows, a
    callable target (== the class index it picks), a similarity on a headless model."""
    from daam_fast import Similarity, TopK
    model = tiny_vit(reg_tokens=1)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with DAAM(model, method="row", heads=True) as d:
        res = d(x, target=TopK(2))
    ref = daam_reference(model, x, target=TopK(2), dtype=torch.float64, method="row", heads=True)
    assert res.topk == 2 and res.block_maps.shape[0] == 4
    assert torch.equal(res.targets, ref.targets)
    assert_close(res.block_maps, ref.block_maps, name="top-2 row maps")
    assert_close(res.head_maps, ref.head_maps, name="row head_maps")
    assert_close(res.head_maps.sum(2).clamp_min(0), res.block_maps, name="relu(sum of heads) == maps")
    picked = fast(model, x, target=lambda out: out[:, 3])
    assert_close(picked.block_maps, fast(model, x, target=3).block_maps, name="callable target vs index")
    ssl = tiny_vit(num_classes=0)
    q = torch.randn(48, generator=torch.Generator().manual_seed(7))
    assert_close(fast(ssl, x, target=Similarity(q)).block_maps, reference(ssl, x, target=Similarity(q)).block_maps,
                 name="similarity target")


def test_row_options():
    """activation_checkpointing=True (a backward through the blocks) does not apply; compile=True gives the same maps."""
    model = tiny_vit()
    with pytest.raises(ValueError, match="checkpoint"):
        DAAM(model, method="row", activation_checkpointing=True)
    x = torch.randn(2, 3, 32, 32)
    want = fast(model, x).block_maps
    with DAAM(model, method="row", compile=True) as d:
        assert_close(d(x).block_maps, want, name="compile=True")
