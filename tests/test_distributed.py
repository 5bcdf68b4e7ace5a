"""daam_fast.distributed on a local Ray instance (ray.init(num_cpus=2)), with the shipped model.

64 generated 64x64 PNGs of which 3 are corrupt (not an image, truncated, empty): 61 results +
3 errors; a run SIGKILLed after its first shard and restarted ends with every image done
exactly once; the maps equal the single-process API's (DAAM). Ray starts once per module;
the actor pools use one actor each to keep the start-up cost (an actor imports torch) low.
The UDF itself is also called directly, without Ray, for the in-memory "wrong mode" inputs.
"""
import collections
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'daam-fast[ray]')")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (Ray Data needs it; comes with ray[data])")

from daam_fast import DAAM  # noqa: E402
from daam_fast.distributed.actor import _Explainer  # noqa: E402
from daam_fast.distributed.inputs import _image_from_array  # noqa: E402
from daam_fast.distributed.results import load_errors, load_results  # noqa: E402
from daam_fast.distributed.run import explain_dataset  # noqa: E402
from daam_fast.distributed.spec import ModelSpec  # noqa: E402
from daam_fast.io import read_image  # noqa: E402
from daam_fast.outputs import load_maps  # noqa: E402
from daam_fast.preprocess import input_spec, prepare  # noqa: E402
from daam_fast.zoo import load_model  # noqa: E402
from daam_fast.zoo.shapes import make_shapes, save_pngs  # noqa: E402
from tolerances import assert_close  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_IMAGES, CORRUPT = 64, ("shape_0005", "shape_0030", "shape_0057")


@pytest.fixture(scope="module")
def ray_address():
    if ray.is_initialized():
        ray.shutdown()
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                   object_store_memory=150 * 1024 * 1024)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shapes")
    paths = save_pngs(make_shapes(N_IMAGES, seed=7), str(d))
    by_stem = {os.path.basename(p)[:10]: p for p in paths}
    with open(by_stem[CORRUPT[0]], "wb") as f:                      # unreadable: not an image
        f.write(b"this is not a PNG file\n" * 4)
    data = open(by_stem[CORRUPT[1]], "rb").read()                   # truncated PNG
    with open(by_stem[CORRUPT[1]], "wb") as f:
        f.write(data[: len(data) // 2])
    open(by_stem[CORRUPT[2]], "wb").close()                         # empty file
    return str(d)


@pytest.fixture(scope="module")
def first_run(ray_address, image_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run1"))
    manifest = explain_dataset(image_dir, out, "shapes_vit", num_actors=1, shard_size=16, batch_size=8)
    return out, manifest


def _single_process_maps(image_dir, ids):
    model = load_model("shapes_vit")
    pics = [read_image(os.path.join(image_dir, i)) for i in ids]
    x, _ = prepare(pics, input_spec(model))
    with DAAM(model) as daam:
        return daam(x)


def _all_shard_ids(out):
    d = os.path.join(out, "shards")
    return [i for f in sorted(os.listdir(d)) if f.startswith("shard-")
            for i in load_maps(os.path.join(d, f))["index"]["ids"]]


def test_results_plus_errors_equal_inputs(first_run, image_dir):
    out, m = first_run
    assert (m["inputs"], m["results"], m["errors"], m["missing"]) == (64, 61, 3, 0)
    assert m["complete"] and m["map_shape"] == [6, 8, 8]
    errs = load_errors(out)
    assert sorted(e["id"][:10] for e in errs) == sorted(CORRUPT)
    reasons = {e["id"][:10]: e["reason"] for e in errs}
    assert "not an image" in reasons[CORRUPT[0]]
    assert "truncated" in reasons[CORRUPT[1]]
    assert "empty file" in reasons[CORRUPT[2]]
    ids = _all_shard_ids(out)
    assert sorted(ids) == sorted(os.listdir(image_dir)) and len(ids) == len(set(ids))
    assert sum(s["rows"] for s in m["shards"]) == 64
    assert not [f for f in os.listdir(os.path.join(out, "shards")) if f.startswith(".tmp-")]
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f)["results"] == 61


def test_results_equal_single_process_api(first_run, image_dir):
    out, _ = first_run
    r = load_results(out)
    assert r["maps"].shape == (61, 6, 8, 8)
    ref = _single_process_maps(image_dir, list(r["ids"]))
    assert np.array_equal(r["targets"], ref.targets.numpy())
    assert_close(torch.from_numpy(r["maps"]), ref.maps, torch.float32, name="Ray maps vs DAAM")
    assert_close(torch.from_numpy(r["block_maps"]), ref.block_maps, torch.float32, name="Ray block_maps vs DAAM")
    assert_close(torch.from_numpy(r["logits"]), ref.logits, torch.float32, name="Ray logits vs DAAM")
    assert (r["maps"][:, -1] > 0).mean() > 0.05                      # the maps are not degenerate


def test_rerun_skips_complete_shards(first_run, image_dir):
    out, m = first_run
    before = {f: os.stat(os.path.join(out, "shards", f)).st_mtime_ns for f in os.listdir(os.path.join(out, "shards"))}
    m2 = explain_dataset(image_dir, out, "shapes_vit", num_actors=1, shard_size=16)  # nothing to do: no actor starts
    after = {f: os.stat(os.path.join(out, "shards", f)).st_mtime_ns for f in os.listdir(os.path.join(out, "shards"))}
    assert before == after
    assert (m2["results"], m2["errors"], m2["complete"]) == (61, 3, True)


def test_other_settings_refused_without_overwrite(first_run, image_dir):
    out, _ = first_run
    with pytest.raises(ValueError, match="other settings.*overwrite"):
        explain_dataset(image_dir, out, "shapes_vit", method="direct")
    with pytest.raises(ValueError, match="num_actors"):
        explain_dataset(image_dir, out, "shapes_vit", num_actors=0)


def _wait_cpus_free(total=2.0, timeout=60.0):
    """The killed driver's actor releases its CPU once Ray has reaped it."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ray.available_resources().get("CPU", 0.0) >= total:
            return
        time.sleep(0.2)
    raise AssertionError(f"the killed run's actors still hold CPUs after {timeout} s")


def test_killed_run_resumes_exactly_once(ray_address, image_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    script = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False)\n"
              "from daam_fast.distributed import explain_dataset\n"
              "explain_dataset(sys.argv[2], sys.argv[3], 'shapes_vit', num_actors=1, shard_size=4, _shard_delay=0.5)\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script, ray_address, image_dir, out], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shard_dir = os.path.join(out, "shards")
    t0 = time.time()
    try:
        while not (os.path.isdir(shard_dir) and any(f.startswith("shard-") for f in os.listdir(shard_dir))):
            assert proc.poll() is None, f"the run ended before writing a shard: {proc.stderr.read().decode()[-2000:]}"
            assert time.time() - t0 < 120, "no shard after 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _wait_cpus_free()
    done_before = {f: os.stat(os.path.join(shard_dir, f)).st_mtime_ns
                   for f in os.listdir(shard_dir) if f.startswith("shard-")}
    assert 1 <= len(done_before) < 16, "the run was not interrupted halfway"
    assert not os.path.exists(os.path.join(out, "manifest.json"))

    from daam_fast.cli import main
    code = main(["batch", image_dir, "--out", out, "--ray-address", ray_address, "--num-actors", "1",
                 "--shard-size", "4", "--quiet"])
    assert code == 1, capsys.readouterr().err[-2000:]                # finished, with 3 bad inputs
    ids = _all_shard_ids(out)
    counts = collections.Counter(ids)
    assert set(counts) == set(os.listdir(image_dir)) and max(counts.values()) == 1, "not exactly once"
    assert {f: os.stat(os.path.join(shard_dir, f)).st_mtime_ns for f in done_before} == done_before
    assert not [f for f in os.listdir(shard_dir) if f.startswith(".tmp-")]
    with open(os.path.join(out, "manifest.json")) as f:
        m = json.load(f)
    assert (m["inputs"], m["results"], m["errors"], m["missing"], m["complete"]) == (64, 61, 3, 0, True)
    assert not os.path.exists(os.path.join(out, ".lock"))


def test_ray_dataset_source_with_arrays(ray_address, tmp_path):
    batch = make_shapes(5, seed=11)
    good = [batch.images[i].permute(1, 2, 0).numpy() for i in range(5)]
    rows = [{"id": f"img{i}", "image": a} for i, a in enumerate(good)]
    rows.append({"id": "rgba", "image": np.zeros((64, 64, 4), np.uint8)})
    ds = ray.data.from_items(rows)
    out = str(tmp_path / "ds")
    m = explain_dataset(ds, out, ModelSpec("shapes_vit"), num_actors=1, shard_size=3, batch_size=2)
    assert (m["inputs"], m["results"], m["errors"], m["complete"]) == (6, 5, 1, True)
    assert "wrong mode" in load_errors(out)[0]["reason"]
    r = load_results(out)
    model = load_model("shapes_vit")
    x, _ = prepare(batch.images, input_spec(model))
    ref = DAAM(model)(x)
    assert list(r["ids"]) == [f"img{i}" for i in range(5)]
    assert_close(torch.from_numpy(r["maps"]), ref.maps, torch.float32, name="dataset source vs DAAM")


# ---------------------------------------------------------------- without Ray: the UDF, inputs, errors
def test_image_from_array_reasons():
    assert _image_from_array(np.zeros((4, 5, 3), np.uint8))[0].shape == (4, 5, 3)
    assert _image_from_array(np.zeros((4, 5), np.uint8))[0].shape == (4, 5, 3)       # grey
    for bad, why in [(np.zeros((4, 5, 4), np.uint8), "4 channels"), (np.zeros((4, 5, 3)), "float64"),
                     (np.zeros((2, 4, 5, 3), np.uint8), "shape"), (np.zeros((0, 5, 3), np.uint8), "empty")]:
        a, reason = _image_from_array(bad)
        assert a is None and why in reason


def test_udf_without_ray_writes_complete_shard(tmp_path):
    udf = _Explainer(ModelSpec(), str(tmp_path), "grad", None, 2, "cpu", 1)
    imgs = make_shapes(3, seed=2).images.permute(0, 2, 3, 1).numpy()
    batch = {"id": np.array(["a", "b", "c", "d", "e"], dtype=object),
             "image": np.array([imgs[0], np.zeros((8, 8, 2), np.uint8), imgs[1],
                                np.full((64, 64, 3), 1.0, np.float32), imgs[2]], dtype=object)}
    out = udf(batch)
    assert out["rows"].tolist() == [5] and out["results"].tolist() == [3] and out["errors"].tolist() == [2]
    files = os.listdir(tmp_path / "shards")
    assert files == [out["shard"][0]]                               # no temporary folder left
    z = load_maps(str(tmp_path / "shards" / files[0]))              # a shard is a maps folder
    assert isinstance(z["maps"], np.memmap) and z["maps"].shape == (5, 6, 8, 8)
    errs = dict(zip(z["index"]["ids"], z["index"]["errors"]))
    assert errs["a"] is None and "wrong mode" in errs["b"] and "wrong mode" in errs["d"]
    assert z["explained"].tolist() == [True, False, True, False, True]
    assert z["targets"][[1, 3]].tolist() == [-1, -1] and not z["maps"][[1, 3]].any()
    assert (z["targets"][[0, 2, 4]] >= 0).all() and z["logits"].shape == (5, 6)
    ref = DAAM(load_model("shapes_vit"))(prepare(list(make_shapes(3, seed=2).images), input_spec(udf.model))[0])
    assert_close(torch.from_numpy(np.asarray(z["maps"][[0, 2, 4]])), ref.maps, torch.float32, name="shard maps")
    assert_close(torch.from_numpy(np.asarray(z["block_maps"][[0, 2, 4]])), ref.block_maps, torch.float32,
                 name="shard block_maps")


def test_shard_write_that_fails_leaves_no_shard(tmp_path, monkeypatch):
    from daam_fast.distributed import shards
    rows = [{"id": "a", "path": None, "error": None, "target": 1, "maps": np.ones((2, 3, 3), np.float32),
             "block_maps": np.ones((2, 3, 3), np.float32)}]

    def broken(self):
        raise OSError("disk full")
    monkeypatch.setattr(shards.MapStore, "close", broken)
    with pytest.raises(OSError, match="disk full"):
        shards._write_shard(str(tmp_path), rows)
    assert os.listdir(tmp_path) == [] and shards._complete_shards(str(tmp_path.parent)) == []
    monkeypatch.undo()
    name = shards._write_shard(str(tmp_path), rows)
    assert shards._write_shard(str(tmp_path), rows) == name and os.listdir(tmp_path) == [name]   # written once


def test_udf_daam_options_reach_the_actor_and_bad_ones_refused(tmp_path):
    udf = _Explainer(ModelSpec(), str(tmp_path), "grad", None, 2, "cpu", 1,
                     daam_options={"activation_checkpointing": True})
    assert udf.daam.activation_checkpointing
    imgs = make_shapes(2, seed=3).images.permute(0, 2, 3, 1).numpy()
    col = np.empty(2, dtype=object)
    col[0], col[1] = imgs[0], imgs[1]
    out = udf({"id": np.array(["a", "b"], dtype=object), "image": col})
    assert out["results"].tolist() == [2], out
    with pytest.raises(ValueError, match="unknown"):
        explain_dataset(str(tmp_path), str(tmp_path / "o"), "shapes_vit", daam_options={"checkpointing": True})
    with pytest.raises(ValueError, match="method='grad'"):
        explain_dataset(str(tmp_path), str(tmp_path / "o"), "shapes_vit", method="direct",
                        daam_options={"activation_checkpointing": True})
