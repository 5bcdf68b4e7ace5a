"""benchmarks/gpu.py: exits 0 with a clear message without a GPU, and its code path runs
(--cpu-smoke: the same functions on the CPU at tiny sizes), so the first GPU run does not
fail on a typo."""
import importlib.util
import os
import subprocess
import sys

import torch

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu.py")


def test_no_gpu_message_and_exit_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}          # hide any GPU: the no-GPU path
    r = subprocess.run([sys.executable, SCRIPT, "--quick"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "skipped, no CUDA device" in r.stdout and "make bench-gpu" in r.stdout, r.stdout


def test_cpu_smoke_runs_every_section(capsys):
    spec = importlib.util.spec_from_file_location("daam_gpu_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not torch.cuda.is_available():
        assert mod.gpu_status()[0] is False
    assert mod.main(["--cpu-smoke", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    for needle in ("| block_map |", "| cls_attention |", "| render |", "| inference |",
                   "daam_fast grad (torch)", "daam_fast direct (torch)", "daam_fast.reference"):
        assert needle in out, f"{needle!r} missing from:\n{out}"
    assert "failed" not in out, out
