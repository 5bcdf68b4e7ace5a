"""``daam-fast eval`` end to end on 8 images, and its numbers against the metrics called directly."""
import json
import math
import os

import pytest
import torch

from daam_fast import DAAM, cli, metrics
from daam_fast.evaluate.config import DAAM_METHODS, METHODS
from daam_fast.metrics import spearman
from daam_fast.preprocess import input_spec, prepare
from daam_fast.zoo import load_model
from daam_fast.zoo.shapes import make_shapes, save_pngs


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("eval"))
    rc = cli.main(["eval", "--model", "shapes_vit", "--data", "shapes", "--num-images", "8", "--seed", "3",
                   "--steps", "2", "--methods", ",".join(METHODS), "--out", out, "--quiet", "--per-image",
                   "--batch-size", "5", "--threads", "1", "--noise-samples", "2", "--box-thresholds", "20"])
    return rc, out


# the results.json keys of the trust suite and their ranges
TRUST_KEYS = {"randomisation": (-1, 1), "max_sensitivity": (0, 10), "local_lipschitz": (0, 10), "stability": (-1, 1),
              "sparseness": (0, 1), "complexity": (0, math.log(64)), "max_box_acc": (0, 100), "pxap": (0, 1)}


def test_eval_writes_table_figure_json(shapes_run):
    rc, out = shapes_run
    assert rc == 0
    md = open(os.path.join(out, "results.md")).read()
    for label in ("DAAM (grad)", "DAAM direct", "rollout", "grad rollout", "attention", "Grad-CAM", "random",
                  "Deletion AUC", "Insertion AUC", "Average drop", "Increase in confidence", "Pointing game",
                  "Energy pointing game", "direct vs grad", "daam-fast eval --model shapes_vit --data shapes"):
        assert label in md, label
    assert "±" in md
    js = json.load(open(os.path.join(out, "results.json")))
    assert js["n"] == 8 and js["methods"] == list(METHODS)
    for key, row in js["table"].items():
        for m, v in row.items():
            assert v["count"] == 8 or key in ("stability", "complexity"), (key, m)   # NaN: no copy kept the class, a zero map
            lo, hi = TRUST_KEYS.get(key, (-1, 1) if key.startswith("randomisation") else
                                    (0, 100 if key in ("avg_drop", "increase", "pointing") else 1))
            assert lo <= v["mean"] <= hi, (key, m, v)
    for key in TRUST_KEYS:
        assert set(js["table"][key]) == set(METHODS), key
    assert len(js["fractions"]) == 3
    assert set(js["blocks"]) == set(DAAM_METHODS) | {"rollout", "grad_rollout"}   # the methods with L > 1
    assert len(js["blocks"]["grad"]["accumulated"]) == 6                          # shapes_vit has 6 blocks
    assert -1 <= js["direct_vs_grad"]["spearman"][0] <= 1
    from PIL import Image
    with Image.open(os.path.join(out, "eval.png")) as im:
        assert im.size[0] > 800 and im.size[1] > 200
    rows = open(os.path.join(out, "per_image.csv")).read().strip().splitlines()
    assert len(rows) == 1 + 8 * len(METHODS)


def test_eval_numbers_equal_metrics_called_directly(shapes_run):
    """The table's DAAM entries are the metrics of DAAM's final maps on the same images."""
    _, out = shapes_run
    js = json.load(open(os.path.join(out, "results.json")))
    model = load_model("shapes_vit")
    batch = make_shapes(8, seed=3)
    x, _ = prepare(batch.images, input_spec(model))
    with DAAM(model) as daam:
        res = daam(x)
    sal = res.final
    d = metrics.deletion(model, x, sal, res.targets, steps=2)
    e = metrics.energy_pointing_game(sal, batch.masks)
    p = metrics.pointing_game(sal, batch.masks)
    t = js["table"]
    assert math.isclose(t["deletion"]["grad"]["mean"], d.auc.mean().item(), rel_tol=1e-4)
    assert math.isclose(t["energy"]["grad"]["mean"], e.mean().item(), rel_tol=1e-4)
    assert math.isclose(t["pointing"]["grad"]["mean"], 100 * p.mean().item(), rel_tol=1e-4)
    se = e.double().std().item() / math.sqrt(8)
    assert math.isclose(t["energy"]["grad"]["se"], se, rel_tol=1e-3)
    blocks = metrics.energy_pointing_game(res.maps, batch.masks).mean(0)
    assert torch.allclose(torch.tensor(js["blocks"]["grad"]["accumulated"]), blocks, atol=1e-5)
    assert math.isclose(js["blocks"]["grad"]["accumulated"][-1], e.mean().item(), rel_tol=1e-4)


def test_eval_on_a_directory_with_masks_matches_generated(tmp_path, shapes_run):
    _, out_shapes = shapes_run
    batch = make_shapes(8, seed=3)
    save_pngs(batch, str(tmp_path / "data"), masks=True)          # <stem>.png and <stem>_mask.png side by side
    out = str(tmp_path / "out")
    rc = cli.main(["eval", "--data", str(tmp_path / "data"), "--masks", str(tmp_path / "data"), "--methods",
                   "attention", "--steps", "2", "--out", out, "--quiet", "--threads", "1"])
    assert rc == 0
    a = json.load(open(os.path.join(out, "results.json")))["table"]
    b = json.load(open(os.path.join(out_shapes, "results.json")))["table"]
    for key in ("deletion", "energy", "pointing"):
        for m in ("attention",):
            assert math.isclose(a[key][m]["mean"], b[key][m]["mean"], rel_tol=1e-4, abs_tol=1e-6), (key, m)
    # without masks: no pointing games, the rest still there
    out2 = str(tmp_path / "out2")
    assert cli.main(["eval", "--data", str(tmp_path / "data"), "--methods", "attention", "--steps", "2",
                     "--out", out2, "--quiet", "--threads", "1"]) == 0
    t = json.load(open(os.path.join(out2, "results.json")))["table"]
    assert "pointing" not in t and "deletion" in t


def test_eval_trust_metrics(shapes_run):
    """Every key in results.json, the randomisation curves and figure, the cost of each metric, and the
    numbers equal to the metrics called directly on DAAM's final maps."""
    from daam_fast.boxes import masks_to_boxes
    _, out = shapes_run
    js = json.load(open(os.path.join(out, "results.json")))
    md = open(os.path.join(out, "results.md")).read()
    for label in ("MaxBoxAccV2", "PxAP", "Randomisation", "Max-sensitivity", "Local Lipschitz", "Stability",
                  "Sparseness", "Complexity", "Cost of each metric", "randomisation.png"):
        assert label in md, label
    from PIL import Image
    with Image.open(os.path.join(out, "randomisation.png")) as im:
        assert im.size[0] > 1000
    r = js["randomisation"]["grad"]
    assert r["steps"] == ["original", "head"] + [f"block {b}" for b in range(6, 0, -1)] + ["embedding"]
    assert r["layers"] == r["steps"][1:]
    assert math.isclose(r["cascading"]["spearman"][0], 1.0, abs_tol=1e-6)
    assert r["cascading"]["spearman"][-1] < 0.5                                   # DAAM depends on the weights
    assert math.isclose(js["table"]["randomisation"]["grad"]["mean"], r["cascading"]["spearman"][-1], rel_tol=1e-5)
    for m in METHODS:
        assert set(js["metric_ms_per_image"][m]) == {"faithfulness", "localisation", "boxes", "randomisation",
                                                     "robustness", "complexity"}
        assert all(v >= 0 for v in js["metric_ms_per_image"][m].values())
    model = load_model("shapes_vit")
    batch = make_shapes(8, seed=3)
    x, _ = prepare(batch.images, input_spec(model))
    with DAAM(model) as daam:
        sal = daam(x).final
    t = js["table"]
    assert math.isclose(t["sparseness"]["grad"]["mean"], metrics.sparseness(sal).mean().item(), rel_tol=1e-4)
    assert math.isclose(t["complexity"]["grad"]["mean"], metrics.complexity(sal).mean().item(), rel_tol=1e-4)
    ba = metrics.max_box_acc(sal, masks_to_boxes(batch.masks), (64, 64), thresholds=20)
    assert math.isclose(t["max_box_acc"]["grad"]["mean"], 100 * ba.value.item(), rel_tol=1e-4, abs_tol=1e-6)
    assert js["max_box_acc"]["grad"]["best_threshold"] == pytest.approx(ba.best_threshold.tolist())
    px = metrics.pxap(sal, batch.masks, thresholds=20)
    assert math.isclose(t["pxap"]["grad"]["mean"], px.pxap.item(), rel_tol=1e-4)


def test_eval_metric_groups(tmp_path, capsys):
    """--metrics picks the groups: only their rows, no curves figure without faithfulness; a bad name is exit 2."""
    out = str(tmp_path / "o")
    assert cli.main(["eval", "--num-images", "4", "--methods", "attention,gradcam", "--metrics", "complexity,boxes",
                     "--box-thresholds", "10", "--out", out, "--quiet", "--threads", "1"]) == 0
    js = json.load(open(os.path.join(out, "results.json")))
    assert set(js["table"]) == {"sparseness", "complexity", "max_box_acc", "pxap"}
    assert js["metrics"] == ["boxes", "complexity"]
    assert not os.path.exists(os.path.join(out, "eval.png")) and not os.path.exists(os.path.join(out, "randomisation.png"))
    assert cli.main(["eval", "--metrics", "faithfulness,sanity", "--out", str(tmp_path / "p")]) == 2
    assert "sanity" in capsys.readouterr().err


def test_threads_option_is_restored(tmp_path):
    before = torch.get_num_threads()
    cli.main(["eval", "--methods", "lime", "--threads", "1", "--out", str(tmp_path)])
    assert torch.get_num_threads() == before


def test_eval_bad_usage(tmp_path, capsys, shapes_run):
    _, out = shapes_run
    assert cli.main(["eval", "--methods", "grad,lime", "--out", str(tmp_path / "a")]) == 2
    assert "lime" in capsys.readouterr().err
    assert cli.main(["eval", "--methods", "daam,rollout", "--out", str(tmp_path / "a")]) == 2      # the old name
    assert "'daam' is now 'grad'" in capsys.readouterr().err
    before = os.path.getmtime(os.path.join(out, "results.md"))
    assert cli.main(["eval", "--num-images", "2", "--methods", "attention", "--out", out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert os.path.getmtime(os.path.join(out, "results.md")) == before
    d = tmp_path / "imgs"
    save_pngs(make_shapes(2, seed=0), str(d))
    assert cli.main(["eval", "--data", str(d), "--target", "label", "--out", str(tmp_path / "b")]) == 2
    assert "label" in capsys.readouterr().err
    assert cli.main(["eval", "--model", "shapes_vit_ssl", "--out", str(tmp_path / "c")]) == 2
    assert "classifier head" in capsys.readouterr().err
    assert cli.main(["eval", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "d")]) == 2


def test_spearman_known():
    a = torch.tensor([[1.0, 2, 3, 4], [0, 0, 1, 2], [1, 1, 1, 1]])
    b = torch.tensor([[4.0, 3, 2, 1], [1, 2, 3, 4], [1, 2, 3, 4]])
    r = spearman(a, b)
    # row 1: ranks (0.5, 0.5, 2, 3) vs (0, 1, 2, 3): 4.5 / sqrt(4.5 * 5)
    assert math.isclose(r[0].item(), -1.0, abs_tol=1e-6)
    assert math.isclose(r[1].item(), 4.5 / math.sqrt(22.5), rel_tol=1e-6)
    assert math.isnan(r[2].item())
