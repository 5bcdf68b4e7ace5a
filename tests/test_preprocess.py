"""prepare: the model input from pictures of any size (daam_fast.preprocess)."""
import pytest
import torch
import torch.nn.functional as F

from daam_fast.preprocess import InputSpec, normalise, prepare


def _float_path(im, spec):
    x = F.interpolate((im.float() / 255)[None], size=spec.size, mode=spec.interpolation, antialias=True,
                      align_corners=False)
    return x.clamp(0, 1)


@pytest.mark.parametrize("hw", [(1080, 1920), (481, 643), (224, 300)])
@pytest.mark.parametrize("interp", ["bicubic", "bilinear"])
def test_uint8_reduction_within_one_level_of_float(hw, interp):
    """uint8 pictures reduced on the CPU take torch's uint8 path: within one level of the float resize."""
    spec = InputSpec((224, 224), interpolation=interp)
    g = torch.Generator().manual_seed(hw[0])
    im = F.interpolate(torch.rand(1, 3, hw[0] // 8, hw[1] // 8, generator=g), size=hw, mode="bilinear")[0]
    im = (im * 255).round().to(torch.uint8)
    x, rgb = prepare(im, spec)
    want = _float_path(im, spec)
    assert rgb.dtype == torch.uint8 and rgb.shape == (1, 3, 224, 224)
    assert (rgb.float() - (want * 255).round()).abs().max() <= 1
    assert torch.allclose(x, normalise(want, spec.mean, spec.std), atol=1.01 / 255 / min(spec.std))
    assert torch.equal(x, normalise(rgb, spec.mean, spec.std))        # the model sees the picture it is drawn on


def test_enlarging_float_and_list_of_sizes():
    """Enlarged pictures and float pictures take the float path (exact); a list may mix sizes."""
    spec = InputSpec((224, 224))
    small = torch.randint(0, 256, (3, 64, 48), dtype=torch.uint8)
    x, rgb = prepare([small, torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)], spec)
    assert x.shape == (2, 3, 224, 224)
    assert torch.equal(rgb[0], (_float_path(small, spec)[0] * 255).round().to(torch.uint8))
    xf, _ = prepare(small.float() / 255, spec)
    assert torch.allclose(xf[0], x[0], atol=1e-5)
    with pytest.raises(ValueError, match="RGB"):
        prepare(torch.zeros(1, 64, 64, dtype=torch.uint8), spec)
