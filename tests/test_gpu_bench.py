"""benchmarks/gpu.py: exits 0 with a clear message without a GPU, and its code path runs
(--cpu-smoke: the same functions on the CPU at tiny sizes), so the first GPU run does not
fail on a typo; it writes results.json and results.md; --dtype is honoured; inputs rotate."""
import importlib.util
import json
import os

import pytest
import torch

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu.py")


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("daam_gpu_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_gpu_message_and_exit_0(gpu_bench, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # the no-GPU path, even on a GPU machine
    assert gpu_bench.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped, no CUDA device" in out and "make bench-gpu" in out, out
    assert "| block_map |" not in out


def test_cpu_smoke_runs_every_section(gpu_bench, capsys, tmp_path):
    assert gpu_bench.main(["--cpu-smoke", "--dtype", "float32,bfloat16", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for needle in ("| block_map |", "| cls_attention |", "| render |", "| inference |",
                   "| daam_fast grad |", "| daam_fast direct |", "SDPA alone"):
        assert needle in out, f"{needle!r} missing from:\n{out}"
    assert "failed" not in out, out
    res = json.load(open(tmp_path / "results.json"))
    dtypes = {(r["section"], r["dtype"]) for r in res["records"]}
    assert {("op", "float32"), ("op", "bfloat16"), ("e2e", "float32"), ("e2e", "bfloat16")} <= dtypes, dtypes
    assert all("error" not in r for r in res["records"])
    md = open(tmp_path / "results.md").read()
    assert "| block_map |" in md and "images / s" in md


def test_timing_helpers(gpu_bench):
    """Many calls per timing (launches), each on the next input copy; enough copies to pass 2x L2."""
    seen = []
    gpu_bench.time_ms(lambda i: seen.append(i), torch.device("cpu"), reps=3, launches=4, warmup=1)
    assert seen == [0] + list(range(12))
    cuda = torch.device("cuda")
    orig = gpu_bench.l2_bytes
    try:
        gpu_bench.l2_bytes = lambda d: 60 << 20
        assert gpu_bench.copies_past_l2(cuda, 10 << 20) == 12
        assert gpu_bench.copies_past_l2(cuda, 1 << 30) == 1
        assert gpu_bench.copies_past_l2(cuda, 1, cap=64) == 64
        assert gpu_bench.copies_past_l2(cuda, 200 << 10) == 615      # B = 1 ViT-B block_map inputs
    finally:
        gpu_bench.l2_bytes = orig


def test_make_gpu_check_without_gpu_exits_0_quickly():
    """make gpu-check on a machine without a GPU: says so and exits 0 in seconds."""
    import shutil
    import subprocess
    import sys
    import time
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = os.path.join(os.path.dirname(__file__), "..")
    env = dict(os.environ, GPU_PY=sys.executable, CUDA_VISIBLE_DEVICES="")
    t0 = time.perf_counter()
    res = subprocess.run(["make", "-s", "gpu-check"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no CUDA device" in res.stdout, res.stdout
    assert time.perf_counter() - t0 < 60
