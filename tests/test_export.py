"""daam_fast.export: the traced module, the ExportedProgram and the ONNX Runtime session against
eager DAAM(model, method="row") on every model family, at batch 1 and 5; targets; method="grad";
determinism of the ONNX bytes; the errors.

Exporting is slow (tracing, torch.export, the ONNX conversion): each model is exported once,
in a module-scoped fixture, and every check reads those artifacts. ONNX cases are skipped,
with the reason, when onnx / onnxscript / onnxruntime are not installed (the ``export`` extra).
"""
import importlib.util
import os

import pytest
import timm
import torch
from torch import nn

from daam_fast import DAAM
from daam_fast.bank import MemoryBank
from daam_fast.export import ClassInput, ExportError, export_program, saliency_module
from daam_fast.targets import BankTarget
from daam_fast.zoo import load_bank, load_model
from models import randomize, tiny_vit
from test_adapters import HAVE_HF, beit, hf_vit
from tolerances import assert_close

HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx, onnxscript, onnxruntime not installed "
                                                      "(pip install daam-fast[export])")

TORCH_TOL = 1e-5          # max relative error of the traced module / the program against eager
ORT_TOL = 1e-4            # ... of ONNX Runtime


def _ssl():
    model = load_model("shapes_vit_ssl")
    return model, BankTarget(load_bank("shapes_vit"))


# name -> (factory returning (model, target), what it exercises)
CASES = {
    "timm-vit": (lambda: (tiny_vit(depth=2), None), "timm VisionTransformer, 1 prefix token"),
    "deit-distilled": (lambda: (randomize(timm.create_model("deit_tiny_distilled_patch16_224", img_size=32,
                                                            patch_size=8, depth=2)), None),
                       "DeiT distilled: 2 prefix tokens, the head reads 2 rows"),
    "registers": (lambda: (tiny_vit(depth=2, reg_tokens=4), None), "[class] + 4 register tokens"),
    "beit-relpos": (lambda: (beit(use_rel_pos_bias=True, use_abs_pos_emb=False, global_pool="token"), None),
                    "BEiT relative position bias: the bias rows are constants of the row graph"),
    "hf-vit": (lambda: (hf_vit(), None), "Hugging Face ViTForImageClassification"),
    "shapes": (lambda: (load_model("shapes_vit"), None), "the shipped shapes model"),
    "ssl-bank": (_ssl, "the shipped model without its head, with its memory bank as constants"),
}


def _x(batch, size, seed=1):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


class Exported:
    """One model's eager result and its three exported forms."""

    def __init__(self, name, tmp):
        factory, _ = CASES[name]
        if name == "hf-vit" and not HAVE_HF:
            pytest.skip("transformers not installed (pip install daam-fast[hf])")
        self.model, self.target = factory()
        from daam_fast.adapters import get_adapter
        self.model_depth = get_adapter(self.model).depth
        self.sal = saliency_module(self.model, target=self.target, block_maps=True, targets=True, model_name=name)
        self.program = export_program(self.sal)
        self.onnx = None
        if HAVE_ONNX:
            from daam_fast.export import to_onnx
            # without the exporter's optimiser here, to keep the file fast: the determinism
            # and command-line tests export with it (the default)
            self.onnx = to_onnx(self.sal, os.path.join(tmp, f"{name}.onnx"), optimize=False)

    def eager(self, x):
        with DAAM(self.model, method="row") as daam:
            return daam(x, target=self.target)


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def exported(request, tmp_path_factory):
    return Exported(request.param, str(tmp_path_factory.mktemp("onnx")))


def _check(name, out, maps, bm, targets, ref, tol):
    expected_out = ref.logits if ref.logits is not None else ref.features
    assert_close(out, expected_out, name=f"{name} output", max_rel=tol)
    assert_close(maps, ref.maps, name=f"{name} maps", max_rel=tol)
    assert_close(bm, ref.block_maps, name=f"{name} block_maps", max_rel=tol)
    assert torch.equal(targets, ref.targets), f"{name}: targets {targets} != {ref.targets}"


@pytest.mark.parametrize("batch", [1, 5])
def test_module_and_program_equal_eager_row(exported, batch):
    """The traced module (under no_grad: no autograd at run time) and the ExportedProgram give
    eager row's maps, block maps, output and targets within 1e-5."""
    x = _x(batch, exported.sal.input_size)
    ref = exported.eager(x)
    assert (ref.block_maps > 0).float().mean() > 0.05          # maps worth comparing
    with torch.no_grad():
        out, maps, bm, t = exported.sal(x)
    _check("module", out, maps, bm, t, ref, TORCH_TOL)
    out, maps, bm, t = exported.program.module()(x)
    _check("program", out, maps, bm, t, ref, TORCH_TOL)


@needs_onnx
@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_runtime_equals_eager_row(exported, batch):
    """ONNX Runtime's CPU provider runs the file; OnnxExplainer's DAAMResult matches eager within 1e-4."""
    from daam_fast.export import OnnxExplainer
    x = _x(batch, exported.sal.input_size, seed=2)
    ref = exported.eager(x)
    if batch == 1:
        res = OnnxExplainer(exported.onnx)(x)
    else:                                   # the session's own options, threads set on them
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.spin_duration_us", "100")
        res = OnnxExplainer(exported.onnx, threads=1, session_options=opts)(x)
        assert opts.intra_op_num_threads == 1
    _check("onnx", res.logits if res.logits is not None else res.features, res.maps, res.block_maps, res.targets,
           ref, ORT_TOL)
    assert res.grid == ref.grid and res.method == "row"


def test_products_are_folded_onto_their_operands(exported):
    """The traced graph's linear layers and batched products are whole ops on the operands'
    own shapes (linear / matmul), not views around 2-D or 3-D products: fewer ops for ONNX
    Runtime, the same values (the equality tests above run on the folded graph)."""
    aten = torch.ops.aten
    nodes = [n for n in exported.sal.graph.graph.nodes if n.op == "call_function"]
    ops = [n.target for n in nodes]
    assert ops.count(aten.matmul.default) + ops.count(aten.linear.default) >= 4 * exported.model_depth
    assert aten.bmm.default not in ops
    # what is left of mm / addmm is the head's, on (B, C) features: no view feeds it
    flat = [n.name for n in nodes if n.target in (aten.addmm.default, aten.mm.default)
            and any(isinstance(a, torch.fx.Node) and a.target in (aten.view.default, aten._unsafe_view.default)
                    for a in n.args)]
    assert not flat, f"products left flattened: {flat}"


@needs_onnx
def test_onnx_graph_names_and_metadata(exported):
    import onnx
    from daam_fast.export.onnx import read_metadata
    proto = onnx.load(exported.onnx)
    sal = exported.sal
    assert [i.name for i in proto.graph.input] == ["pixels"]
    assert [o.name for o in proto.graph.output] == [sal.output_name, "maps", "block_maps", "targets"]
    assert sal.output_name == ("features" if exported.target is not None else "logits")
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value"), "the batch is dynamic"
    meta = read_metadata(exported.onnx)
    assert meta["method"] == "row" and meta["grid"] == f"{sal.grid[0]},{sal.grid[1]}"
    assert meta["model"] == sal.model_name and meta["input_size"] == f"{sal.input_size[0]},{sal.input_size[1]}"


@needs_onnx
def test_onnx_export_is_deterministic(tmp_path):
    """The same model exported twice, traced afresh each time, gives the same bytes."""
    from daam_fast.export import to_onnx
    model = tiny_vit(depth=1)
    a = to_onnx(model, tmp_path / "a.onnx")
    b = to_onnx(model, tmp_path / "b.onnx")
    c = to_onnx(model, tmp_path / "c.onnx", optimize=False)      # without the exporter's optimiser too
    assert open(c, "rb").read() == open(to_onnx(model, tmp_path / "d.onnx", optimize=False), "rb").read()
    assert open(a, "rb").read() == open(b, "rb").read()
    assert b"/work" not in open(a, "rb").read() and b"stack_trace" not in open(a, "rb").read()


@needs_onnx
def test_class_given_as_input_and_fixed_class(tmp_path):
    """target=ClassInput(): the class is the graph's second input (B,), in torch and in ONNX
    Runtime; target=3: one class held by the graph."""
    from daam_fast.export import OnnxExplainer, to_onnx
    model = tiny_vit(depth=2)
    x = _x(5, (32, 32), seed=3)
    cls = torch.tensor([0, 4, 2, 2, 1])
    ref = DAAM(model, method="row")(x, target=cls)
    sal = saliency_module(model, target=ClassInput())
    with torch.no_grad():
        out, maps = sal(x, cls)
    assert_close(maps, ref.maps, name="ClassInput maps", max_rel=TORCH_TOL)
    ep = export_program(sal)
    assert_close(ep.module()(x[:1], cls[:1])[1], ref.maps[:1], name="ClassInput program", max_rel=TORCH_TOL)
    ex = OnnxExplainer(to_onnx(sal, tmp_path / "cls.onnx"))
    assert ex.takes_target
    res = ex(x, target=cls)
    assert_close(res.maps, ref.maps, name="ClassInput onnx", max_rel=ORT_TOL)
    assert torch.equal(res.targets, cls)
    with pytest.raises(ValueError, match="second input"):
        ex(x)
    fixed = saliency_module(model, target=3, targets=True)
    with torch.no_grad():
        _, maps, t = fixed(x)
    assert_close(maps, DAAM(model, method="row")(x, target=3).maps, name="fixed class", max_rel=TORCH_TOL)
    assert (t == 3).all()


def test_callable_target_is_traced_into_the_graph():
    """A callable scoring the feature of a model without a head (here a dot product with a
    query) is part of the graph; the coefficients are not ReLU'd, as in eager."""
    model = tiny_vit(depth=2, num_classes=0)
    query = torch.randn(48, generator=torch.Generator().manual_seed(5))
    x = _x(3, (32, 32), seed=6)

    def score(f):
        return f @ query

    ref = DAAM(model, method="row")(x, target=score)
    with torch.no_grad():
        feats, maps = saliency_module(model, target=score)(x)
    assert_close(maps, ref.maps, name="callable target maps", max_rel=TORCH_TOL)
    assert_close(feats, ref.features, name="features", max_rel=TORCH_TOL)


@pytest.mark.parametrize("factory", [lambda: tiny_vit(depth=2), lambda: tiny_vit(depth=2, global_pool="avg"),
                                     lambda: beit(use_rel_pos_bias=True, use_abs_pos_emb=False, global_pool="token")],
                         ids=["timm-vit", "mean-pooled", "beit-relpos"])
def test_grad_through_the_same_trace(factory):
    """method="grad": the whole backward traced into the graph equals eager DAAM "grad"
    (a mean-pooled model too, which "row" refuses)."""
    model = factory()
    x = _x(3, (32, 32), seed=4)
    ref = DAAM(model, method="grad")(x)
    sal = saliency_module(model, method="grad", block_maps=True)
    with torch.no_grad():
        out, maps, bm = sal(x)
    assert_close(bm, ref.block_maps, name="grad block_maps", max_rel=TORCH_TOL)
    assert_close(out, ref.logits, name="grad logits", max_rel=TORCH_TOL)
    assert_close(export_program(sal).module()(x[:1])[1], ref.maps[:1], name="grad program", max_rel=TORCH_TOL)


def test_mean_pooled_row_is_refused_with_the_method_to_use():
    with pytest.raises(ValueError, match=r"mean-pooled.*use method='grad'"):
        saliency_module(tiny_vit(depth=1, global_pool="avg"))


class _DataDependentMlp(nn.Module):
    """An MLP that branches on its input's values: no graph can hold that branch."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, x):
        if x.mean() > 0:
            return self.mlp(x)
        return -self.mlp(x)


def test_an_op_that_cannot_be_traced_is_reported_with_its_block():
    model = tiny_vit(depth=3)
    model.blocks[1].mlp = _DataDependentMlp(model.blocks[1].mlp)
    with pytest.raises(ExportError, match=r"blocks\[1\]"):
        saliency_module(model)


def test_bad_targets_are_refused():
    model = tiny_vit(depth=1)
    with pytest.raises(ValueError, match="out of range"):
        saliency_module(model, target=7)
    with pytest.raises(ValueError, match="ClassInput"):
        saliency_module(model, target=[1, 2])
    with pytest.raises(ValueError, match="without a classifier head"):
        saliency_module(model, target=BankTarget(MemoryBank(torch.randn(4, 48), torch.arange(4))))
    with pytest.raises(ValueError, match="method="):
        saliency_module(model, method="direct")


@needs_onnx
def test_cli_export_then_explain_with_onnx_runtime(tmp_path, capsys):
    """``daam-fast export`` writes the shipped model's graph; ``daam-fast explain --onnx`` on a
    folder gives the PyTorch run's maps.npy (within 1e-4) and the same classes in summary.json."""
    import json

    import numpy as np

    from daam_fast.cli import main
    from daam_fast.export.onnx import read_metadata
    from daam_fast.zoo.shapes import make_shapes, save_pngs
    pics = tmp_path / "pics"
    pics.mkdir()
    save_pngs(make_shapes(3, seed=8), str(pics))
    graph = tmp_path / "shapes.onnx"
    assert main(["export", "--model", "shapes_vit", "--out", str(graph)]) == 0
    meta = read_metadata(graph)
    assert meta["model"] == "shapes_vit" and meta["method"] == "row" and meta["grid"] == "8,8"
    assert main(["export", "--model", "shapes_vit", "--out", str(graph)]) == 2          # exists: --overwrite
    assert "--overwrite" in capsys.readouterr().err
    runs = {}
    for name, extra in (("torch", ["--method", "row"]), ("onnx", ["--onnx", str(graph)])):
        out = tmp_path / name
        assert main(["explain", str(pics), "--out", str(out), "--outputs", "maps", "--quiet"] + extra) == 0
        runs[name] = (np.load(out / "maps" / "maps.npy"), json.loads((out / "summary.json").read_text()))
    assert_close(torch.from_numpy(runs["onnx"][0]), torch.from_numpy(runs["torch"][0]), name="maps.npy",
                 max_rel=ORT_TOL)
    pick = lambda s: [(e["path"], e["target"], e["class"]) for e in s["explained"]]  # noqa: E731
    assert pick(runs["onnx"][1]) == pick(runs["torch"][1])
    assert main(["explain", str(pics), "--out", str(tmp_path / "bad"), "--onnx", str(graph), "--quiet",
                 "--model", "vit_tiny_patch16_224", "--random-weights"]) == 2
    assert "exported from" in capsys.readouterr().err


REFERENCE_CASES = {
    # name -> (factory, input (H, W), batch)
    "grid-3x5-P2-B3": (lambda: tiny_vit(img_size=(24, 40), reg_tokens=1), (24, 40), 3),
    "N197-B2": (lambda: randomize(timm.create_model("deit_tiny_patch16_224", depth=2)), (224, 224), 2),
    "N785-B2": (lambda: tiny_vit(img_size=224, patch_size=8, embed_dim=64, depth=2, num_heads=2), (224, 224), 2),
}


@pytest.mark.parametrize("name", list(REFERENCE_CASES))
def test_exported_row_equals_the_reference(name, tmp_path):
    """The traced module (and, for the non-square grid, ONNX Runtime) against the pure-PyTorch
    reference of method="row" in float64: odd token counts (17 with 2 prefix tokens on a 3 x 5
    grid, 197, 785) and batches > 1."""
    from daam_fast.reference import daam_reference
    factory, size, batch = REFERENCE_CASES[name]
    model = factory().eval()
    x = _x(batch, size, seed=3)
    ref = daam_reference(model, x, method="row", dtype=torch.float64)
    assert (ref.block_maps > 0).float().mean() > 0.05          # maps worth comparing
    sal = saliency_module(model, block_maps=True, input_size=size)
    with torch.no_grad():
        out, maps, bm = sal(x)
    assert_close(maps, ref.maps.float(), name=f"{name} maps", max_rel=1e-4)
    assert_close(bm, ref.block_maps.float(), name=f"{name} block_maps", max_rel=1e-4)
    assert_close(out, ref.logits.float(), name=f"{name} logits", max_rel=1e-4)
    if HAVE_ONNX and name.startswith("grid"):
        from daam_fast.export import OnnxExplainer, to_onnx
        res = OnnxExplainer(to_onnx(sal, tmp_path / "m.onnx", optimize=False))(x)
        assert res.maps.shape == ref.maps.shape == (batch, 3, 3, 5)
        assert_close(res.maps, ref.maps.float(), name=f"{name} onnx maps", max_rel=1e-4)
