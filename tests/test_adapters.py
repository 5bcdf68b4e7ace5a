"""Model adapters (daam_fast.adapters): every family's fast path against the reference,
the model's own output and attention, Core's behaviour tests, DINO checkpoints, refusals.

Each case names the code path it exercises. Hugging Face cases are skipped (with the
reason) when ``transformers`` is not installed.
"""
import copy
import math

import pytest
import timm
import torch
from torch import nn

from daam_fast import DAAM, BankTarget, MemoryBank, daam_reference
from daam_fast.adapters import families, get_adapter
from daam_fast.models import dino_to_timm, load_dino
from models import randomize, tiny_vit
from tolerances import assert_close

try:
    import transformers as tf
    HAVE_HF = True
except ImportError:  # optional dependency: pip install daam-fast[hf]
    tf = None
    HAVE_HF = False

hf = pytest.mark.skipif(not HAVE_HF, reason="transformers not installed (pip install daam-fast[hf])")


def spread(model: nn.Module, seed: int = 0) -> nn.Module:
    """randomize() (tests/models.py), and LayerNorm weights near 1 whatever their names."""
    randomize(model, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and m.weight is not None:
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
    return model.eval()


def _hf_cfg(cls, **kw):
    c = dict(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
             intermediate_size=96, num_labels=5, attn_implementation="sdpa")
    c.update(kw)
    return cls(**c)


def hf_vit(cls_name="ViTForImageClassification", **kw):
    return spread(getattr(tf, cls_name)(_hf_cfg(tf.ViTConfig, **kw)))


def hf_deit(cls_name="DeiTForImageClassification", **kw):
    return spread(getattr(tf, cls_name)(_hf_cfg(tf.DeiTConfig, **kw)))


def tv_vit(**kw):
    from torchvision.models.vision_transformer import VisionTransformer
    c = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5)
    c.update(kw)
    return spread(VisionTransformer(**c))


def eva(**kw):
    from timm.models.eva import Eva
    c = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5, ref_feat_shape=(4, 4))
    c.update(kw)
    return spread(Eva(**c))


def beit(**kw):
    from timm.models.beit import Beit
    c = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)
    c.update(kw)
    return spread(Beit(**c))


# name -> (factory, family, needs transformers, what it exercises)
CASES = {
    "hf-vit-cls": (lambda: hf_vit(), "hf", True, "HF ViTForImageClassification, SDPA, q/k/v projections"),
    "hf-vit-model": (lambda: hf_vit("ViTModel"), "hf", True, "HF ViTModel: no head, [class] after layernorm"),
    "hf-deit-cls": (lambda: hf_deit(), "hf", True, "HF DeiT: 2 prefix tokens, head reads row 0"),
    "hf-deit-teacher": (lambda: hf_deit("DeiTForImageClassificationWithTeacher"), "hf", True,
                        "HF DeiT with teacher: head reads rows 0 and 1 (mean of two classifiers)"),
    "tv-vit": (lambda: tv_vit(), "torchvision", False, "torchvision nn.MultiheadAttention, packed in_proj"),
    "tv-vit-h4": (lambda: tv_vit(num_heads=4, num_layers=3), "torchvision", False, "torchvision, 4 heads of 8"),
    "timm-eva-rope": (lambda: eva(use_rot_pos_emb=True, global_pool="token"), "timm-eva", False,
                      "timm EVA, rotary embeddings applied to q, k in the captured row"),
    "timm-eva-avg": (lambda: eva(global_pool="avg", qkv_fused=False), "timm-eva", False,
                     "timm EVA, separate q/k/v projections, mean-pooled"),
    "timm-beit-relpos": (lambda: beit(use_rel_pos_bias=True, use_abs_pos_emb=False, global_pool="token"),
                         "timm-beit", False, "BEiT per-block relative position bias in SDPA and in the row"),
    "timm-beit-shared-avg": (lambda: beit(use_shared_rel_pos_bias=True, global_pool="avg", init_values=0.3),
                             "timm-beit", False, "BEiT shared relative position bias, mean-pooled, layer-scale"),
}


def _x(batch=2, seed=1, size=32):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _make(case):
    factory, family, needs_hf, _ = CASES[case]
    if needs_hf and not HAVE_HF:
        pytest.skip("transformers not installed (pip install daam-fast[hf])")
    return factory(), family


def _own_output(model, x):
    """The model's own output, no adapter involved: logits, or the [class] feature after the final norm."""
    with torch.no_grad():
        out = model(x)
    if hasattr(out, "logits"):
        return out.logits
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state[:, 0]
    return out


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_fast_equals_reference_and_model_output(case):
    model, family = _make(case)
    adapter = get_adapter(model)
    assert adapter.family == family
    x = _x(3)
    ref = daam_reference(model, x, dtype=torch.float64)
    assert (ref.block_maps > 0).float().mean() > 0.05, "degenerate test model"
    with DAAM(model) as daam:
        res = daam(x)
    assert res.block_maps.shape == (3, adapter.depth, 4, 4) and res.grid == (4, 4)
    assert torch.equal(res.targets, ref.targets)
    assert_close(res.block_maps, ref.block_maps, name=f"{case} block_maps")     # rel. error < 1e-4
    assert_close(res.maps, ref.maps, name=f"{case} maps")
    own = _own_output(model, x)
    got = res.logits if res.logits is not None else res.features
    assert_close(got, own, name=f"{case} output through the adapter vs the model's own")
    assert all("forward" not in m.__dict__ for m in model.modules()), "a patched forward was left behind"


@pytest.mark.parametrize("case", ["hf-vit-cls", "hf-deit-teacher", "tv-vit"])
def test_targets_and_batch_consistency(case):
    model, _ = _make(case)
    x = _x(4, seed=2)
    t = torch.tensor([4, 0, 2, 2])
    ref = daam_reference(model, x, target=t, dtype=torch.float64)
    with DAAM(model) as daam:
        res = daam(x, target=t)
        other = daam(x, target=1)
        full = daam(x)
        for i in range(4):
            alone = daam(x[i:i + 1])
            assert_close(full.block_maps[i:i + 1], alone.block_maps, name=f"{case} image {i} alone")
            assert full.targets[i] == alone.targets[0]
    assert torch.equal(res.targets, t) and torch.equal(full.targets, full.logits.argmax(1))
    assert_close(res.block_maps, ref.block_maps, name=f"{case} explicit targets")
    assert (other.block_maps - res.block_maps).abs().max() > 1e-4, "the target must change the maps"


@pytest.mark.parametrize("case", ["hf-vit-cls", "hf-deit-teacher", "hf-vit-model", "tv-vit", "timm-eva-rope",
                                  "timm-eva-avg", "timm-beit-relpos", "timm-beit-shared-avg"])
def test_direct_equals_literal_reference(case):
    model, _ = _make(case)
    x = _x(2, seed=3)
    ref = daam_reference(model, x, dtype=torch.float64, method="direct")
    assert (ref.block_maps > 0).float().mean() > 0.05
    res = DAAM(model, method="direct")(x)
    assert_close(res.block_maps, ref.block_maps, name=f"{case} direct")


@pytest.mark.parametrize("case", ["hf-vit-model", "tv-vit"])
def test_self_supervised_bank(case):
    model, _ = _make(case)
    if case == "tv-vit":
        model.heads = nn.Identity()                      # headless torchvision model
    adapter = get_adapter(model)
    assert adapter.num_classes == 0
    C = adapter.num_heads * adapter.head_dim
    g = torch.Generator().manual_seed(4)
    bank = MemoryBank.from_features(torch.randn(40, C, generator=g), torch.randint(0, 3, (40,), generator=g), k=5)
    x = _x(3, seed=4)
    ref = daam_reference(model, x, target=BankTarget(bank), dtype=torch.float64)
    res = DAAM(model)(x, target=BankTarget(bank))
    assert torch.equal(res.targets, ref.targets) and (res.targets >= 0).all()
    assert_close(res.block_maps, ref.block_maps, name=f"{case} bank")


@hf
def test_hf_row_matches_library_attention_weights():
    """The [class] row from the adapter's q, k equals the library's own eager attention weights."""
    model = hf_deit()
    x = _x(2, seed=5)
    eager = copy.deepcopy(model)
    eager.config._attn_implementation = "eager"
    with torch.no_grad():
        att = eager(x, output_attentions=True).attentions           # L x (B, H, N, N)
    assert att is not None and len(att) == 2
    adapter = get_adapter(model)
    rows = []

    def record(b):
        def core(u, r, ctx):
            q, k, v = adapter.qkv(b, u, r, ctx)
            rows.append(((q[:, :, 0:1] @ k.transpose(-2, -1)) * adapter.scale(b)).softmax(-1)[:, :, 0])
            T = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
            return adapter.attn_out(b, T, u, r)
        return core

    for b, a in enumerate(adapter.attns):
        a.forward = adapter.attn_forward(b, record(b), lambda: True)
    try:
        with torch.no_grad():
            model(x)
    finally:
        for a in adapter.attns:
            del a.forward
    for b in range(2):
        assert_close(rows[b], att[b][:, :, 0], name=f"block {b} row")


def test_torchvision_row_matches_multihead_attention_weights():
    model = tv_vit()
    adapter = get_adapter(model)
    x = _x(2, seed=6)
    inputs = []
    hooks = [blk.self_attention.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
             for blk in adapter.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    res = daam_reference(model, x, dtype=torch.float64)
    for b, (blk, u) in enumerate(zip(adapter.blocks, inputs)):
        with torch.no_grad():
            _, w = blk.self_attention(u, u, u, need_weights=True, average_attn_weights=False)   # (B, H, N, N)
            q, k, _ = adapter.qkv(b, u)
            row = ((q[:, :, 0:1] @ k.transpose(-2, -1)) * adapter.scale(b)).softmax(-1)[:, :, 0]
        assert_close(row, w[:, :, 0], name=f"block {b} row")
    assert (res.block_maps > 0).any()


def test_torchvision_fast_path_restored_and_output_unchanged():
    model = tv_vit()
    x = _x(2, seed=7)
    with torch.no_grad():
        before = model(x)
    with DAAM(model) as daam:
        assert "forward" in model.encoder.layers[0].self_attention.__dict__
        with torch.no_grad():
            inside = model(x)                    # outside a call: nn.MultiheadAttention's own forward
        daam(x)
    assert all("forward" not in m.__dict__ for m in model.modules())
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(inside, before, atol=1e-6) and torch.equal(after, before)


@hf
def test_hf_keeps_sdpa_and_reduction_is_exact():
    model = hf_vit()
    assert model.config._attn_implementation == "sdpa"
    x = _x(2, seed=8)
    full = DAAM(model)
    full._reduce_last = False                   # the exact reduction's private switch
    full = full(x)
    red = DAAM(model)(x)
    assert DAAM(model)._reduce_last
    assert_close(red.block_maps, full.block_maps)
    assert model.config._attn_implementation == "sdpa"


# ---------------------------------------------------------------------------------- DINO
class _DinoAttention(nn.Module):
    """DINO's vision_transformer.py Attention (explicit softmax), transcribed."""

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x)), attn


class _DinoMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _DinoBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _DinoAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _DinoMlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        y, _ = self.attn(self.norm1(x))
        x = x + y
        return x + self.mlp(self.norm2(x))


class _DinoPatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoViT(nn.Module):
    """The layout of DINO's vision_transformer.py VisionTransformer (num_classes=0), transcribed."""

    def __init__(self, img_size=32, patch=8, dim=192, depth=2, num_heads=3, mlp_ratio=4.0):
        super().__init__()
        n = (img_size // patch) ** 2
        self.patch_embed = _DinoPatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.pos_drop = nn.Dropout(0.0)
        self.blocks = nn.ModuleList([_DinoBlock(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Identity()

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        x = self.pos_drop(x)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def _dino_checkpoint(dino: nn.Module):
    """A DINO training checkpoint: teacher backbone under module.backbone., plus a DINOHead."""
    g = torch.Generator().manual_seed(9)
    teacher = {f"module.backbone.{k}": v.clone() for k, v in dino.state_dict().items()}
    teacher["module.head.mlp.0.weight"] = torch.randn(64, 192, generator=g)
    teacher["module.head.last_layer.weight_g"] = torch.ones(100, 1)
    return {"teacher": teacher, "student": {}, "epoch": 100}


def test_dino_checkpoint_mapped_to_timm_gives_identical_features(tmp_path):
    dino = spread(DinoViT())
    ckpt = _dino_checkpoint(dino)
    path = tmp_path / "dino.pth"
    torch.save(ckpt, path)
    model = load_dino(str(path))
    assert type(model).__name__ == "VisionTransformer" and model.num_classes == 0
    assert len(model.blocks) == 2 and model.blocks[0].attn.num_heads == 3
    x = _x(3, seed=10)
    with torch.no_grad():
        want, got = dino(x), model(x)
    assert_close(got, want, name="DINO features via timm")
    assert (got - want).abs().max() < 1e-5
    # the explainer on the loaded model, self-supervised, equals the reference
    bank = MemoryBank.from_features(torch.randn(30, 192), torch.arange(30) % 3, k=5)
    ref = daam_reference(model, x, target=BankTarget(bank), dtype=torch.float64)
    res = DAAM(model)(x, target=BankTarget(bank))
    assert_close(res.block_maps, ref.block_maps)
    # the renamed dict: backbone keys only, same names as the DINO module
    sd = dino_to_timm(ckpt)
    assert set(sd) == set(dino.state_dict()) and not any(k.startswith("head") for k in sd)


def test_dino_mapping_refuses_other_layouts():
    with pytest.raises(ValueError, match="not a DINO ViT state dict"):
        dino_to_timm({"conv.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="no entry 'student2'"):
        dino_to_timm({"teacher": {}}, checkpoint_key="student2")
    sd = {k: v for k, v in DinoViT(dim=40, num_heads=4).state_dict().items()}
    with pytest.raises(ValueError, match="num_heads"):
        load_dino(sd)
    assert load_dino(sd, num_heads=4).blocks[0].attn.num_heads == 4


# ---------------------------------------------------------------------------------- refusals
def test_unsupported_architectures_list_what_is_missing():
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, depths=(1, 1, 1, 1),
                             embed_dim=24, num_heads=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="missing") as e:
        DAAM(swin)
    msg = str(e.value)
    assert "[class] token" in msg and "WindowAttention" in msg and "stages" in msg
    with pytest.raises(ValueError, match=r"\[class\] token"):
        daam_reference(swin, torch.randn(1, 3, 224, 224))
    relpos = timm.create_model("vit_relpos_base_patch16_224", pretrained=False, depth=1, embed_dim=48,
                               num_heads=3, img_size=32, patch_size=8)
    with pytest.raises(ValueError, match=r"blocks\[0\].attn is RelPosAttention, not timm's Attention"):
        DAAM(relpos)


def test_mixed_attention_kinds_refused_with_the_blocks_named():
    """Each timm kind claims a model by its first block and checks every block: a model mixing
    timm's Attention and EvaAttention is refused whichever comes first."""
    vit = tiny_vit(depth=2)
    vit.blocks[1].attn = eva().blocks[0].attn
    with pytest.raises(ValueError, match=r"blocks mix attention classes \(timm's Attention in blocks\[0\], "
                                         r"EvaAttention in blocks\[1\]\)"):
        get_adapter(vit)
    model = eva()
    model.blocks[1].attn = tiny_vit(depth=1).blocks[0].attn
    with pytest.raises(ValueError, match=r"mix attention classes \(EvaAttention in blocks\[0\], Attention in"):
        get_adapter(model)
    assert type(get_adapter(eva())).__name__ == "TimmEvaAdapter"
    assert type(get_adapter(beit())).__name__ == "TimmBeitAdapter"
    assert type(get_adapter(tiny_vit())).__name__ == "TimmViTAdapter"


def test_beit_bias_really_matters():
    """Dropping BEiT's relative position bias changes the maps: the row must include it."""
    model = beit(use_rel_pos_bias=True, use_abs_pos_emb=False, global_pool="token")
    x = _x(2, seed=11)
    with_bias = DAAM(model)(x)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.relative_position_bias_table.zero_()
    without = DAAM(model)(x)
    assert (with_bias.block_maps - without.block_maps).abs().max() > 1e-3 * with_bias.block_maps.abs().max()


def test_wrong_input_size_named():
    with pytest.raises(ValueError, match="image_size"):
        DAAM(tv_vit())(torch.randn(1, 3, 48, 48))


@hf
def test_hf_unsupported_class_and_size():
    m = tf.ViTForMaskedImageModeling(_hf_cfg(tf.ViTConfig))
    with pytest.raises(ValueError, match="ViTForMaskedImageModeling is not supported"):
        DAAM(m)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        DAAM(hf_vit())(torch.randn(1, 3, 40, 44))


@pytest.mark.parametrize("case", ["hf-vit-cls", "hf-deit-cls", "hf-vit-model"])
def test_hf_other_image_sizes_interpolated(case):
    """Non-square 40 x 56 (5 x 7 patches) on models configured for 32 x 32."""
    model, _ = _make(case)
    x = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(5))
    res = DAAM(model)(x)
    ref = daam_reference(model, x, dtype=torch.float64)
    assert res.block_maps.shape[-2:] == (5, 7)
    assert_close(res.block_maps, ref.block_maps, name=f"{case} 40x56")
    with torch.no_grad():
        own = model(x, interpolate_pos_encoding=True)
    own = own.logits if hasattr(own, "logits") else own.last_hidden_state[:, 0]
    assert_close(res.logits if res.logits is not None else res.features, own, name="output")
    d = DAAM(model, method="direct")(x)
    assert_close(d.block_maps, daam_reference(model, x, dtype=torch.float64, method="direct").block_maps)


def test_families_registered():
    assert families()[:5] == ["timm", "timm-eva", "timm-beit", "hf", "torchvision"]
    import daam_fast.adapters as A
    import daam_fast.models as M
    assert sorted(A.__all__) == sorted(["Adapter", "ADAPTERS", "get_adapter", "register", "families"])
    # checkpoint conversion lives beside model loading, and only there
    for name in ("load_dino", "dino_to_timm", "load_dinov2", "dinov2_to_timm"):
        assert not hasattr(A, name) and name in M.__all__
    assert "(B, C)" in (load_dino.__doc__ or "")
    assert math.isclose(get_adapter(tv_vit()).scale(0), 16 ** -0.5)


@pytest.mark.parametrize("factory", [lambda: eva(use_rot_pos_emb=True, global_pool="token", init_values=0.4),
                                     lambda: beit(use_rel_pos_bias=True, use_abs_pos_emb=False, global_pool="token",
                                                  init_values=0.4)], ids=["eva-layerscale", "beit-layerscale"])
def test_direct_exact_when_residual_path_is_the_only_path_eva_beit(factory):
    """A known answer independent of the adapter's residual weights: with the last block's MLP
    zeroed, T_L[0] reaches x_L[0] only through gamma_1 * proj(T), so direct's last map is
    grad's (autograd through the real block)."""
    model = factory()
    with torch.no_grad():
        model.blocks[-1].mlp.fc2.weight.zero_()
        model.blocks[-1].mlp.fc2.bias.zero_()
    x = _x(3, seed=4)
    g, d = DAAM(model)(x), DAAM(model, method="direct")(x)
    assert (g.block_maps[:, -1] > 0).float().mean() > 0.05
    assert_close(d.block_maps[:, -1], g.block_maps[:, -1], name="last block, direct vs grad")
    assert (d.block_maps[:, 0] - g.block_maps[:, 0]).abs().max() > 1e-5     # earlier blocks: an approximation


def test_direct_refuses_eva_scale_norm_and_post_norm():
    with pytest.raises(ValueError, match="scale-norm or gate"):
        DAAM(eva(scale_attn_inner=True), method="direct")
