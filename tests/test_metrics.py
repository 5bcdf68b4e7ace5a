"""Every metric on hand-made cases whose answer is worked out in the comments."""
import math

import pytest
import torch

from daam_fast import metrics


class RegionModel(torch.nn.Module):
    """Class-0 probability = fraction of the region's pixels still at their original value 1.

    Logits are [log p, log(1 - p)], so softmax gives back p exactly (score="prob").
    """

    def __init__(self, region):
        super().__init__()
        self.region = region                           # (H, W) bool

    def forward(self, x):
        p = (x[:, 0][:, self.region] == 1).float().mean(dim=1)
        return torch.stack([p.clamp_min(1e-30).log(), (1 - p).clamp_min(1e-30).log()], dim=1)


def _region_4x4():
    r = torch.zeros(4, 4, dtype=torch.bool)
    r[:2, :2] = True                                    # 4 of 16 pixels
    return r


def test_deletion_insertion_known_auc_pixel_order():
    region = _region_4x4()
    model = RegionModel(region)
    x = torch.ones(2, 1, 4, 4)
    good = region.float() + 0.01 * torch.arange(16.0).view(4, 4)   # region first
    bad = 1 - region.float() + 0.01 * torch.arange(16.0).view(4, 4)  # region last
    sal = torch.stack([good, bad])
    d = metrics.deletion(model, x, sal, 0, steps=16, baseline="zero")
    i = metrics.insertion(model, x, sal, 0, steps=16, baseline="zero")
    # good deletion: 1, .75, .5, .25, 0, ... -> (1/16) * (2.5 - 0.5) = 0.125 (= area of the triangle 1/4 * 1/2)
    assert torch.allclose(d.curve[0, :6], torch.tensor([1, .75, .5, .25, 0, 0]))
    assert torch.allclose(d.auc, torch.tensor([0.125, 0.875]))
    # insertion is the mirror: good 0.875, bad 0.125
    assert torch.allclose(i.auc, torch.tensor([0.875, 0.125]))
    assert torch.allclose(d.fractions, torch.linspace(0, 1, 17))
    # the chunking of perturbed images into forward passes does not change the curve
    d2 = metrics.deletion(model, x, sal, 0, steps=16, baseline="zero", batch_size=5)
    assert torch.equal(d2.curve, d.curve)


def test_deletion_patch_order_and_uneven_steps():
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[:4, 4:] = True                               # the top-right 4x4 patch of a 2x2 grid
    model = RegionModel(region)
    x = torch.ones(2, 1, 8, 8)
    sal = torch.tensor([[[0.5, 0.9], [0.1, 0.2]],      # region ranked first
                        [[0.9, 0.5], [0.1, 0.2]]])     # region ranked second
    d = metrics.deletion(model, x, sal, 0, steps=4, order="patch", baseline="zero")
    # first: 1, 0, 0, 0, 0 -> 0.25 * 0.5 = 0.125; second: 1, 1, 0, 0, 0 -> 0.25 * 1.5 = 0.375
    assert torch.allclose(d.curve, torch.tensor([[1., 0, 0, 0, 0], [1, 1, 0, 0, 0]]))
    assert torch.allclose(d.auc, torch.tensor([0.125, 0.375]))
    # 3 steps over 4 patches: k = round(0, 4/3, 8/3, 4) = 0, 1, 3, 4
    d3 = metrics.deletion(model, x, sal, 0, steps=3, order="patch", baseline="zero")
    assert torch.allclose(d3.fractions, torch.tensor([0, .25, .75, 1]))
    assert torch.allclose(d3.auc, metrics.auc(d3.curve, d3.fractions))
    with pytest.raises(ValueError, match="does not divide"):
        metrics.deletion(model, x, torch.rand(2, 3, 3), 0, order="patch")
    with pytest.raises(ValueError, match="exceeds"):
        metrics.deletion(model, x, sal, 0, steps=5, order="patch")


def test_auc_trapezoid():
    c = torch.tensor([[0., 1., 1.], [1., 1., 1.]])
    assert torch.allclose(metrics.auc(c), torch.tensor([0.75, 1.0]))
    assert torch.allclose(metrics.auc(c, torch.tensor([0., 0.1, 1.])), torch.tensor([0.95, 1.0]))


def test_ties_broken_by_one_fixed_random_order():
    sal = torch.zeros(3, 4, 4)
    sal[1, 0, 0] = 1.0
    ranks, M = metrics.perturbation_ranks(sal, (4, 4))
    assert M == 16
    for r in ranks:
        assert torch.equal(r.flatten().sort().values, torch.arange(16))     # a permutation
    assert torch.equal(ranks[0], ranks[2])                                   # same order for every image
    assert ranks[1, 0, 0] == 0                                               # a strict maximum goes first
    raster = torch.arange(16).view(4, 4)
    assert not torch.equal(ranks[0], raster)                                 # ties are not in raster order
    other, _ = metrics.perturbation_ranks(sal, (4, 4), tie_seed=1)
    assert not torch.equal(other[0], ranks[0])


def test_baselines_of_perturbation():
    x = torch.zeros(1, 2, 9, 9)
    x[0, 0, 4, 4] = 1.0
    x[0, 1] = 3.0
    b = metrics.make_baseline(x, "blur", sigma=1.0)
    assert torch.allclose(b[0, 1], torch.full((9, 9), 3.0))                 # constant stays constant
    assert math.isclose(b[0, 0].sum().item(), 1.0, rel_tol=1e-5)            # mass kept (centre, no border)
    assert torch.allclose(b[0, 0], b[0, 0].flip(0)) and torch.allclose(b[0, 0], b[0, 0].T)
    assert b[0, 0, 4, 4] < 1.0
    m = metrics.make_baseline(x, "mean")
    assert torch.allclose(m[0, 0], torch.full((9, 9), 1 / 81)) and torch.allclose(m[0, 1], torch.full((9, 9), 3.0))
    assert torch.equal(metrics.make_baseline(x, "zero"), torch.zeros_like(x))
    assert torch.equal(metrics.make_baseline(x, torch.tensor([1.0, 2.0]).view(1, 2, 1, 1))[0, 1], torch.full((9, 9), 2.0))
    with pytest.raises(ValueError, match="baseline"):
        metrics.make_baseline(x, "noise")


class HalvesModel(torch.nn.Module):
    """p(class 0) = 0.5 + 0.5 * (mean of the left half - mean of the right half), channel 0."""

    def forward(self, x):
        W = x.shape[-1]
        p = (0.5 + 0.5 * (x[:, 0, :, :W // 2].mean(dim=(1, 2)) - x[:, 0, :, W // 2:].mean(dim=(1, 2)))).clamp(0, 1)
        return torch.stack([p.clamp_min(1e-30).log(), (1 - p).clamp_min(1e-30).log()], dim=1)


def test_average_drop_and_increase_known():
    x = torch.ones(3, 1, 4, 4)
    left = torch.zeros(4, 4)
    left[:, :2] = 2.0                                   # min-max -> 1 on the left, 0 on the right
    sal = torch.stack([left, left.flip(1), torch.full((4, 4), 5.0)])
    cc = metrics.confidence_change(HalvesModel(), x, sal, 0)
    # Y = 0.5 for all. Left kept: O = 1 -> drop 0, increase. Right kept: O = 0 -> drop 1.
    # Constant map: E = 0 -> x' = 0 -> O = 0.5 -> drop 0, no increase (O == Y).
    assert torch.allclose(cc.score, torch.full((3,), 0.5))
    assert torch.allclose(cc.masked_score, torch.tensor([1.0, 0.0, 0.5]), atol=1e-6)
    assert torch.allclose(cc.drop, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert cc.increase.tolist() == [True, False, False]
    # a map at the patch grid is upsampled first: (1, 2) grid -> left / right halves of 4 px
    cc2 = metrics.confidence_change(HalvesModel(), x[:1], torch.tensor([[[3.0, 0.0]]]), 0)
    assert 0.5 < cc2.masked_score.item() < 1.0 and cc2.increase.item()


def test_pointing_game_known():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4, :4] = True
    masks = torch.stack([mask, mask, mask, mask, torch.zeros(8, 8, dtype=torch.bool)])
    sal = torch.zeros(5, 8, 8)
    sal[0, 1, 1] = 1                                    # inside -> hit
    sal[1, 6, 6] = 1                                    # outside -> miss
    sal[2] = 0.3                                        # constant -> points nowhere: miss
    sal[3, 5, 5] = 1                                    # 2.83 px from the mask corner (3, 3)
    sal[4, 0, 0] = 1                                    # empty mask -> NaN
    hit = metrics.pointing_game(sal, masks)
    assert hit[:4].tolist() == [1.0, 0.0, 0.0, 0.0] and math.isnan(hit[4])
    assert metrics.pointing_game(sal[3:4], masks[3:4], tolerance=2.0).item() == 0.0
    assert metrics.pointing_game(sal[3:4], masks[3:4], tolerance=3.0).item() == 1.0
    # a (2, 2) patch map is upsampled: its maximum cell maps onto the top-left quadrant
    coarse = torch.tensor([[[0.9, 0.1], [0.2, 0.3]], [[0.1, 0.2], [0.3, 0.9]]])
    assert metrics.pointing_game(coarse, masks[:2]).tolist() == [1.0, 0.0]
    # per-block input (B, L, h, w) -> (B, L)
    assert metrics.pointing_game(coarse[:, None].expand(2, 3, 2, 2), masks[:2]).tolist() == [[1.0] * 3, [0.0] * 3]


def test_energy_pointing_game_known():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True
    masks = torch.stack([mask] * 4)
    sal = torch.ones(4, 4, 4)
    sal[0][mask] = 3.0                                  # 4 * 3 inside, 12 * 1 outside -> 12 / 24
    sal[2] = 0.0                                        # no energy at all -> 0
    sal[3][~mask] = -5.0                                # negative values are clipped -> 1
    e = metrics.energy_pointing_game(sal, masks)
    assert torch.allclose(e, torch.tensor([0.5, 0.25, 0.0, 1.0]))          # uniform -> area fraction 4/16
    per_block = metrics.energy_pointing_game(torch.stack([sal, sal], dim=1), masks)
    assert per_block.shape == (4, 2) and torch.allclose(per_block[:, 1], e)
    empty = metrics.energy_pointing_game(sal[:1], torch.zeros(1, 4, 4, dtype=torch.bool))
    assert math.isnan(empty.item())
    # float 0/1 masks work too, and maps at the patch grid are upsampled to the mask size
    e2 = metrics.energy_pointing_game(torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]), mask[None].float())
    assert 0.5 < e2.item() <= 1.0


def test_boxes_to_masks_known():
    boxes = torch.tensor([[[0, 0, 2, 3], [5, 5, 5, 9]],          # second box is empty (x1 <= x0): padding
                          [[1.5, 0, 4, 1], [0, 3, 1, 4]]])
    m = metrics.boxes_to_masks(boxes, (4, 4))
    e0 = torch.zeros(4, 4, dtype=torch.bool)
    e0[:3, :2] = True
    e1 = torch.zeros(4, 4, dtype=torch.bool)
    e1[0, 2:] = True                                     # pixel centre 1.5 is inside [1.5, 4): column 1 too
    e1[0, 1] = True
    e1[3, 0] = True
    assert torch.equal(m[0], e0) and torch.equal(m[1], e1)
    assert torch.equal(metrics.boxes_to_masks(torch.tensor([[0, 0, 2, 3]]), (4, 4))[0], e0)
    with pytest.raises(ValueError, match="boxes"):
        metrics.boxes_to_masks(torch.zeros(2, 3), (4, 4))


def test_bad_inputs_raise_clearly():
    model = RegionModel(_region_4x4())
    x = torch.ones(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        metrics.deletion(model, x, torch.rand(2, 1, 4, 4), 0)
    with pytest.raises(ValueError, match="2 images"):
        metrics.deletion(model, x, torch.rand(3, 4, 4), 0)
    with pytest.raises(ValueError, match="NaN"):
        metrics.insertion(model, x, torch.full((2, 4, 4), float("nan")), 0)
    with pytest.raises(ValueError, match="order"):
        metrics.deletion(model, x, torch.rand(2, 4, 4), 0, order="random")
    with pytest.raises(ValueError, match="mode"):
        metrics.perturbation_curve(model, x, torch.rand(2, 4, 4), 0, mode="both")
    with pytest.raises(ValueError, match="targets"):
        metrics.deletion(model, x, torch.rand(2, 4, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="masks"):
        metrics.pointing_game(torch.rand(2, 4, 4), torch.ones(3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(torch.rand(2, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool), tolerance=-1)
    with pytest.raises(ValueError, match="images"):
        metrics.deletion(model, torch.ones(2, 4, 4), torch.rand(2, 4, 4), 0)


def test_on_a_real_model_a_good_map_beats_its_inverse():
    """Sanity on the tiny ViT: the map built from the model's own gradient beats its negation."""
    from models import tiny_vit
    model = tiny_vit()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    t = out.argmax(1)
    (g,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), xg)
    sal = (g * x).sum(1)                                     # input x gradient, (B, 32, 32)
    d_good = metrics.deletion(model, x, sal, t, steps=8, baseline="mean", score="logit").auc
    d_bad = metrics.deletion(model, x, -sal, t, steps=8, baseline="mean", score="logit").auc
    assert (d_good < d_bad).all()


def test_public_names_documented():
    import inspect
    from daam_fast import baselines, evaluate
    for mod in (metrics, baselines, evaluate):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj):
                assert inspect.getdoc(obj) and len(inspect.getdoc(obj)) > 40, f"{mod.__name__}.{name}"
    for fn in (metrics.deletion, metrics.pointing_game, metrics.energy_pointing_game, metrics.confidence_change):
        assert "(B, h, w)" in inspect.getdoc(fn)
