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
