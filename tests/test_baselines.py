"""Baselines (fused attention ON) against straightforward references on an unfused copy.

The references run timm's own explicit attention path (``fused_attn = False``), capture the
softmax at ``attn.attn_drop`` with a forward hook, take dY/dA by autograd (``retain_grad``),
and apply the published formulas image by image with plain loops.
"""
import copy

import pytest
import torch

from daam_fast import baselines
from daam_fast.result import DAAMResult
from models import randomize, tiny_vit
from tolerances import assert_close

import timm

CASES = {
    # id: (factory, input (C, H, W), what it exercises)
    "tiny-N17-P1": (lambda: tiny_vit(), (3, 32, 32), "plain ViT, 4x4 grid"),
    "registers-P5": (lambda: tiny_vit(reg_tokens=4), (3, 32, 32), "5 prefix tokens: patch columns start at 5"),
    "qknorm-layerscale": (lambda: tiny_vit(qk_norm=True, init_values=0.5), (3, 32, 32), "q/k norm inside the softmax"),
    "nonsquare-3x5": (lambda: tiny_vit(img_size=(48, 80), patch_size=16), (3, 48, 80), "non-square grid"),
    "avgpool": (lambda: tiny_vit(global_pool="avg", fc_norm=True), (3, 32, 32), "mean-pooled: patch rows averaged"),
    "distilled-P2": (lambda: randomize(timm.create_model("deit_tiny_distilled_patch16_224", img_size=32, depth=2)),
                     (3, 32, 32), "2 prefix tokens, [class] row 0"),
}


def _unfused(model):
    m = copy.deepcopy(model)
    for blk in m.blocks:
        blk.attn.fused_attn = False
    return m


def _reference_run(model, x, targets, grads=True):
    """Explicit softmax attentions (B, H, N, N) per block, their dY/dA, the last norm1 output and its grad."""
    m = _unfused(model)
    As, acts = [], []

    def keep_attn(_mod, _inp, out):
        if out.requires_grad:
            out.retain_grad()
        As.append(out)

    def keep_act(_mod, _inp, out):
        if out.requires_grad:
            out.retain_grad()
        acts.append(out)

    hs = [blk.attn.attn_drop.register_forward_hook(keep_attn) for blk in m.blocks]
    hs.append(m.blocks[-1].norm1.register_forward_hook(keep_act))
    out = m(x)
    if grads:
        out.gather(1, targets[:, None]).sum().backward()
    for h in hs:
        h.remove()
    assert len(As) == len(m.blocks)
    return As, acts[0], out


def _row(M, P, pool):
    return M[0] if pool == "token" else M[P:].mean(dim=0)


def _ref_rollout(As, P, pool, discard, fusion):
    B, H, N, _ = As[0].shape
    maps = []
    for i in range(B):
        R = torch.eye(N)
        per_block = []
        for A in As:
            a = A[i].detach()
            fused = {"mean": a.mean(0), "max": a.max(0).values, "min": a.min(0).values}[fusion]
            flat = fused.flatten().clone()
            order = [int(j) for j in torch.argsort(flat) if int(j) != 0]          # smallest first, skip [cls,cls]
            flat[order[:int(N * N * discard)]] = 0
            a = (flat.view(N, N) + torch.eye(N)) / 2
            a = a / a.sum(dim=-1, keepdim=True)
            R = a @ R
            per_block.append(_row(R, P, pool)[P:])
        maps.append(torch.stack(per_block))
    return torch.stack(maps)                                                      # (B, L, N - P)


def _ref_grad_rollout(As, P, pool):
    B, H, N, _ = As[0].shape
    maps = []
    for i in range(B):
        R = torch.eye(N)
        per_block = []
        for A in As:
            cam = (A.grad[i] * A[i].detach()).clamp(min=0).mean(dim=0)
            R = R + cam @ R
            per_block.append(_row(R, P, pool)[P:])
        maps.append(torch.stack(per_block))
    return torch.stack(maps)


def _ref_gradcam(act, P):
    maps = []
    for i in range(act.shape[0]):
        w = act.grad[i, P:].mean(dim=0)
        maps.append(torch.relu((act[i, P:].detach() * w).sum(dim=-1)))
    return torch.stack(maps)[:, None]


def _setup(case):
    factory, shape, _ = CASES[case]
    model = factory()
    assert all(blk.attn.fused_attn for blk in model.blocks), "baselines must be tested with fused attention on"
    B = 3
    x = torch.randn(B, *shape, generator=torch.Generator().manual_seed(1))
    targets = torch.arange(B) % model.num_classes
    return model, x, targets


def _flat(res):
    B, L = res.maps.shape[:2]
    return res.maps.reshape(B, L, -1)


@pytest.mark.parametrize("case", list(CASES))
def test_grad_baselines_match_reference(case):
    model, x, targets = _setup(case)
    P, pool = model.num_prefix_tokens, model.global_pool
    As, act, _ = _reference_run(model, x, targets)
    res = baselines.grad_rollout(model, x, target=targets)
    assert isinstance(res, DAAMResult) and res.method == "grad_rollout"
    assert res.maps.shape[:2] == (3, len(model.blocks))
    assert_close(_flat(res), _ref_grad_rollout(As, P, pool), name="grad_rollout")
    res = baselines.gradcam(model, x, target=targets)
    assert res.maps.shape[1] == 1 and torch.equal(res.maps, res.block_maps)
    assert_close(_flat(res), _ref_gradcam(act, P), name="gradcam")
    assert torch.equal(res.targets, targets)


ROLLOUT_CASES = [(c, "mean", 0.0) for c in CASES] + [
    (c, f, r) for c in ("tiny-N17-P1", "registers-P5") for f, r in (("mean", 0.9), ("max", 0.5), ("min", 0.3))]


@pytest.mark.parametrize("case,fusion,discard", ROLLOUT_CASES)
def test_rollout_and_attention_match_reference(case, fusion, discard):
    model, x, targets = _setup(case)
    P, pool = model.num_prefix_tokens, model.global_pool
    with torch.no_grad():
        As, _, out = _reference_run(model, x, targets, grads=False)
    res = baselines.rollout(model, x, discard_ratio=discard, head_fusion=fusion)
    assert_close(_flat(res), _ref_rollout(As, P, pool, discard, fusion), name=f"rollout {fusion} {discard}")
    assert torch.equal(res.targets, out.argmax(1))
    if fusion == "mean" and discard == 0.0:
        att = baselines.attention_map(model, x)
        expected = torch.stack([_row(As[-1][i].mean(0), P, pool)[P:] for i in range(x.shape[0])])[:, None]
        assert_close(_flat(att), expected, name="attention")


def test_grad_rollout_autograd_and_hand_gradient_agree_with_target_choice():
    """Different targets give different maps; None means each image's own argmax."""
    model, x, _ = _setup("tiny-N17-P1")
    with torch.no_grad():
        pred = model(x).argmax(1)
    a = baselines.grad_rollout(model, x)
    b = baselines.grad_rollout(model, x, target=pred)
    c = baselines.grad_rollout(model, x, target=(pred + 1) % model.num_classes)
    assert torch.equal(a.maps, b.maps) and torch.equal(a.targets, pred)
    assert not torch.allclose(a.maps, c.maps)


def test_batch_equals_single_images():
    model, x, targets = _setup("registers-P5")
    for fn in (baselines.grad_rollout, baselines.gradcam, baselines.rollout, baselines.attention_map):
        full = fn(model, x, target=targets)
        for i in range(x.shape[0]):
            one = fn(model, x[i:i + 1], target=targets[i:i + 1])
            assert_close(one.maps, full.maps[i:i + 1], name=f"{fn.__name__} image {i}")


def _state(model):
    return [(n, "forward" in m.__dict__, [p.requires_grad for p in m.parameters(recurse=False)], m.training)
            for n, m in model.named_modules()]


def test_restores_model_and_reraises(monkeypatch):
    model, x, targets = _setup("tiny-N17-P1")
    model.blocks[0].attn.qkv.weight.requires_grad_(False)      # a mixed frozen state must come back as it was
    before = _state(model)
    with torch.no_grad():
        y0 = model(x)
    for name in baselines.BASELINES:
        baselines.explain(model, x, name)
        assert _state(model) == before, name
    with torch.no_grad():
        assert torch.equal(model(x), y0)

    def boom(*a, **k):
        raise KeyError("boom")

    monkeypatch.setattr(baselines, "softmax_rows", boom)
    for fn in (baselines.rollout, baselines.grad_rollout):
        with pytest.raises(KeyError, match="boom"):
            fn(model, x)
        assert _state(model) == before


def test_runs_inside_daam_context():
    """A baseline on a model a DAAM context holds: the same result, DAAM's patches untouched."""
    from daam_fast import DAAM
    model, x, _ = _setup("tiny-N17-P1")
    want = baselines.rollout(model, x).maps
    with DAAM(model) as daam:
        assert torch.equal(baselines.rollout(model, x).maps, want)
        assert all("forward" in blk.attn.__dict__ for blk in model.blocks)   # still held by DAAM
        daam(x)
    assert not any("forward" in blk.attn.__dict__ for blk in model.blocks)


def test_headless_and_bad_options():
    model = tiny_vit(num_classes=0)
    x = torch.randn(2, 3, 32, 32)
    res = baselines.rollout(model, x)
    assert res.maps.shape == (2, 3, 4, 4) and torch.equal(res.targets, torch.full((2,), -1))
    assert res.features is not None and res.logits is None
    for fn in (baselines.grad_rollout, baselines.gradcam):
        with pytest.raises(ValueError, match="classifier head"):
            fn(model, x)
    m2 = tiny_vit()
    with pytest.raises(ValueError, match="head_fusion"):
        baselines.rollout(m2, x, head_fusion="median")
    with pytest.raises(ValueError, match="discard_ratio"):
        baselines.rollout(m2, x, discard_ratio=1.0)
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.explain(m2, x, "lime")
    with pytest.raises(ValueError, match="out of range"):
        baselines.gradcam(m2, x, target=7)


def test_other_families_hf_against_library_attention_and_torchvision_beit_run():
    """Through the adapters: HF DeiT (SDPA kept) against its own eager attentions and their
    autograd gradients; torchvision (nn.MultiheadAttention) and BEiT (relative-position bias) run,
    give finite maps and leave the model as it was."""
    from test_adapters import HAVE_HF, beit, hf_deit, tv_vit
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([1, 3])
    if HAVE_HF:
        model = hf_deit()
        eager = copy.deepcopy(model)
        eager.config._attn_implementation = "eager"
        out = eager(x, output_attentions=True)
        As = list(out.attentions)                                        # L x (B, H, N, N), in the graph
        grads = torch.autograd.grad(out.logits.gather(1, t[:, None]).sum(), As)
        for A, g in zip(As, grads):
            A.grad = g
        P = 2
        assert_close(_flat(baselines.grad_rollout(model, x, target=t)), _ref_grad_rollout(As, P, "token"),
                     name="hf grad_rollout")
        assert_close(_flat(baselines.rollout(model, x, discard_ratio=0.5)),
                     _ref_rollout([A.detach() for A in As], P, "token", 0.5, "mean"), name="hf rollout")
        for name in ("attention", "gradcam"):
            assert torch.isfinite(baselines.explain(model, x, name).maps).all()
    for model in (tv_vit(), beit(use_rel_pos_bias=True, use_abs_pos_emb=False, global_pool="token")):
        before = _state(model)
        with torch.no_grad():
            y0 = model(x)
        for name in baselines.BASELINES:
            res = baselines.explain(model, x, name, target=t)
            assert torch.isfinite(res.maps).all() and res.maps.shape[-2:] == (4, 4)
            assert torch.equal(res.targets, t)
        assert _state(model) == before
        with torch.no_grad():
            assert torch.equal(model(x), y0)
