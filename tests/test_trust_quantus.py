"""Optional: the trust metrics against Quantus (PyPI ``quantus``) on the same inputs; skipped without it.

Where the definitions differ (checked or stated here, also in the docstrings):
- Sparseness (Gini): Quantus adds 1e-7 to every value before the index; ours is exact (one-hot
  map: (M - 1) / M) -> equal to ~1e-6 on ordinary maps.
- Complexity (entropy): Quantus takes log(p + 1e-12); ours skips p = 0 -> equal to ~1e-9 here.
- SSIM: Quantus calls skimage with the pair's data range on the raw maps; ours does the same
  with ``normalise=False``; by default ours min-max normalises each map first (Adebayo et al.).
- Spearman: Quantus's ``correlation_spearman`` per pair = scipy's; ours = scipy's (ties averaged).
- Randomisation (MPRT): Quantus re-initialises layers with ``reset_parameters`` (LayerNorm -> 1 / 0,
  Linear -> Kaiming uniform) in its own layer order; ours re-draws each tensor from a Gaussian with
  the tensor's own mean and std, head -> blocks -> embedding. Not compared number for number.
- Max-sensitivity: Quantus samples uniform noise in [-0.2, 0.2] (200 samples by default), ours Gaussian
  (8 samples by default); same formula max ||e(x+d) - e(x)|| / ||e(x)||, checked on the same maps.
- Local Lipschitz: same formula and Gaussian noise (Quantus std 0.1, 200 samples), checked on the same maps.
- MaxBoxAccV2 (not in Quantus; Choe et al.'s wsolevaluation with OpenCV, written out here): the authors
  threshold the 8-bit map (> int(255 t)), take the largest contour by polygon area and compare
  inclusive boxes clipped to W - 1 with +1 areas; ours thresholds the float map (>= t), takes the
  largest 8-connected component by pixel count, exclusive boxes. On 40 cluttered maps: 0.650 vs 0.658.
"""
import numpy as np
import pytest
import torch

from daam_fast import metrics as M

quantus = pytest.importorskip("quantus")


def _maps(B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.rand(B, 8, 8, generator=g) - 0.3)


def test_sparseness_and_complexity_match_quantus():
    a = _maps()
    x = np.zeros((a.shape[0], 1, 8, 8), dtype=np.float32)
    q_sp = np.asarray(quantus.Sparseness(disable_warnings=True).evaluate_batch(
        x_batch=x, a_batch=a.numpy()[:, None].astype(np.float64).copy()))
    q_cx = np.asarray(quantus.Complexity(disable_warnings=True).evaluate_batch(
        x_batch=x, a_batch=a.numpy()[:, None].astype(np.float64).copy()))
    assert np.allclose(M.sparseness(a).numpy(), q_sp, atol=2e-6)
    assert np.allclose(M.complexity(a).numpy(), q_cx, atol=1e-5)


def test_ssim_and_spearman_match_quantus():
    from quantus.functions.similarity_func import correlation_spearman, ssim
    a, b = torch.rand(4, 16, 16), torch.rand(4, 16, 16)
    ours = M.ssim(a, b, normalise=False).numpy()
    theirs = np.array([ssim(a[i].numpy().astype(np.float64), b[i].numpy().astype(np.float64)) for i in range(4)])
    assert np.allclose(ours, theirs, atol=1e-5)
    rho = np.array([correlation_spearman(a[i].flatten().numpy(), b[i].flatten().numpy()) for i in range(4)])
    assert np.allclose(M.spearman(a, b).numpy(), rho, atol=1e-5)


def test_robustness_formulas_match_quantus_on_the_same_maps():
    """Quantus's norms on the same (map, perturbed map, input, perturbed input) give our scores."""
    from quantus.functions.norm_func import fro_norm
    from quantus.functions.similarity_func import difference, distance_euclidean, lipschitz_constant
    x = torch.randn(2, 3, 16, 16)

    def explain(model, xx, t):
        return torch.nn.functional.avg_pool2d(xx.abs().mean(1, keepdim=True), 4)[:, 0]
    seen = []
    res = M.robustness(None, lambda m, xx, t: seen.append(xx.clone()) or explain(m, xx, t), x, 0, samples=3,
                       normalise=False)
    xs = torch.cat(seen[1:]).view(2, 3, 3, 16, 16)
    for i in range(2):
        a = explain(None, x[i:i + 1], 0)[0].numpy().ravel()
        sens, lip = [], []
        for j in range(3):
            b = explain(None, xs[i, j:j + 1], 0)[0].numpy().ravel()
            sens.append(fro_norm(difference(a, b)) / fro_norm(a))
            lip.append(lipschitz_constant(a, b, x[i].numpy().ravel(), xs[i, j].numpy().ravel(),
                                          norm_numerator=distance_euclidean,
                                          norm_denominator=distance_euclidean))
        assert res.max_sensitivity[i].item() == pytest.approx(max(sens), rel=1e-4)
        assert res.local_lipschitz[i].item() == pytest.approx(max(lip), rel=1e-4)


def test_max_box_acc_close_to_the_authors_opencv_pipeline():
    """MaxBoxAccV2 as Choe et al.'s wsolevaluation computes it (8-bit map, cv2 contours, largest contour area,
    inclusive boxes clipped to W - 1, IoU with +1) against ours on the same maps and boxes: close, not equal
    (ours: float thresholds >= t, the largest 8-connected component by pixel count, exclusive boxes)."""
    cv2 = pytest.importorskip("cv2")
    g = torch.Generator().manual_seed(0)
    B, S = 40, 64
    c = (torch.rand(B, 2, generator=g) * 40 + 10).long()
    r = (torch.rand(B, 2, generator=g) * 12 + 6).long()
    gt = torch.stack([(c[:, 0] - r[:, 0]).clamp_min(0), (c[:, 1] - r[:, 1]).clamp_min(0),
                      (c[:, 0] + r[:, 0]).clamp_max(S), (c[:, 1] + r[:, 1]).clamp_max(S)], 1).float()
    from daam_fast.metrics import boxes_to_masks
    obj = boxes_to_masks(gt, (S, S)).float()[:, None]
    low = torch.rand(B, 1, 8, 8, generator=g)
    noise = torch.nn.functional.interpolate(low, size=(S, S), mode="bilinear", align_corners=False)
    maps = torch.relu(0.5 * torch.nn.functional.avg_pool2d(obj, 9, 1, 4) + noise - 0.6)[:, 0]   # the object + clutter
    thresholds = np.arange(0, 1, 0.01)

    def iou_incl(a, b):
        iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
        ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
        inter = iw * ih
        area = lambda z: (z[2] - z[0] + 1) * (z[3] - z[1] + 1)  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    ious = np.zeros((B, len(thresholds)))
    for i in range(B):
        s = maps[i].numpy()
        s = (s - s.min()) / (s.max() - s.min())
        img = (s * 255).astype(np.uint8)[..., None]
        gt_i = [gt[i, 0].item(), gt[i, 1].item(), gt[i, 2].item() - 1, gt[i, 3].item() - 1]   # inclusive, as theirs
        for j, t in enumerate(thresholds):
            _, thr = cv2.threshold(img, int(t * img.max()), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(thr, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            if not contours:
                box = [0, 0, 0, 0]
            else:
                x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
                box = [x, y, min(x + w, S - 1), min(y + h, S - 1)]
            ious[i, j] = iou_incl(box, gt_i)
    theirs = np.mean([(ious >= d).mean(axis=0).max() for d in (0.3, 0.5, 0.7)])
    ours = M.max_box_acc(maps, gt, (S, S)).value.item()
    print(f"MaxBoxAccV2 ours {ours:.4f}, authors' pipeline {theirs:.4f}")
    assert abs(ours - theirs) <= 0.05, (ours, theirs)
