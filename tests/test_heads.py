"""Per-head maps: DAAM(model, heads=True) -> res.head_maps (B, L, H, h, w), each
head's term of L_b before the ReLU, formed in the same pass as the maps (the fused block_map
op for the [class] slot; the row slot for attention biases and mean-pooling; "direct" too).

Against the reference's literal per-head term sum_{c in head h} G_b[c] S_b[n, c] (float64),
on odd sizes: 197 tokens, a non-square grid, 2 and 5 prefix tokens, batches > 1; the
property relu(head_maps.sum(2)) == block_maps; top-k rows equal single-target calls."""
import pytest
import torch

from daam_fast import DAAM, TopK, daam_reference
from models import MODEL_CASES
from test_adapters import _make, _x
from tolerances import assert_close

CASES = ["deit_tiny-N197", "nonsquare-3x5", "distilled-P2", "registers-P5", "avgpool"]
FAMILIES = ["timm-beit-relpos", "timm-beit-shared-avg", "timm-eva-rope", "tv-vit-h4"]


def _inputs(case, seed=1):
    factory, shape, batch, _ = MODEL_CASES[case]
    return factory(), torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def _check(res, ref, name):
    B, L, h, w = res.block_maps.shape
    assert res.head_maps.shape == ref.head_maps.shape and res.head_maps.dtype == torch.float32
    assert res.head_maps.shape[:2] == (B, L) and res.head_maps.shape[3:] == (h, w), name
    assert (ref.head_maps < 0).any() and (ref.head_maps > 0).any(), f"{name}: degenerate head terms"
    # each head's term against the literal one; the tolerance is taken on the largest term
    assert_close(res.head_maps, ref.head_maps.float(), name=f"{name} head_maps")
    assert_close(res.block_maps, ref.block_maps.float(), name=f"{name} block_maps")
    # the property: ReLU of the sum over heads is the block map
    assert_close(res.head_maps.sum(dim=2).clamp_min(0), res.block_maps, max_rel=1e-5, name=f"{name} relu(sum)")


@pytest.mark.parametrize("case", CASES, ids=CASES)
@pytest.mark.parametrize("method", ["grad", "direct"])
def test_head_maps_equal_the_reference(case, method):
    model, x = _inputs(case)
    with DAAM(model, method=method, heads=True) as daam:
        res = daam(x)
    ref = daam_reference(model, x, target=res.targets, dtype=torch.float64, method=method, heads=True)
    _check(res, ref, f"{case} {method}")


@pytest.mark.parametrize("case", FAMILIES, ids=FAMILIES)
def test_head_maps_every_slot_kind(case):
    """BEiT's bias and mean-pooling form the row in the forward (the row slot), torchvision
    and EVA keep the [class] slot: both give the same per-head terms as the reference."""
    model, _family = _make(case)
    x = _x(batch=3)
    with DAAM(model, heads=True) as daam:
        res = daam(x)
    tgt = res.targets if res.logits is not None else None
    ref = daam_reference(model, x, target=tgt, dtype=torch.float64, heads=True)
    _check(res, ref, case)


def test_heads_off_by_default_and_normalize():
    model, x = _inputs("registers-P5")
    assert DAAM(model)(x).head_maps is None
    raw = DAAM(model, heads=True)(x)
    norm = DAAM(model, heads=True, normalize=True)(x)
    assert torch.equal(norm.head_maps, raw.head_maps)                # the head terms are never normalised
    s = norm.head_maps.sum(dim=2).clamp_min(0).flatten(2)
    lo, hi = s.amin(-1, keepdim=True), s.amax(-1, keepdim=True)
    assert_close(norm.block_maps.flatten(2), (s - lo) / (hi - lo + 1e-10), max_rel=1e-5)


def test_heads_with_checkpoint_and_every_backend_agree():
    model, x = _inputs("nonsquare-3x5")
    with DAAM(model, heads=True) as daam:
        plain = daam(x)
    with DAAM(model, heads=True, activation_checkpointing=True) as daam:
        ck = daam(x)
    assert_close(ck.head_maps, plain.head_maps, max_rel=1e-6)
    with DAAM(model, heads=True, backend="torch") as daam:
        torch_ = daam(x)
    assert_close(torch_.head_maps, plain.head_maps)


@pytest.mark.parametrize("method", ["grad", "direct"])
def test_top_k_head_maps_equal_single_target_calls(method):
    model, x = _inputs("distilled-P2")
    k = 2
    with DAAM(model, method=method, heads=True) as daam:
        res = daam(x, target=TopK(k))
        assert res.topk == k and res.head_maps.shape[0] == x.shape[0] * k
        for r in range(res.head_maps.shape[0]):
            one = daam(x[r // k:r // k + 1], target=int(res.targets[r]))
            assert_close(res.head_maps[r], one.head_maps[0], max_rel=1e-5, name=f"row {r}")
            assert_close(res.block_maps[r], one.block_maps[0], max_rel=1e-5, name=f"row {r}")
    ref = daam_reference(model, x, target=TopK(k), dtype=torch.float64, method=method, heads=True)
    assert_close(res.head_maps, ref.head_maps.float())
