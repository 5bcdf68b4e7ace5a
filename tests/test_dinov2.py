"""DINOv2 checkpoints loaded into timm (daam_fast.models.load_dinov2): the features equal a
transcription of DINOv2's own model (dinov2/models/vision_transformer.py, layers/*.py) at the
native size and at other sizes (its per-call position resampling), with and without register
tokens, layer-scale and the SwiGLU MLP; then DAAM on the loaded model equals the reference."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from daam_fast import DAAM, BankTarget, MemoryBank, daam_reference
from daam_fast.models import dinov2_to_timm, load_dinov2
from test_adapters import _DinoMlp as _Mlp                # DINOv2's Mlp and PatchEmbed are DINO's
from test_adapters import _DinoPatchEmbed as _PatchEmbed
from test_adapters import spread
from tolerances import assert_close


# ------------------------------------------------------------------ DINOv2, transcribed
class _Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, dim * 3, bias=True), nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class _LayerScale(nn.Module):
    def __init__(self, dim, init_values):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class _SwiGLUFFN(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8              # SwiGLUFFNFused
        self.w12, self.w3 = nn.Linear(dim, 2 * hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class _Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, init_values, ffn):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), _Attention(dim, num_heads)
        self.ls1 = _LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = (_SwiGLUFFN if ffn == "swiglu" else _Mlp)(dim, int(dim * mlp_ratio))
        self.ls2 = _LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    def __init__(self, img_size=28, patch_size=7, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0,
                 init_values=1.0, ffn="mlp", num_register_tokens=0, interpolate_antialias=False,
                 interpolate_offset=0.1):
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = _PatchEmbed(patch_size, embed_dim)
        n = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        self.blocks = nn.ModuleList([_Block(embed_dim, num_heads, mlp_ratio, init_values, ffn) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.interpolate_antialias, self.interpolate_offset = interpolate_antialias, interpolate_offset

    def interpolate_pos_encoding(self, x, w, h):
        previous_dtype = x.dtype
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        class_pos_embed = pos_embed[:, 0]
        patch_pos_embed = pos_embed[:, 1:]
        dim = x.shape[-1]
        w0 = w // self.patch_size
        h0 = h // self.patch_size
        M = int(math.sqrt(N))
        assert N == M * M
        kwargs = {}
        if self.interpolate_offset:
            sx = float(w0 + self.interpolate_offset) / M
            sy = float(h0 + self.interpolate_offset) / M
            kwargs["scale_factor"] = (sx, sy)
        else:
            kwargs["size"] = (w0, h0)
        patch_pos_embed = nn.functional.interpolate(
            patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2), mode="bicubic",
            antialias=self.interpolate_antialias, **kwargs)
        assert (w0, h0) == patch_pos_embed.shape[-2:]
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1).to(previous_dtype)

    def forward(self, x):
        B, nc, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        if self.register_tokens is not None:
            x = torch.cat((x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])                     # x_norm_clstoken


# ------------------------------------------------------------------ tests
CASES = {
    "plain": dict(),
    "reg4": dict(num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0),
    "swiglu-no-ls": dict(ffn="swiglu", init_values=None),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("size", [(28, 28), (35, 49)], ids=["native", "resampled-5x7"])
def test_features_equal_dinov2(case, size):
    dino = spread(DinoVisionTransformer(**CASES[case]))
    ckpt = {"teacher": {f"backbone.{k}": v.clone() for k, v in dino.state_dict().items()}, "iteration": 7}
    model = load_dinov2(ckpt, img_size=size, num_heads=3)
    assert model.num_prefix_tokens == 1 + CASES[case].get("num_register_tokens", 0)
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = dino(x), model(x)
    assert (got - want).abs().max() < 1e-5, (got - want).abs().max()
    bank = MemoryBank.from_features(torch.randn(30, 48), torch.arange(30) % 3, k=5)
    tgt = BankTarget(bank)
    assert_close(DAAM(model)(x, target=tgt).block_maps,
                 daam_reference(model, x, target=tgt, dtype=torch.float64).block_maps)


def test_chunked_keys_and_refusals():
    dino = spread(DinoVisionTransformer(depth=4))
    sd = dino.state_dict()
    chunked = {}
    for k, v in sd.items():                                       # block_chunks=2: blocks.{chunk}.{i}.*
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // 2}.{i}." + k.split(".", 2)[2]
        chunked[k] = v
    m = load_dinov2(chunked, num_heads=3)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert (m(x) - dino(x)).abs().max() < 1e-5
    assert "mask_token" not in dinov2_to_timm(sd)
    with pytest.raises(ValueError, match="not a DINOv2 ViT state dict"):
        dinov2_to_timm({"conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="num_heads"):
        load_dinov2(sd)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        load_dinov2(sd, num_heads=3, img_size=30)


def test_cli_explains_a_dinov2_checkpoint(tmp_path, capsys):
    import numpy as np
    from daam_fast.cli import main
    from daam_fast.zoo.shapes import make_shapes, save_pngs
    dino = spread(DinoVisionTransformer(img_size=56, patch_size=14, embed_dim=384, depth=2, num_heads=6,
                                        num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0))
    ckpt = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(dino.state_dict(), ckpt)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    save_pngs(make_shapes(2, seed=3), str(imgs))
    out = tmp_path / "out"
    assert main(["explain", str(imgs), "--model", "dinov2", "--checkpoint", str(ckpt), "--out", str(out),
                 "--quiet", "--no-video"]) == 0
    from daam_fast.outputs import load_maps
    z = load_maps(str(out / "maps"))
    assert z["maps"].shape == (2, 2, 16, 16) and z["features"].shape == (2, 384)    # 224 / 14 = 16
    assert main(["explain", str(imgs), "--model", "dinov2", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "needs --checkpoint" in capsys.readouterr().err
