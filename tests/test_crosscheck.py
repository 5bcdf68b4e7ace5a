"""Cross-check against the other DAAM implementation on PyPI (daam-timm-vit), when installed.

It is installed for benchmarks only (`make bench`); without it this test is skipped with
the reason. Both implement docs/method.md §1-3. Measured with daam-timm-vit 0.2.1: the first
block's maps agree, later blocks do not; finite differences (tests/test_reference_hand.py and
the check below) side with daam_fast, so only block 1 is compared with it, and every block
with finite differences.
"""
import pytest
import torch

from daam_fast import DAAM
from models import tiny_vit
from tolerances import assert_close

daam_timm_vit = pytest.importorskip("daam", reason="daam-timm-vit not installed (installed by `make bench`)")


# global_pool='avg' is left out on purpose: daam-timm-vit weights each query row's attention
# by that row's own gradient (sum_r A[r, n] G_r); daam_fast follows docs/method.md §7 literally (the mean
# row of A times the gradient of the mean token, sum_r G_r). Both are documented choices.
@pytest.mark.parametrize("kw", [dict(), dict(reg_tokens=2)], ids=["token-P1", "registers-P3"])
def test_same_maps_as_daam_timm_vit(kw):
    if not hasattr(daam_timm_vit, "DAAM"):
        pytest.skip("an unrelated package named `daam` is installed")
    model = tiny_vit(**kw)
    x = torch.randn(3, 3, 32, 32)
    with DAAM(model) as d:
        ours = d(x)
    with daam_timm_vit.DAAM(model) as d:
        theirs = d(x)
    assert_close(ours.block_maps[:, 0], theirs.maps[:, 0].float(), name="block 1: daam_fast vs daam-timm-vit")


def test_later_blocks_by_finite_differences():
    """Block 2 of a 3-block model: G by central differences, map by explicit loops."""
    from daam_fast._session import patched
    from daam_fast.adapters import get_adapter
    from daam_fast.reference._explicit import explicit_core
    model = tiny_vit().double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    ours = DAAM(model)(x)
    t, b, eps = int(ours.targets[0]), 1, 1e-6

    def run(c=None, e=0.0):
        hs = []
        if c is not None:
            def hook(mod, inp, out):
                out = out.clone()
                out[:, 0, c] += e
                return out
            hs.append(model.blocks[b].attn.norm.register_forward_hook(hook))
        with torch.no_grad():
            y = model(x)[0, t]
        for h in hs:
            h.remove()
        return y

    G = torch.tensor([(run(c, eps) - run(c, -eps)) / (2 * eps) for c in range(48)])
    store = []
    adapter = get_adapter(model)
    with patched(adapter, lambda blk: explicit_core(adapter, blk, store)), torch.no_grad():
        model(x)
    a0, v = store[b]["A"][0, :, 0], store[b]["v"][0]                     # (H, N), (H, N, d)
    S = a0[:, :, None] * v                                               # (H, N, d)
    L = (S * G.clamp_min(0).reshape(3, 1, 16)).sum(dim=(0, 2)).clamp_min(0)[1:].reshape(4, 4)
    assert (L > 0).any()
    assert_close(ours.block_maps[0, b].double(), L, torch.float32, name="block 2 vs finite differences")
