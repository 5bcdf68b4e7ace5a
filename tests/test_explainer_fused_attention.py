"""The explainer's GPU attention path (cls_attention writes out and the [class] row in one
kernel) exercised on the CPU: backend="triton" under TRITON_INTERPRET=1 sends every block's
attention through the Triton cls_attention kernel and block_map through the Triton block_map
kernel; the maps must equal the reference's (grad) and the torch path's (direct)."""
import os

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from daam_fast import DAAM, daam_reference
from daam_fast.ops import cls_attention as cls_mod
from tolerances import assert_close

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                                reason="Triton needs a GPU or TRITON_INTERPRET=1 (make test sets it)")


def _model(reg_tokens=0):
    torch.manual_seed(3)
    m = VisionTransformer(img_size=(24, 16), patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0,
                          num_classes=5, reg_tokens=reg_tokens)
    return m.eval()


@pytest.mark.parametrize("reg_tokens", [0, 2])
def test_grad_through_triton_cls_attention(reg_tokens, monkeypatch):
    model = _model(reg_tokens)
    x = torch.randn(3, 3, 24, 16)
    calls = []
    orig = cls_mod.cls_attention

    def spy(*a, **kw):
        calls.append(kw.get("backend"))
        return orig(*a, **kw)
    monkeypatch.setattr("daam_fast.explainer.cls_attention", spy)
    with DAAM(model, backend="triton") as daam:
        res = daam(x, target=torch.tensor([0, 4, 2]))
    assert calls == ["triton", "triton"]                       # every block's attention went through the kernel
    ref = daam_reference(model, x, target=torch.tensor([0, 4, 2]), dtype=torch.float64)
    assert_close(res.block_maps, ref.block_maps.float())
    assert_close(res.maps, ref.maps.float())


def test_direct_uses_kernel_row():
    model = _model()
    x = torch.randn(2, 3, 24, 16)
    with DAAM(model, method="direct", backend="triton") as daam:
        fast = daam(x, target=1)
    with DAAM(model, method="direct", backend="torch") as daam:
        slow = daam(x, target=1)
    assert_close(fast.block_maps, slow.block_maps)


def test_cpu_auto_keeps_sdpa(monkeypatch):
    """On CPU tensors under auto the kernel is not called (SDPA + the O(N d) row)."""
    monkeypatch.setattr("daam_fast.explainer.cls_attention", lambda *a, **k: pytest.fail("kernel called on CPU"))
    monkeypatch.delenv("DAAM_FAST_BACKEND", raising=False)
    with DAAM(_model()) as daam:
        daam(torch.randn(1, 3, 24, 16))
