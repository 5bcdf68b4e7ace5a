"""method="direct" (docs/method.md §7): the fast forward-only path against the literal reference."""
import pytest
import torch

from daam_fast import DAAM, daam_reference
from models import MODEL_CASES, tiny_vit
from tolerances import assert_close

DIRECT_CASES = ["tiny-N17-P1", "deit_tiny-N197", "patch8-N785-B3", "distilled-P2", "registers-P5",
                "qknorm-layerscale", "nonsquare-3x5", "dynamic-4x6", "avgpool"]


@pytest.mark.parametrize("case", DIRECT_CASES, ids=DIRECT_CASES)
def test_direct_equals_literal_reference(case):
    factory, shape, batch, _ = MODEL_CASES[case]
    model = factory()
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
    ref = daam_reference(model, x, dtype=torch.float64, method="direct")
    assert (ref.block_maps > 0).float().mean() > 0.05
    with DAAM(model, method="direct") as daam:
        res = daam(x)
    assert res.method == "direct"
    assert torch.equal(res.targets, ref.targets)
    assert_close(res.block_maps, ref.block_maps, name=f"{case} direct block_maps")
    assert_close(res.logits, ref.logits)


def test_direct_exact_when_residual_path_is_the_only_path():
    """With the last block's MLP branch zeroed, T_L[0] reaches x_L[0] only through ls1(proj(T)):
    there direct's G_L is exact, so its last map equals grad's (a known answer)."""
    model = tiny_vit(init_values=0.7)
    with torch.no_grad():
        model.blocks[-1].mlp.fc2.weight.zero_()
        model.blocks[-1].mlp.fc2.bias.zero_()
    x = torch.randn(3, 3, 32, 32)
    with DAAM(model, method="grad") as daam:
        g = daam(x)
    with DAAM(model, method="direct") as daam:
        d = daam(x)
    assert_close(d.block_maps[:, -1], g.block_maps[:, -1])
    assert (d.block_maps[:, 0] - g.block_maps[:, 0]).abs().max() > 1e-6  # earlier blocks: an approximation


def test_direct_targets_and_self_supervised():
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([3, 1])
    ref = daam_reference(model, x, target=t, dtype=torch.float64, method="direct")
    res = DAAM(model, method="direct")(x, target=t)
    assert_close(res.block_maps, ref.block_maps)
    ssl = tiny_vit(num_classes=0)
    ref = daam_reference(ssl, x, dtype=torch.float64, method="direct")
    res = DAAM(ssl, method="direct")(x)
    assert_close(res.block_maps, ref.block_maps)


def test_direct_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="scale-norm or gate"):
        DAAM(tiny_vit(scale_attn_norm=True), method="direct")
    with pytest.raises(ValueError, match="scale-norm or gate"):
        daam_reference(tiny_vit(scale_attn_norm=True), torch.randn(1, 3, 32, 32), method="direct")
