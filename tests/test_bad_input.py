"""Bad input: a clear error, nothing half-written, the explainer still usable."""
import pytest
import torch
from torch import nn

from daam_fast import DAAM, BankTarget, MemoryBank, daam_reference
from models import tiny_vit


class NotAViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_non_vit_model_rejected_at_construction():
    with pytest.raises(ValueError, match="not a timm VisionTransformer"):
        DAAM(NotAViT())
    with pytest.raises(ValueError, match="not a timm VisionTransformer"):
        daam_reference(NotAViT(), torch.randn(1, 3, 8, 8))


def test_unsupported_pooling_and_attention_named():
    with pytest.raises(ValueError, match="global_pool='max'"):
        DAAM(tiny_vit(global_pool="max"))
    with pytest.raises(ValueError, match="attention pooling"):
        DAAM(tiny_vit(global_pool="map"))
    m = tiny_vit()
    m.blocks[1].attn = nn.Identity()
    with pytest.raises(ValueError, match=r"blocks\[1\].attn is Identity"):
        DAAM(m)
    with pytest.raises(ValueError, match="method"):
        DAAM(tiny_vit(), method="magic")


@pytest.mark.parametrize("fn", ["fast", "reference"])
def test_bad_images(fn):
    model = tiny_vit()
    run = (lambda x, **k: DAAM(model)(x, **k)) if fn == "fast" else (lambda x, **k: daam_reference(model, x, **k))
    with pytest.raises(ValueError, match="channels"):
        run(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        run(torch.randn(3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    x[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf \(images \[1\]\)"):
        run(x)
    x[1, 0, 5, 5] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        run(x)
    with pytest.raises(ValueError, match="float tensor"):
        run(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="img_size"):
        run(torch.randn(1, 3, 48, 32))
    with pytest.raises(ValueError, match="out of range"):
        run(torch.randn(2, 3, 32, 32), target=5)
    with pytest.raises(ValueError, match="out of range"):
        run(torch.randn(2, 3, 32, 32), target=torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="one entry per image"):
        run(torch.randn(2, 3, 32, 32), target=[1, 2, 3])
    with pytest.raises(TypeError, match="integer class indices"):
        run(torch.randn(2, 3, 32, 32), target=torch.tensor([0.5, 1.0]))


def test_bank_misuse():
    sup = tiny_vit()
    bank = MemoryBank.from_features(torch.randn(10, 48), torch.arange(10) % 3)
    with pytest.raises(ValueError, match="without a classifier head"):
        DAAM(sup)(torch.randn(1, 3, 32, 32), target=BankTarget(bank))
    ssl = tiny_vit(num_classes=0)
    with pytest.raises(ValueError, match="no classifier head"):
        DAAM(ssl)(torch.randn(1, 3, 32, 32), target=1)
    wrong = MemoryBank.from_features(torch.randn(10, 7), torch.arange(10) % 3)
    with pytest.raises(ValueError, match="feature dim"):
        DAAM(ssl)(torch.randn(1, 3, 32, 32), target=BankTarget(wrong))


def test_inference_mode_left_by_daam_refused_clearly_by_the_baselines():
    """DAAM leaves inference mode for its call (tests/test_threads.py checks its maps); a
    baseline that needs autograd refuses it with a clear error."""
    from daam_fast.baselines import grad_rollout
    model = tiny_vit()
    with torch.inference_mode():
        assert DAAM(model)(torch.randn(1, 3, 32, 32)).maps.shape == (1, 3, 4, 4)
        with pytest.raises(RuntimeError, match="inference_mode"):
            grad_rollout(model, torch.randn(1, 3, 32, 32))


def test_no_grad_context_is_fine():
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        res = DAAM(model)(x)
    assert (res.block_maps > 0).any()
