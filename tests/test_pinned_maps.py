"""The maps are bit-identical to those of daam_fast 0.1.0 on the test models.

``tests/data/maps_0_1_0.safetensors`` holds the maps daam_fast 0.1.0 (commit 2dd37f7) gave
for the cases below, written with that version's spellings (``bank=``, ``topk=``,
``checkpoint=True``) under ``torch.set_num_threads(1)``: the fast path for every method on
both pure-PyTorch and C++ backends, the baselines and the pure-PyTorch reference. The API
changes of 0.2.0 are renames; this test pins that they changed no map (``torch.equal``).
The reference now forms its softmax with the one shared softmax-with-bias
(:func:`daam_fast._rows.softmax_rows`, q k^T scaled after the product instead of q scaled
before it), so its maps are compared to float32 rounding instead.
"""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from daam_fast import DAAM, BankTarget, Similarity, TopK, baselines, daam_reference
from daam_fast._ext import has_cpp
from daam_fast.zoo import load_bank, load_model
from daam_fast.zoo.shapes import make_shapes

from models import tiny_vit
from test_adapters import beit

PINNED = os.path.join(os.path.dirname(__file__), "data", "maps_0_1_0.safetensors")


def _rnd(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)                 # as the pinned maps were computed: a float sum's order
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup(one_thread):
    shapes = make_shapes(1, seed=3)
    xs = (shapes.images.float() / 255 - 0.5) / 0.5
    torch.manual_seed(0)
    be = beit(use_rel_pos_bias=True, use_abs_pos_emb=False, global_pool="token")
    torch.manual_seed(0)
    av = tiny_vit(global_pool="avg", fc_norm=True)
    return {"shapes": (load_model("shapes_vit"), xs), "ssl": (load_model("shapes_vit", headless=True), xs),
            "tiny": (tiny_vit(), _rnd((2, 3, 32, 32), 1)), "beit": (be, _rnd((2, 3, 32, 32), 2)),
            "avg": (av, _rnd((2, 3, 32, 32), 1)), "bank": load_bank("shapes_vit")}


def _fast_cases(backend):
    """name -> f(setup) -> DAAMResult, in 0.2.0's spellings."""
    cases = {}
    for m in ("grad", "row", "direct"):
        for model in ("shapes", "tiny", "beit"):
            cases[f"{backend}/{model}/{m}"] = \
                lambda s, m=m, model=model: DAAM(s[model][0], m, backend=backend)(s[model][1])
    tv = lambda s: s["tiny"]  # noqa: E731
    cases.update({
        f"{backend}/avg/grad": lambda s: DAAM(s["avg"][0], "grad", backend=backend)(s["avg"][1]),
        f"{backend}/avg/direct": lambda s: DAAM(s["avg"][0], "direct", backend=backend)(s["avg"][1]),
        f"{backend}/tiny/grad-heads-normalize":
            lambda s: DAAM(tv(s)[0], heads=True, normalize=True, backend=backend)(tv(s)[1]),
        f"{backend}/tiny/grad-checkpoint":
            lambda s: DAAM(tv(s)[0], activation_checkpointing=True, backend=backend)(tv(s)[1]),
        f"{backend}/tiny/grad-top2": lambda s: DAAM(tv(s)[0], backend=backend)(tv(s)[1], target=TopK(2)),
        f"{backend}/tiny/row-class":
            lambda s: DAAM(tv(s)[0], "row", backend=backend)(tv(s)[1], target=torch.tensor([4, 1])),
        f"{backend}/tiny/grad-int": lambda s: DAAM(tv(s)[0], backend=backend)(tv(s)[1], target=3),
        f"{backend}/tiny/grad-callable":
            lambda s: DAAM(tv(s)[0], backend=backend)(tv(s)[1], target=lambda o: o[:, 0] - o[:, 2]),
        f"{backend}/ssl/grad-labelfree": lambda s: DAAM(s["ssl"][0], backend=backend)(s["ssl"][1]),
        f"{backend}/ssl/grad-bank":
            lambda s: DAAM(s["ssl"][0], backend=backend)(s["ssl"][1], target=BankTarget(s["bank"])),
        f"{backend}/ssl/row-similarity":
            lambda s: DAAM(s["ssl"][0], "row", backend=backend)(s["ssl"][1], target=Similarity(_rnd((96,), 4))),
    })
    return cases


def _other_cases():
    cases = {}
    for name in baselines.BASELINES:
        for model in ("tiny", "beit"):
            cases[f"baseline/{model}/{name}"] = lambda s, n=name, model=model: baselines.explain(*s[model], n)
    cases["baseline/tiny/rollout-max"] = lambda s: baselines.rollout(*s["tiny"], discard_ratio=0.5, head_fusion="max")
    cases["baseline/avg/grad_rollout"] = lambda s: baselines.grad_rollout(*s["avg"])
    for m in ("grad", "row", "direct"):
        for model in ("tiny", "beit"):
            cases[f"reference/{model}/{m}"] = lambda s, m=m, model=model: daam_reference(*s[model], method=m)
    cases["reference/tiny/grad-heads-top2"] = lambda s: daam_reference(*s["tiny"], target=TopK(2), heads=True)
    cases["reference/ssl/grad-bank"] = lambda s: daam_reference(*s["ssl"], target=BankTarget(s["bank"]))
    return cases


CASES = {**_fast_cases("torch"), **_fast_cases("cpp"), **_other_cases()}


@pytest.fixture(scope="module")
def pinned():
    return load_file(PINNED)


def test_every_pinned_case_is_run(pinned):
    assert {k.split("/heads")[0].split("/targets")[0] for k in pinned} == set(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_maps_as_in_0_1_0(name, setup, pinned):
    if name.startswith("cpp/") and not has_cpp():
        pytest.skip("C++ extension not built")
    res = CASES[name](setup)
    got = {name: res.block_maps}
    if res.head_maps is not None:
        got[name + "/heads"] = res.head_maps
    if name + "/targets" in pinned:
        got[name + "/targets"] = res.targets
    assert set(got) == {k for k in pinned if k == name or k.startswith(name + "/")}
    for key, t in got.items():
        want = pinned[key]
        if name.startswith("reference/"):
            torch.testing.assert_close(t, want, rtol=1e-5, atol=1e-7, msg=key)
        else:
            assert t.dtype == want.dtype and torch.equal(t, want), \
                f"{key}: max abs difference {(t.double() - want.double()).abs().max().item():.3g}"
