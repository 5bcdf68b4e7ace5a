"""The explainer under torch.autocast (CPU bfloat16): the model's matmuls and SDPA run in
bfloat16, the captured k / v are bfloat16, the maps come back float32 and stay within the
bfloat16 row of the tolerance table of the float32 maps (same targets)."""
import pytest
import torch

from daam_fast import DAAM, _capture
from models import MODEL_CASES
from tolerances import assert_close

CASES = ["tiny-N17-P1", "deit_tiny-N197", "distilled-P2", "avgpool"]


@pytest.mark.parametrize("case", CASES, ids=CASES)
@pytest.mark.parametrize("method", ["grad", "direct"])
def test_bf16_autocast_close_to_float32(case, method, monkeypatch):
    factory, shape, batch, _ = MODEL_CASES[case]
    model = factory()
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
    with DAAM(model, method=method, heads=True) as daam:
        ref = daam(x)
        seen = []
        block_map, row_map = _capture.block_map, _capture.row_map
        # where every method forms its maps (grad's autograd sink too, through _capture.map_terms)
        monkeypatch.setattr(_capture, "block_map", lambda q, k, v, *a, **kw: seen.append(k.dtype) or block_map(q, k, v, *a, **kw))
        monkeypatch.setattr(_capture, "row_map", lambda a, v, *r, **kw: seen.append(v.dtype) or row_map(a, v, *r, **kw))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            res = daam(x, target=ref.targets)                 # bf16 may flip a near-tie argmax: pin it
    assert seen and set(seen) == {torch.bfloat16}, seen       # autocast really ran the attention in bf16
    assert res.block_maps.dtype == res.maps.dtype == res.head_maps.dtype == torch.float32
    assert_close(res.block_maps, ref.block_maps, torch.bfloat16, name=f"{case} {method} block_maps")
    assert_close(res.maps, ref.maps, torch.bfloat16, name=f"{case} {method} maps")
    assert_close(res.head_maps, ref.head_maps, torch.bfloat16, name=f"{case} {method} head_maps")
