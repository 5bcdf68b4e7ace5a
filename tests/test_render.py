"""render / normalize_frames (docs/method.md §5) against known answers and a per-image NumPy transcription."""
import numpy as np
import pytest
import torch

from daam_fast import render
from daam_fast.render import colormap_jet, normalize_frames


def _authors_nonlinear(D):
    """docs/method.md §5: 'nonlinear', one image at a time in NumPy, as the authors' code does (no resize)."""
    out = []
    G = D[-1].max()
    for Db in D:
        y = 1 / (1 + np.exp(-5 * Db / G)) - 0.5
        z = (y - y.min()) / (y.max() - y.min())
        out.append((255 * z).astype(np.uint8))
    return np.stack(out)


def _authors_linear(D):
    gmin, gmax = D[-1].min(), D[-1].max()
    out = []
    for Db in D:
        z = np.maximum(0, (Db - gmin) / (Db.max() - gmin + 1e-10)) * 255 * (Db.max() - Db.min()) / (gmax - gmin)
        out.append(np.clip(z, 0, 255).astype(np.uint8))
    return np.stack(out)


def _maps(B=3, L=4, h=5, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(torch.rand(B, L, h, w, generator=g, dtype=torch.float64), dim=1).float()


@pytest.mark.parametrize("mode,oracle", [("nonlinear", _authors_nonlinear), ("linear", _authors_linear)])
def test_matches_authors_per_image(mode, oracle):
    maps = _maps()
    got = render(maps, mode=mode)
    assert got.dtype == torch.uint8 and got.shape == maps.shape
    for i in range(maps.shape[0]):
        exp = oracle(maps[i].double().numpy())
        # float32 vs float64 can move a value across an integer boundary: allow 1 level
        assert np.abs(got[i].numpy().astype(int) - exp.astype(int)).max() <= 1


def test_known_values_nonlinear():
    D = torch.tensor([[[[0.0, 1.0]], [[0.0, 2.0]]]])       # B1 L2 h1 w2; G = 2
    z = normalize_frames(D, "nonlinear")
    assert torch.allclose(z, torch.tensor([[[[0.0, 1.0]], [[0.0, 1.0]]]]))
    assert render(D).flatten().tolist() == [0, 255, 0, 255]


def test_constant_and_zero_frames_never_nan():
    D = torch.zeros(2, 3, 4, 4)
    D[1, 1:] = 1.0                                         # image 1: block 0 zero, later blocks constant
    for mode in ("nonlinear", "linear", "raw"):
        z = normalize_frames(D, mode)
        assert torch.isfinite(z).all() and (z == 0).all(), mode
        assert (render(D, mode=mode) == 0).all()
    D = torch.full((1, 2, 3, 3), float("nan"))
    assert torch.isfinite(normalize_frames(D)).all()


def test_linear_keeps_relative_brightness():
    D = _maps(B=1, L=3)
    z = normalize_frames(D, "linear")
    span = z.flatten(2).amax(-1) - z.flatten(2).amin(-1)
    assert span[0, -1] == pytest.approx(1.0, abs=1e-5)
    assert z.max() <= 1 and z.min() >= 0


def test_resize_and_overlay_formula():
    maps = _maps(B=2, L=3, h=4, w=4)
    imgs = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    heat = render(maps, size=(16, 16))
    over = render(maps, images=imgs)
    assert heat.shape == (2, 3, 16, 16) and over.shape == (2, 3, 16, 16, 3) and over.dtype == torch.uint8
    # overlay = clamp(round(0.4 * jet(heat) + 0.8 * img))
    b, l, y, x = 1, 2, 7, 9
    col = colormap_jet(heat[b, l, y, x].float() / 255) * 255
    exp = (0.4 * col + 0.8 * imgs[b, :, y, x].float()).round().clamp(0, 255)
    assert torch.equal(over[b, l, y, x], exp.to(torch.uint8))
    # float images in [0, 1] give the same overlay
    assert (over.int() - render(maps, images=imgs.float() / 255).int()).abs().max() <= 1
    # the resize is bilinear of the truncated uint8 frame
    small = render(maps)
    up = torch.nn.functional.interpolate(small.float().flatten(0, 1)[:, None], size=(16, 16), mode="bilinear",
                                         align_corners=False).round().reshape(2, 3, 16, 16)
    assert torch.equal(heat, up.to(torch.uint8))


def test_jet_endpoints():
    c = colormap_jet(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(c[0], torch.tensor([0.0, 0.0, 0.5]))
    assert torch.allclose(c[1], torch.tensor([0.5, 1.0, 0.5]))
    assert torch.allclose(c[2], torch.tensor([0.5, 0.0, 0.0]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        render(_maps(), mode="fancy")
    with pytest.raises(ValueError, match=r"\(B, L, h, w\)"):
        render(torch.rand(4, 4))
    with pytest.raises(ValueError, match="images must be"):
        render(_maps(B=2), images=torch.zeros(3, 3, 8, 8, dtype=torch.uint8))
