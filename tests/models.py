"""Small random-weight timm ViTs for tests, with weights spread out so maps are not degenerate."""
from __future__ import annotations

import math

import timm
import torch
from timm.models.vision_transformer import VisionTransformer


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    """Re-draw every parameter (timm's init leaves heads/biases near zero, making maps dull)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) * scale / math.sqrt(fan_in))
        elif name.endswith("gamma"):          # layer scale
            p.copy_(0.5 + 0.3 * torch.rand(p.shape, generator=g))
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny_vit(seed: int = 0, **kw) -> VisionTransformer:
    cfg = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=5)
    cfg.update(kw)
    return randomize(VisionTransformer(**cfg), seed=seed)


# name -> (factory, input shape (C, H, W), batch, what it exercises)
MODEL_CASES = {
    "tiny-N17-P1": (lambda: tiny_vit(), (3, 32, 32), 2, "plain custom ViT, 4x4 grid"),
    "deit_tiny-N197": (lambda: randomize(timm.create_model("deit_tiny_patch16_224", depth=3)), (3, 224, 224), 2,
                       "deit_tiny shape: 197 tokens, 3 heads of 64"),
    "patch8-N785-B3": (lambda: tiny_vit(img_size=224, patch_size=8, embed_dim=64, depth=2, num_heads=2),
                       (3, 224, 224), 3, "785 tokens, odd N, batch 3"),
    "distilled-P2": (lambda: randomize(timm.create_model("deit_tiny_distilled_patch16_224", img_size=64, depth=3)),
                     (3, 64, 64), 2, "2 prefix tokens; head reads rows 0 and 1"),
    "registers-P5": (lambda: tiny_vit(reg_tokens=4), (3, 32, 32), 2, "[class] + 4 register tokens"),
    "qknorm-layerscale": (lambda: tiny_vit(qk_norm=True, init_values=0.5), (3, 32, 32), 2, "q/k norm + layer-scale"),
    "scale-norm": (lambda: tiny_vit(scale_attn_norm=True), (3, 32, 32), 2, "attn.norm between T and proj"),
    "nonsquare-3x5": (lambda: tiny_vit(img_size=(48, 80), patch_size=16), (3, 48, 80), 2, "non-square 3x5 grid"),
    "dynamic-4x6": (lambda: tiny_vit(dynamic_img_size=True), (3, 64, 96), 2, "dynamic image size, 8x12 grid"),
    "avgpool": (lambda: tiny_vit(global_pool="avg", fc_norm=True), (3, 32, 32), 2, "mean-pooled (docs/method.md §7)"),
    "no-embed-class": (lambda: tiny_vit(no_embed_class=True, reg_tokens=1), (3, 32, 32), 2, "deit-3 style pos-embed"),
}
