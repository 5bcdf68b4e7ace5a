"""Dimension-wise importance weights (docs/method.md §4) on hand-made banks."""
import math

import torch

from daam_fast import MemoryBank
from daam_fast.bank import dimension_weights, label_free_weights


def test_knn_vote_and_weights_by_hand():
    # bank: 3 vectors of class 0 near e0, 2 of class 1 near e1; k = 4 neighbours
    feats = torch.tensor([[1.0, 0.1, 0.0], [1.0, 0.0, 0.1], [0.9, 0.2, 0.0], [0.0, 1.0, 0.0], [0.1, 1.0, 0.1]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    bank = MemoryBank.from_features(feats, labels, k=4, temperature=0.07)
    f = torch.tensor([[2.0, 0.4, 0.2]])
    w, c = dimension_weights(f, bank)
    assert c.tolist() == [0]
    fn = f[0] / f[0].norm()
    Z = torch.nn.functional.normalize(feats, dim=1)
    sims = Z @ fn
    top = sims.topk(4).indices.tolist()
    kept = [j for j in top if labels[j] == 0]
    p = sum(fn * Z[j] for j in kept) / len(kept)
    p = p / abs(p.sum())
    p = (p - p.min()) / (p.max() - p.min())
    assert torch.allclose(w[0], p, atol=1e-6)
    assert math.isclose(w.max().item(), 1.0) and math.isclose(w.min().item(), 0.0, abs_tol=1e-7)


def test_vote_uses_exp_similarity_weights():
    # two neighbours of class 1 with modest similarity vs one of class 0 that is very close:
    # exp(s/T) with T=0.07 lets the single close neighbour win
    feats = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    labels = torch.tensor([0, 1, 1])
    bank = MemoryBank(feats, labels, k=3, temperature=0.07)
    _, c = dimension_weights(torch.tensor([[1.0, 0.0]]), bank)
    assert c.tolist() == [0]


def test_degenerate_cases_are_finite():
    bank = MemoryBank(torch.eye(3), torch.tensor([0, 1, 2]), k=2)
    w, _ = dimension_weights(torch.tensor([[1.0, 1.0, 1.0]]), bank)    # ties: still finite
    assert torch.isfinite(w).all()
    w = label_free_weights(torch.tensor([[1.0, 1.0, 1.0, 1.0]]))      # max == min -> all ones
    assert torch.equal(w, torch.ones(1, 4))
    w = label_free_weights(torch.tensor([[3.0, 0.0, -4.0]]))
    assert torch.allclose(w, torch.tensor([[9 / 16, 0.0, 1.0]]))


def test_save_load_roundtrip(tmp_path):
    bank = MemoryBank.from_features(torch.randn(20, 8), torch.randint(0, 4, (20,)), k=5, temperature=0.1)
    bank.save(tmp_path / "b.pt")
    b2 = MemoryBank.load(tmp_path / "b.pt")
    assert torch.allclose(b2.features, bank.features, atol=1e-7) and torch.equal(b2.labels, bank.labels)
    assert (b2.k, b2.temperature) == (5, 0.1)
    torch.save({"x": 1}, tmp_path / "other.pt")
    import pytest
    with pytest.raises(ValueError, match="not a daam_fast memory bank"):
        MemoryBank.load(tmp_path / "other.pt")


def test_bank_validation():
    import pytest
    with pytest.raises(ValueError, match=r"features must be \(K_bank, C\)"):
        MemoryBank(torch.randn(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must be \(5,\)"):
        MemoryBank(torch.randn(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be integers"):
        MemoryBank(torch.randn(5, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="k >= 1"):
        MemoryBank(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), k=0)
    bad = torch.randn(5, 3)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        MemoryBank(bad, torch.zeros(5, dtype=torch.long))
