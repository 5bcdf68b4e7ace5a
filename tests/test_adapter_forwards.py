"""Every registered adapter's replacement forwards, alone (no explainer): outside a DAAM call
they are exactly the library's forwards; inside, an SDPA core through the adapter's qkv /
attn_bias / attn_out gives the model's own output. One case per attention kind at least, and a
check that no registered family is without one (a new family must add its case here).
"""
import pytest
import timm
import torch
import torch.nn.functional as F

from daam_fast.adapters import families, get_adapter
from models import randomize, tiny_vit
from test_adapters import CASES, _make, _x
from tolerances import assert_close

# name -> (factory, family, needs transformers, what it exercises): the adapters' cases plus timm ViTs
FORWARD_CASES = dict(CASES)
FORWARD_CASES.update({
    "timm-vit-reg-qknorm-ls": (lambda: tiny_vit(reg_tokens=2, qk_norm=True, init_values=0.5), "timm", False,
                               "timm Attention with q/k-norm, 3 prefix tokens, layer-scale"),
    "timm-vit-avg": (lambda: tiny_vit(global_pool="avg", fc_norm=True, depth=2), "timm", False,
                     "timm Attention, mean-pooled (no last-block reduction)"),
    "timm-deit-distilled": (lambda: randomize(timm.create_model(
        "deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, embed_dim=48, num_heads=3, depth=2,
        num_classes=5)), "timm", False, "timm DeiT distilled: 2 prefix tokens, head reads rows 0 and 1"),
})


def _build(case):
    if case in CASES:
        return _make(case)[0]                          # skips Hugging Face cases without transformers
    return FORWARD_CASES[case][0]()


def _raising_core(x, rows, ctx):
    raise AssertionError("the core ran outside a DAAM call")


def _sdpa_core(adapter, b):
    """What the fast path computes in block b, without capturing anything."""
    def core(x, rows, ctx):
        q, k, v = adapter.qkv(b, x, rows, ctx)
        bias = adapter.attn_bias(b, ctx)
        if bias is not None:
            bias = bias[:, :, :q.shape[2]].to(q.dtype)
        T = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=adapter.scale(b))
        return adapter.attn_out(b, T.transpose(1, 2).flatten(2), x, rows)
    return core


def _output(model, x):
    with torch.no_grad():
        out = model(x)
    for name in ("logits", "last_hidden_state"):
        if hasattr(out, name):
            return getattr(out, name)
    return out


def _patch(adapter, core_of, active, rows=None, split=None):
    """Put the adapter's forwards in place (attention of every block, and the reducible blocks')."""
    for b, attn in enumerate(adapter.attns):
        attn.forward = adapter.attn_forward(b, core_of(b), active)
    if rows is not None and adapter.can_reduce_last_block():
        adapter.blocks[-1].forward = adapter.last_block_forward(rows)
    if split is not None and adapter.can_reduce_first_block():
        adapter.blocks[0].forward = adapter.first_block_forward(split)


def _unpatch(model):
    for m in model.modules():
        m.__dict__.pop("forward", None)


def test_every_registered_family_has_a_case():
    covered = {family for _, family, _, _ in FORWARD_CASES.values()}
    assert set(families()) <= covered, f"families without a forward round-trip case: {set(families()) - covered}"


@pytest.mark.parametrize("case", list(FORWARD_CASES), ids=list(FORWARD_CASES))
def test_patched_forwards_outside_a_call_are_the_library_forwards(case):
    family = FORWARD_CASES[case][1]
    model = _build(case)
    adapter = get_adapter(model)
    assert adapter.family == family and type(adapter).family == family
    x = _x(2, seed=12)
    want = _output(model, x)
    _patch(adapter, lambda b: _raising_core, lambda: False, rows=lambda: None, split=lambda: False)
    try:
        assert "forward" in adapter.attns[0].__dict__
        got = _output(model, x)
    finally:
        _unpatch(model)
    assert torch.equal(got, want), f"{case}: the inactive forwards changed the output"
    assert torch.equal(_output(model, x), want)


@pytest.mark.parametrize("case", list(FORWARD_CASES), ids=list(FORWARD_CASES))
def test_patched_forwards_inside_a_call_give_the_models_output(case):
    model = _build(case)
    adapter = get_adapter(model)
    x = _x(3, seed=13)
    want = _output(model, x)
    _patch(adapter, lambda b: _sdpa_core(adapter, b), lambda: True, split=lambda: True)
    try:
        got = _output(model, x)
    finally:
        _unpatch(model)
    assert_close(got, want, name=f"{case}: the adapter's q, k, v, bias and output projection")
    if adapter.can_reduce_last_block():                # the head rows only, through the last block
        rows = adapter.head_rows
        _patch(adapter, lambda b: _sdpa_core(adapter, b), lambda: True, rows=lambda: rows)
        try:
            reduced = _output(model, x)
        finally:
            _unpatch(model)
        if want.dim() == 3:                            # a headless model's hidden states: the head rows
            want = want[:, :rows]
        assert_close(reduced, want, name=f"{case}: last block on {rows} row(s)")
