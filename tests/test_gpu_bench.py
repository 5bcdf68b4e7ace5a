"""benchmarks/gpu.py: exits 0 with a clear message without a GPU, and its code path runs
(--cpu-smoke: the same functions on the CPU at tiny sizes), so the first GPU run does not
fail on a typo."""
import importlib.util
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


def test_no_gpu_message_and_exit_0(gpu_bench, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # the no-GPU path, even on a GPU machine
    assert gpu_bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "skipped, no CUDA device" in out and "make bench-gpu" in out, out
    assert "| block_map |" not in out


def test_cpu_smoke_runs_every_section(gpu_bench, capsys):
    assert gpu_bench.main(["--cpu-smoke", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    for needle in ("| block_map |", "| cls_attention |", "| render |", "| inference |",
                   "daam_fast grad (torch)", "daam_fast direct (torch)", "daam_fast.reference",
                   "daam_fast grad checkpoint", "daam_fast grad compile", "daam_fast direct compile",
                   "forward + input-only backward"):
        assert needle in out, f"{needle!r} missing from:\n{out}"
    assert "failed" not in out, out
