"""Trust metrics: each batched metric against a straightforward per-image version and known answers."""
import copy
import math

import numpy as np
import pytest
import torch

from daam_fast import DAAM, metrics as M
from tests.models import tiny_vit

stats = pytest.importorskip("scipy.stats")
ndimage = pytest.importorskip("scipy.ndimage")


def _maps(B=5, h=7, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(B, h, w, generator=g)
    return torch.relu(m - 0.4)                     # ReLU-like: ties at zero


# ---------------------------------------------------------------------------------- complexity
def test_sparseness_and_complexity_known_answers():
    M_ = 7 * 9
    one_hot = torch.zeros(1, 7, 9)
    one_hot[0, 3, 4] = 5.0
    const = torch.full((1, 7, 9), 0.2)
    zero = torch.zeros(1, 7, 9)
    assert M.sparseness(one_hot).item() == pytest.approx((M_ - 1) / M_, abs=1e-7)
    assert M.sparseness(const).item() == pytest.approx(0.0, abs=1e-7)
    assert M.sparseness(zero).item() == 0.0
    assert M.complexity(one_hot).item() == pytest.approx(0.0, abs=1e-7)
    assert M.complexity(const).item() == pytest.approx(math.log(M_), rel=1e-6)
    assert math.isnan(M.complexity(zero).item())
    # scale-free, sign-free
    m = _maps()
    assert torch.allclose(M.sparseness(3 * m), M.sparseness(-m), atol=1e-6)
    assert torch.allclose(M.complexity(3 * m), M.complexity(-m), atol=1e-6)


def test_sparseness_and_complexity_equal_per_image_reference():
    m = _maps(seed=1) - 0.05
    for i in range(m.shape[0]):
        a = np.sort(np.abs(m[i].numpy().astype(np.float64).ravel()))
        n = a.size
        gini = sum((2 * (k + 1) - n - 1) * a[k] for k in range(n)) / (n * a.sum())
        p = np.abs(m[i].numpy().astype(np.float64).ravel()) / np.abs(m[i].numpy()).sum()
        ent = -sum(q * math.log(q) for q in p if q > 0)
        assert M.sparseness(m)[i].item() == pytest.approx(gini, abs=1e-6)
        assert M.complexity(m)[i].item() == pytest.approx(ent, abs=1e-5)


# ---------------------------------------------------------------------------------- similarity
def test_spearman_equals_scipy_with_ties():
    a, b = _maps(seed=2), _maps(seed=3)
    got = M.spearman(a, b)
    for i in range(a.shape[0]):
        ref = stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert got[i].item() == pytest.approx(ref, abs=1e-5)
    assert torch.allclose(M.spearman(a, a), torch.ones(a.shape[0]))
    assert torch.isnan(M.spearman(torch.ones(1, 7, 9), a[:1])).all()


def _ssim_reference(a, b, win=7, k1=0.01, k2=0.03):
    """skimage's structural_similarity written out: uniform window, sample covariance, interior mean."""
    a = (a - a.min()) / (a.max() - a.min())
    b = (b - b.min()) / (b.max() - b.min())
    H, W = a.shape
    c1, c2, n = k1 ** 2, k2 ** 2, win * win
    vals = []
    for y in range(H - win + 1):
        for x in range(W - win + 1):
            pa, pb = a[y:y + win, x:x + win].ravel(), b[y:y + win, x:x + win].ravel()
            ma, mb = pa.mean(), pb.mean()
            va, vb = pa.var(ddof=1), pb.var(ddof=1)
            cov = ((pa - ma) * (pb - mb)).sum() / (n - 1)
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_equals_reference_and_identity():
    a, b = torch.rand(3, 12, 10, dtype=torch.float64).float(), torch.rand(3, 12, 10).float()
    got = M.ssim(a, b)
    for i in range(3):
        assert got[i].item() == pytest.approx(_ssim_reference(a[i].double().numpy(), b[i].double().numpy()), abs=1e-5)
    assert torch.allclose(M.ssim(a, a), torch.ones(3), atol=1e-6)
    assert M.ssim(a, 1 - a).mean() < 0                       # an inverted map is anti-similar
    with pytest.raises(ValueError, match="win_size"):
        M.ssim(torch.rand(1, 5, 5), torch.rand(1, 5, 5))


def test_topk_intersection():
    a = torch.arange(20.0).view(1, 4, 5)
    assert M.topk_intersection(a, a, 5).item() == 1.0
    assert M.topk_intersection(a, -a, 5).item() == 0.0
    b = a.clone()
    b[0, 3, 4] = -1                                           # the top cell drops out: 4 of 5 remain
    assert M.topk_intersection(a, b, 5).item() == pytest.approx(0.8)
    with pytest.raises(ValueError, match="k must"):
        M.topk_intersection(a, a, 0)


# ---------------------------------------------------------------------------------- MaxBoxAccV2 and PxAP
def _box_ious_reference(maps, gt, size, thresholds):
    """Per image and threshold: upsample, min-max, threshold, scipy components, largest one's box, IoU."""
    up = M.upsample(maps, size)
    out = np.zeros((maps.shape[0], len(thresholds)))
    for i in range(maps.shape[0]):
        s = up[i].double().numpy()
        n = (s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.zeros_like(s)
        for j, t in enumerate(thresholds):
            keep = (n >= t) & (n > 0)
            lab, k = ndimage.label(keep, structure=np.ones((3, 3)))
            if k == 0:
                box = [0, 0, 0, 0]
            else:
                sizes = [(lab == c).sum() for c in range(1, k + 1)]
                best = max(range(k), key=lambda c: (sizes[c], -np.flatnonzero(lab == c + 1).max()))
                ys, xs = np.nonzero(lab == best + 1)
                box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            x0, y0, x1, y1 = gt[i].tolist()
            iw = max(0, min(box[2], x1) - max(box[0], x0))
            ih = max(0, min(box[3], y1) - max(box[1], y0))
            inter = iw * ih
            union = (box[2] - box[0]) * (box[3] - box[1]) + (x1 - x0) * (y1 - y0) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def test_box_ious_and_max_box_acc_equal_reference():
    maps = _maps(B=4, h=6, w=6, seed=4)
    gt = torch.tensor([[0, 0, 12, 12], [6, 6, 24, 24], [0, 12, 24, 24], [3, 3, 9, 20]], dtype=torch.float32)
    th = [0.0, 0.2, 0.4, 0.6, 0.8]
    got = M.box_ious(maps, gt, (24, 24), th)
    ref = _box_ious_reference(maps, gt, (24, 24), th)
    assert np.allclose(got.numpy(), ref, atol=1e-6)
    res = M.max_box_acc(maps, gt, (24, 24), thresholds=th)
    for d, delta in enumerate((0.3, 0.5, 0.7)):
        acc = (ref >= delta).mean(axis=0)
        assert res.per_iou[d].item() == pytest.approx(acc.max())
        assert res.best_threshold[d].item() == pytest.approx(th[int(acc.argmax())])
    assert res.value.item() == pytest.approx(res.per_iou.mean().item())
    assert res.hits.mean().item() == pytest.approx(res.value.item(), abs=1e-6)


def test_max_box_acc_known_answers():
    maps = torch.zeros(3, 16, 16)
    gt = torch.tensor([[2, 3, 10, 12], [0, 0, 16, 9], [5, 5, 6, 6]], dtype=torch.float32)
    for i, (x0, y0, x1, y1) in enumerate(gt.long().tolist()):
        maps[i, y0:y1, x0:x1] = 1.0 + i
    res = M.max_box_acc(maps, gt, (16, 16))
    assert res.value.item() == 1.0 and (res.ious[:, 1:] == 1).all()     # the box of a rectangular map is the rectangle
    flat = M.max_box_acc(torch.ones(2, 4, 4), gt[:2] * 0 + torch.tensor([0, 0, 8, 8.0]), (16, 16))
    assert flat.value.item() == 0.0                                      # a constant map gives no box


def _ap_reference(scores, positive):
    """AP over the distinct score levels, high to low: sum of precision x recall gained."""
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    levels = np.unique(s)[::-1]
    ap, prev = 0.0, 0.0
    for v in levels:
        k = (s >= v)
        tp = p[k].sum()
        rec = tp / p.sum()
        ap += tp / k.sum() * (rec - prev)
        prev = rec
    return ap


def test_pxap_equals_reference():
    maps = _maps(B=3, h=5, w=5, seed=6)
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[0, :5, :5] = True
    masks[1, 2:9, 3:7] = True
    masks[2, 9, 9] = True
    res = M.pxap(maps, masks, thresholds=10)
    n = M.upsample(maps, (10, 10))
    lo, hi = n.amin(dim=(1, 2), keepdim=True), n.amax(dim=(1, 2), keepdim=True)
    n = ((n - lo) / (hi - lo)).double()
    for i in range(3):
        assert res.per_image[i].item() == pytest.approx(_ap_reference(n[i].flatten().numpy(), masks[i].flatten().numpy()),
                                                        abs=1e-5)
    # pooled, Choe et al.'s histogram form, written out
    edges = [1.0] + [k / 10 for k in range(9, -1, -1)]
    prev, val = 0.0, 0.0
    for e in edges:
        tp = ((n >= e - 1e-12) & masks).sum().item()
        fp = ((n >= e - 1e-12) & ~masks).sum().item()
        rec = tp / masks.sum().item()
        val += (tp / (tp + fp) if tp + fp else 1.0) * (rec - prev)
        prev = rec
    assert res.pxap.item() == pytest.approx(val, abs=1e-5)
    perfect = M.pxap(masks.float(), masks)                               # the mask as its own map: AP 1
    assert perfect.pxap.item() == 1.0 and torch.allclose(perfect.per_image, torch.ones(3, dtype=torch.float32))


# ---------------------------------------------------------------------------------- robustness
def _recording(explain):
    seen = []

    def f(model, x, t):
        seen.append((x.clone(), t.clone()))
        return explain(model, x, t)
    return f, seen


def _pool_explain(model, x, t):
    """Model-free explainer: the absolute input, pooled to a 4x4 grid (a known, input-dependent map)."""
    return torch.nn.functional.avg_pool2d(x.abs().mean(1, keepdim=True), 8)[:, 0] + 0.01 * t.view(-1, 1, 1)


def test_robustness_equals_per_image_reference():
    x = torch.randn(3, 3, 32, 32)
    t = torch.tensor([0, 1, 2])
    f, seen = _recording(_pool_explain)
    res = M.robustness(None, f, x, t, samples=4, sigma=0.2, batch_size=5)
    X = torch.cat([s[0] for s in seen])[3:].view(3, 4, 3, 32, 32)         # the noisy inputs, image-major
    for i in range(3):
        e0 = _pool_explain(None, x[i:i + 1], t[i:i + 1])[0]
        e0 = e0 / e0.abs().max()
        sens, lip = [], []
        for j in range(4):
            e = _pool_explain(None, X[i, j:j + 1], t[i:i + 1])[0]
            e = e / e.abs().max()
            d = (e - e0).norm()
            sens.append(d / e0.norm())
            lip.append(d / (X[i, j] - x[i]).norm())
        assert res.max_sensitivity[i].item() == pytest.approx(max(sens).item(), rel=1e-4)
        assert res.local_lipschitz[i].item() == pytest.approx(max(lip).item(), rel=1e-4)
    noise = (X - x[:, None]).flatten(2)
    assert abs(noise.std().item() - 0.2) < 0.01                          # the noise has the asked std
    assert torch.equal(torch.cat([s[1] for s in seen])[3:], t.repeat_interleave(4))   # each copy keeps its target


def test_robustness_known_answers():
    x = torch.randn(2, 3, 16, 16)
    const = lambda m, xx, t: torch.ones(xx.shape[0], 2, 2)               # noqa: E731
    r = M.robustness(None, const, x, 0, samples=3)
    assert (r.max_sensitivity == 0).all() and (r.local_lipschitz == 0).all()
    assert torch.allclose(M.max_sensitivity(None, _pool_explain, x, 0, samples=2, seed=1),
                          M.robustness(None, _pool_explain, x, 0, samples=2, seed=1).max_sensitivity)


def test_photometric_copies_and_stability():
    x = torch.rand(2, 3, 8, 8)
    c = M.photometric_copies(x, brightness=(0.1,), contrast=(1.0, 0.0))
    assert torch.allclose(c[:, 0], x + 0.1) and torch.allclose(c[:, 1], x)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean(dim=(1, 2))
    assert torch.allclose(c[:, 2], grey.view(2, 1, 1, 1).expand(2, 3, 8, 8))    # contrast 0: the mean grey
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    cn = M.photometric_copies((x - 0.5) / 0.25, brightness=(0.9,), contrast=(), mean=mean, std=std)
    assert torch.allclose(cn[:, 0] * 0.25 + 0.5, (x + 0.9).clamp(0, 1), atol=1e-6)   # clipped to white
    # stability: a brightness-invariant explainer scores 1; copies that change the prediction are dropped
    inv = lambda m, xx, t: (xx - xx.mean(dim=(1, 2, 3), keepdim=True))[:, 0, ::2, ::2]   # noqa: E731
    logits = lambda xx: torch.stack([xx.mean(dim=(1, 2, 3)), torch.zeros(xx.shape[0])], 1)  # noqa: E731
    xs = torch.randn(3, 3, 8, 8) * 0.1
    xs[0] += 0.05                                                       # class 0 unless darkened by 0.1
    xs[1:] -= 0.5                                                        # class 1 whatever the change
    s = M.stability(None, inv, xs, torch.zeros(3, dtype=torch.long), predict=logits, brightness=(-0.1, 0.1),
                    contrast=())
    assert s.kept.tolist() == [[False, True], [True, True], [True, True]]
    assert torch.isnan(s.per_copy[0, 0]) and torch.allclose(s.score, torch.ones(3), atol=1e-5)


# ---------------------------------------------------------------------------------- randomisation
def _daam(model, x, t):
    return DAAM(model)(x, target=t).final


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return tiny_vit(), torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])


def test_randomisation_layers_of_a_vit(tiny):
    model, _, _ = tiny
    layers = M.randomisation_layers(model)
    assert [n for n, _ in layers] == ["head", "block 3", "block 2", "block 1", "embedding"]
    names = [p for _, ps in layers for p in ps]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())      # every parameter, once
    assert set(dict(layers)["head"]) == {"norm.weight", "norm.bias", "head.weight", "head.bias"}


def test_randomisation_daam(tiny, monkeypatch):
    model, x, t = tiny
    before = copy.deepcopy(model.state_dict())
    copies = []
    real = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda o, *a: copies.append(1) or real(o, *a))
    r = M.randomisation(model, _daam, x, t, size=(32, 32), batch_size=3)
    monkeypatch.undo()
    assert len(copies) == 1                                                    # one copy, re-randomised in place
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())   # the model is untouched
    assert r.steps == ["original", "head", "block 3", "block 2", "block 1", "embedding"]
    for s in ("spearman", "ssim", "topk"):
        assert r.cascading[s].shape == (4, 6) and r.independent[s].shape == (4, 5)
        assert torch.allclose(r.cascading[s][:, 0], torch.ones(4), atol=1e-5)   # identical maps: similarity 1
        # independent step "head" and cascading step "head" randomise the same weights the same way
        assert torch.allclose(r.cascading[s][:, 1], r.independent[s][:, 0], atol=1e-5)
    assert r.cascading["spearman"][:, -1].mean() < 0.5                        # DAAM depends on the weights


def test_randomisation_equals_per_step_reference(tiny):
    """Cascading step j equals explaining a fresh copy whose first j layers were re-drawn, per image."""
    model, x, t = tiny
    r = M.randomisation(model, _daam, x, t, modes=("cascading",), similarities=("spearman", "topk"), topk=0.25)
    ref0 = _daam(model, x, t)
    layers = M.randomisation_layers(model)
    for j in (2, 4):
        m = copy.deepcopy(model)
        p = dict(m.named_parameters())
        for i, (_, names) in enumerate(layers[:j]):
            M.randomise_([p[n] for n in names], i)
        maps = _daam(m, x, t)
        for i in range(4):
            rho = stats.spearmanr(maps[i].flatten().numpy(), ref0[i].flatten().numpy()).statistic
            assert r.cascading["spearman"][i, j].item() == pytest.approx(rho, abs=1e-4)
            top_a = set(torch.argsort(maps[i].flatten(), descending=True)[:4].tolist())
            top_b = set(torch.argsort(ref0[i].flatten(), descending=True)[:4].tolist())
            if len(set(maps[i].flatten().tolist())) == 16:                    # no ties: plain sets agree
                assert r.cascading["topk"][i, j].item() == pytest.approx(len(top_a & top_b) / 4)


def test_randomisation_of_a_model_free_map_fails_the_check(tiny):
    model, x, t = tiny
    r = M.randomisation(model, _pool_explain, x, t, modes=("independent",))
    assert r.steps == [] and r.cascading == {}
    for s in ("spearman", "ssim", "topk"):
        assert torch.allclose(r.independent[s], torch.ones_like(r.independent[s]), atol=1e-5)


def test_randomisation_bad_input(tiny):
    model, x, t = tiny
    with pytest.raises(ValueError, match="modes"):
        M.randomisation(model, _daam, x, t, modes=("both",))
    with pytest.raises(ValueError, match="similarities"):
        M.randomisation(model, _daam, x, t, similarities=("pearson",))


def test_stability_equals_per_image_reference():
    x = torch.randn(3, 3, 16, 16)
    t = torch.tensor([2, 0, 1])
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    w = torch.randn(3 * 16 * 16, 3, generator=torch.Generator().manual_seed(0))
    predict = lambda xx: xx.flatten(1) @ w                                      # noqa: E731
    s = M.stability(None, _pool_explain, x, t, predict=predict, mean=mean, std=std, batch_size=4)
    m, sd = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    for i in range(3):
        p = x[i] * sd + m
        grey = (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]).mean()
        copies = [p - 0.1, p + 0.1, 0.8 * (p - grey) + grey, 1.2 * (p - grey) + grey]
        e0 = _pool_explain(None, x[i:i + 1], t[i:i + 1])[0].flatten().numpy()
        rhos = []
        for j, c in enumerate(copies):
            xc = ((c.clamp(0, 1) - m) / sd)[None]
            kept = predict(xc).argmax(1) == predict(x[i:i + 1]).argmax(1)
            assert bool(s.kept[i, j]) == bool(kept)
            if kept:
                e = _pool_explain(None, xc, t[i:i + 1])[0].flatten().numpy()
                rhos.append(stats.spearmanr(e0, e).statistic)
        if rhos:
            assert s.score[i].item() == pytest.approx(float(np.mean(rhos)), abs=1e-5)
        else:
            assert math.isnan(s.score[i].item())


def test_randomisation_layers_of_other_families():
    """torchvision's ViT: conv_proj / class_token / pos_embedding are the embedding, encoder.ln + heads the head."""
    tv = pytest.importorskip("torchvision.models.vision_transformer")
    model = tv.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                                 num_classes=3).eval()
    layers = dict(M.randomisation_layers(model))
    assert list(layers) == ["head", "block 2", "block 1", "embedding"]
    assert set(layers["embedding"]) == {"class_token", "conv_proj.weight", "conv_proj.bias", "encoder.pos_embedding"}
    assert set(layers["head"]) == {"encoder.ln.weight", "encoder.ln.bias", "heads.head.weight", "heads.head.bias"}
    assert sum(len(v) for v in layers.values()) == len(list(model.named_parameters()))
