"""daam_fast.boxes: batched connected components and boxes against scipy's labelling per image, and known answers."""
import numpy as np
import pytest
import torch

from daam_fast.boxes import (box_iou, boxes_from_maps, boxes_from_masks, boxes_over_thresholds, connected_components,
                             masks_to_boxes)
from daam_fast.metrics import boxes_to_masks

ndimage = pytest.importorskip("scipy.ndimage")


def _blobs(n, H, W, seed, p=0.45):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, H // 4 + 1, W // 4 + 1, generator=g)
    up = torch.nn.functional.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    return up + 0.15 * torch.rand(n, H, W, generator=g) > 1 - p


def _same_partition(lab_t, lab_s):
    """Two labellings describe the same components (labels differ, the partition must not)."""
    a, b = lab_t.flatten(), lab_s.flatten()
    assert ((a >= 0) == (b > 0)).all()
    pairs = {(int(x), int(y)) for x, y in zip(a[a >= 0], b[b > 0])}
    assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs}), "components merged or split"


@pytest.mark.parametrize("connectivity", [8, 4])
@pytest.mark.parametrize("H,W", [(17, 23), (32, 32)], ids=["odd-17x23", "square-32"])
def test_components_equal_scipy_per_image(connectivity, H, W):
    """Spiral-free random blobs: the batched labels split the pixels exactly as scipy.ndimage.label."""
    masks = _blobs(6, H, W, seed=H + connectivity)
    lab = connected_components(masks, connectivity)
    structure = np.ones((3, 3)) if connectivity == 8 else None
    for i in range(masks.shape[0]):
        ref, _ = ndimage.label(masks[i].numpy(), structure=structure)
        _same_partition(lab[i], torch.from_numpy(ref))
        # each component is labelled by its largest flat index
        for v in lab[i].unique():
            if v >= 0:
                assert int((lab[i].flatten() == v).nonzero().max()) == int(v)


def test_components_snake_needs_many_steps():
    """A one-pixel-wide serpentine (the slowest case for propagation) is one component."""
    H, W = 21, 21
    m = torch.zeros(1, H, W, dtype=torch.bool)
    for r in range(0, H, 2):
        m[0, r] = True
        m[0, r + 1 if r + 1 < H else r, (W - 1) if (r // 2) % 2 == 0 else 0] = True
    lab = connected_components(m, 4)
    ref, k = ndimage.label(m[0].numpy())
    assert k == 1 and lab[0][m[0]].unique().numel() == 1


def _box_reference(mask, k):
    """Per image: scipy components, the k largest (ties: the component whose largest flat index is smaller)."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    comps = []
    for c in range(1, n + 1):
        ys, xs = np.nonzero(lab == c)
        comps.append((-len(ys), int((ys * mask.shape[1] + xs).max()), [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]))
    comps.sort()
    out = [c[2] for c in comps[:k]]
    return out + [[0, 0, 0, 0]] * (k - len(out))


def test_boxes_from_masks_equal_reference():
    masks = _blobs(8, 24, 19, seed=5, p=0.35)
    for k in (None, 3):
        got = boxes_from_masks(masks, k)
        for i in range(masks.shape[0]):
            ref = _box_reference(masks[i].numpy(), k or 1)
            assert got[i].reshape(-1, 4).tolist() == [[float(v) for v in b] for b in ref]


def test_box_of_a_rectangular_map_is_the_rectangle():
    maps = torch.zeros(3, 40, 30)
    rects = [(3, 5, 17, 12), (0, 0, 30, 40), (29, 39, 30, 40)]            # x0, y0, x1, y1 (exclusive)
    for i, (x0, y0, x1, y1) in enumerate(rects):
        maps[i, y0:y1, x0:x1] = 2.0 + i
    boxes = boxes_from_maps(maps, 0.5)
    assert boxes.tolist() == [list(map(float, r)) for r in rects]
    assert torch.equal(boxes_to_masks(boxes, (40, 30)), maps > 0)           # the box covers the rectangle exactly
    assert torch.equal(masks_to_boxes(maps > 0), boxes)


def test_boxes_scale_to_the_image_size():
    """A rectangle on an 8x8 grid, upsampled x8 (bilinear), thresholded at half its maximum: the same rectangle x8."""
    maps = torch.zeros(2, 8, 8)
    maps[0, 2:5, 1:4] = 1.0
    maps[1, 0:8, 6:8] = 3.0
    boxes = boxes_from_maps(maps, 0.5, (64, 64))
    assert boxes.tolist() == [[8.0, 16.0, 32.0, 40.0], [48.0, 0.0, 64.0, 64.0]]


def test_largest_component_and_several_boxes():
    m = torch.zeros(1, 20, 20)
    m[0, 1:3, 1:3] = 1.0             # 4 px
    m[0, 10:15, 10:18] = 0.8          # 40 px, lower values: still above 0.5 max
    m[0, 5:7, 15:20] = 0.3            # below the threshold
    assert boxes_from_maps(m, 0.5).tolist() == [[10.0, 10.0, 18.0, 15.0]]
    three = boxes_from_maps(m, 0.2, max_boxes=3)
    assert three.shape == (1, 3, 4)
    assert three[0].tolist() == [[10.0, 10.0, 18.0, 15.0], [15.0, 5.0, 20.0, 7.0], [1.0, 1.0, 3.0, 3.0]]
    assert boxes_from_maps(m, 0.2, max_boxes=5)[0, 3:].abs().sum() == 0       # padded with empty boxes


def test_diagonal_touch_joins_with_8_not_4():
    m = torch.zeros(1, 6, 6)
    m[0, 0:2, 0:2] = 1.0
    m[0, 2:5, 2:5] = 1.0
    assert boxes_from_maps(m, 0.5).tolist() == [[0.0, 0.0, 5.0, 5.0]]
    assert boxes_from_maps(m, 0.5, connectivity=4).tolist() == [[2.0, 2.0, 5.0, 5.0]]


def test_empty_and_constant_maps():
    maps = torch.stack([torch.zeros(5, 7), -torch.ones(5, 7), torch.full((5, 7), 0.3)])
    assert boxes_from_maps(maps, 0.5).tolist() == [[0.0] * 4, [0.0] * 4, [0.0, 0.0, 7.0, 5.0]]
    assert masks_to_boxes(torch.zeros(1, 4, 4, dtype=torch.bool)).tolist() == [[0.0] * 4]


def test_box_iou_known_answers():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([1.0, 50 / 150, 0.0, 0.0]))


@pytest.mark.parametrize("bad,match", [
    (dict(maps=torch.zeros(4, 4)), r"\(B, h, w\)"),
    (dict(maps=torch.zeros(1, 4, 4), threshold=1.5), "threshold"),
    (dict(maps=torch.full((1, 4, 4), float("nan"))), "NaN"),
    (dict(maps=torch.zeros(1, 4, 4), max_boxes=0), "max_boxes"),
    (dict(maps=torch.zeros(1, 4, 4), connectivity=6), "connectivity"),
])
def test_bad_input(bad, match):
    kw = dict(threshold=0.5)
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        boxes_from_maps(**kw)


@pytest.mark.parametrize("connectivity", [8, 4])
def test_boxes_over_thresholds_equal_one_mask_at_a_time(connectivity):
    """The union-find pass over nested thresholds gives, at every threshold, the box of the largest component."""
    g = torch.Generator().manual_seed(connectivity)
    low = torch.rand(5, 1, 5, 6, generator=g)
    v = torch.nn.functional.interpolate(low, size=(20, 27), mode="bilinear", align_corners=False)[:, 0]
    v = torch.relu(v + 0.1 * torch.rand(5, 20, 27, generator=g) - 0.3)
    v[4] = 0                                                                 # nothing kept at any threshold
    t = torch.tensor([0.0, 0.5, 0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.6, 2.0])   # unsorted on purpose
    got = boxes_over_thresholds(v, t, connectivity)
    for j in range(t.numel()):
        keep = (v >= t[j]) & (v > 0)
        assert torch.equal(got[:, j], boxes_from_masks(keep, connectivity=connectivity)), j
    assert (got[4] == 0).all() and (got[:, -1] == 0).all()
