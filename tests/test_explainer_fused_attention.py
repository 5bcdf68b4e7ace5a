"""Which attention each method runs, exercised on the CPU.

- "grad" never needs the [class] row in the forward (block_map forms it from q[:, :, 0], k
  and v when the gradient arrives), so it always runs the model's SDPA, whatever the backend.
- "direct" reads the row in the forward: the cls_attention kernel writes it beside the
  attention output, but only when a kernel backend is asked for explicitly ("triton" /
  "cuda", by ``backend=`` or ``DAAM_FAST_BACKEND``); under auto (on CUDA tensors too) it is
  SDPA + the O(N d) row, since no GPU measurement shows the kernel faster yet.

backend="triton" under TRITON_INTERPRET=1 stands in on the CPU for "kernel requested".
"""
import os

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from daam_fast import DAAM, daam_reference
from daam_fast import _capture
from tolerances import assert_close

needs_triton = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                                  reason="Triton needs a GPU or TRITON_INTERPRET=1 (make test sets it)")


def _model(reg_tokens=0):
    torch.manual_seed(3)
    m = VisionTransformer(img_size=(24, 16), patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0,
                          num_classes=5, reg_tokens=reg_tokens)
    return m.eval()


@pytest.fixture
def spies(monkeypatch):
    """Counts of the cls_attention kernel calls (with their backend) and of SDPA calls made
    by the explainer's attention."""
    calls = {"kernel": [], "sdpa": 0}
    kernel, sdpa = _capture.cls_attention, F.scaled_dot_product_attention

    def spy_kernel(*a, **kw):
        calls["kernel"].append(kw.get("backend"))
        return kernel(*a, **kw)

    def spy_sdpa(*a, **kw):
        calls["sdpa"] += 1
        return sdpa(*a, **kw)
    monkeypatch.setattr(_capture, "cls_attention", spy_kernel)
    monkeypatch.setattr(_capture.F, "scaled_dot_product_attention", spy_sdpa)
    monkeypatch.delenv("DAAM_FAST_BACKEND", raising=False)
    return calls


@needs_triton
@pytest.mark.parametrize("reg_tokens", [0, 2])
def test_grad_keeps_sdpa_with_a_kernel_backend(reg_tokens, spies):
    model = _model(reg_tokens)
    x = torch.randn(3, 3, 24, 16)
    with DAAM(model, backend="triton") as daam:
        res = daam(x, target=torch.tensor([0, 4, 2]))
    assert spies["kernel"] == [] and spies["sdpa"] == 2            # every block: the model's SDPA
    ref = daam_reference(model, x, target=torch.tensor([0, 4, 2]), dtype=torch.float64)
    assert_close(res.block_maps, ref.block_maps.float())
    assert_close(res.maps, ref.maps.float())


@needs_triton
def test_grad_keeps_sdpa_with_the_env_backend(spies, monkeypatch):
    monkeypatch.setenv("DAAM_FAST_BACKEND", "triton")
    with DAAM(_model()) as daam:
        daam(torch.randn(2, 3, 24, 16))
    assert spies["kernel"] == [] and spies["sdpa"] == 2


@needs_triton
def test_direct_uses_the_kernel_when_asked(spies):
    model = _model()
    x = torch.randn(2, 3, 24, 16)
    with DAAM(model, method="direct", backend="triton") as daam:
        fast = daam(x, target=1)
    assert spies["kernel"] == ["triton", "triton"] and spies["sdpa"] == 0
    with DAAM(model, method="direct", backend="torch") as daam:
        slow = daam(x, target=1)
    assert spies["kernel"] == ["triton", "triton"] and spies["sdpa"] == 2
    assert_close(fast.block_maps, slow.block_maps)


@needs_triton
def test_direct_uses_the_kernel_from_the_env(spies, monkeypatch):
    monkeypatch.setenv("DAAM_FAST_BACKEND", "triton")
    with DAAM(_model(), method="direct") as daam:
        daam(torch.randn(2, 3, 24, 16))
    assert spies["kernel"] == ["triton", "triton"]


@pytest.mark.parametrize("method", ["grad", "direct"])
def test_auto_keeps_sdpa(method, spies):
    """Under auto the kernel is not called (SDPA + the O(N d) row), for both methods."""
    with DAAM(_model(), method=method) as daam:
        daam(torch.randn(1, 3, 24, 16))
    assert spies["kernel"] == [] and spies["sdpa"] == 2


def test_kernel_backend_choice(monkeypatch):
    """The rule itself, device-independent: a kernel only for an explicit "triton" / "cuda"."""
    monkeypatch.delenv("DAAM_FAST_BACKEND", raising=False)
    assert [_capture.kernel_backend(b) for b in (None, "auto", "torch", "cpp", "triton", "cuda")] == \
        [None, None, None, None, "triton", "cuda"]
    monkeypatch.setenv("DAAM_FAST_BACKEND", "cuda")
    assert _capture.kernel_backend(None) == "cuda" and _capture.kernel_backend("torch") is None
