"""The reference itself against values computed by hand on a 2-block, 2-head, 5-token model.

The hand computation shares no code with daam_reference: its own forward written out
(LayerNorm, attention, MLP, head), G_b by central finite differences (a perturbation added
to T_b[0] inside that forward), and the map by explicit loops over tokens and channels.
"""
import math

import torch
from timm.models.vision_transformer import VisionTransformer

from daam_fast import daam_reference
from models import randomize


def _ln(x, mod):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _hand_forward(m, img, delta=None):
    """Returns logits (K,), and per block (a (H, N) row 0, v (N, C)). delta = (b, c, eps)."""
    C = m.embed_dim
    H = m.blocks[0].attn.num_heads
    d = C // H
    pe = m.patch_embed.proj
    p = pe.kernel_size[0]
    tokens = []
    for i in range(0, img.shape[1], p):
        for j in range(0, img.shape[2], p):
            patch = img[:, i:i + p, j:j + p]
            tokens.append((pe.weight * patch).sum(dim=(1, 2, 3)) + pe.bias)
    x = torch.stack([m.cls_token[0, 0]] + tokens) + m.pos_embed[0]
    rows = []
    for b, blk in enumerate(m.blocks):
        u = _ln(x, blk.norm1)
        qkv = u @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
        q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
        T = torch.zeros_like(x)
        a_row = torch.zeros(H, x.shape[0], dtype=x.dtype)
        for h in range(H):
            sl = slice(h * d, (h + 1) * d)
            A = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(d), dim=-1)
            T[:, sl] = A @ v[:, sl]
            a_row[h] = A[0]
        if delta is not None and delta[0] == b:
            T = T.clone()
            T[0, delta[1]] += delta[2]
        x = x + T @ blk.attn.proj.weight.T + blk.attn.proj.bias
        hdn = _gelu(_ln(x, blk.norm2) @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
        x = x + hdn @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
        rows.append((a_row, v))
    f = _ln(x, m.norm)[0]
    return f @ m.head.weight.T + m.head.bias, rows


def test_reference_matches_hand_computation():
    m = randomize(VisionTransformer(img_size=4, patch_size=2, embed_dim=4, depth=2, num_heads=2,
                                    num_classes=3, mlp_ratio=2.0), seed=5).double()
    imgs = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    res = daam_reference(m, imgs, dtype=torch.float64)
    assert res.block_maps.shape == (2, 2, 2, 2)
    eps = 1e-6
    for i in range(2):
        with torch.no_grad():
            logits, rows = _hand_forward(m, imgs[i])
            t = int(logits.argmax())
            assert t == int(res.targets[i])
            for b in range(2):
                G = torch.zeros(4, dtype=torch.float64)
                for c in range(4):
                    up = _hand_forward(m, imgs[i], (b, c, eps))[0][t]
                    dn = _hand_forward(m, imgs[i], (b, c, -eps))[0][t]
                    G[c] = (up - dn) / (2 * eps)
                a_row, v = rows[b]
                L = torch.zeros(5, dtype=torch.float64)
                for n in range(5):
                    s = 0.0
                    for c in range(4):
                        s += max(G[c].item(), 0.0) * a_row[c // 2, n].item() * v[n, c].item()
                    L[n] = max(s, 0.0)
                expected = L[1:].reshape(2, 2)
                got = res.block_maps[i, b]
                assert torch.allclose(got, expected, rtol=1e-6, atol=1e-9 * max(1.0, expected.abs().max().item())), \
                    f"image {i} block {b}: {got} vs hand {expected}"
        assert torch.allclose(res.maps[i, 1], res.block_maps[i, 0] + res.block_maps[i, 1])
    assert (res.block_maps > 0).any()
