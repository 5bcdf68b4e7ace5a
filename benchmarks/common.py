"""The benchmarks use the package's own harness (daam_fast/bench.py), so `daam-fast bench`
and `benchmarks/` measure the same thing."""
from daam_fast.bench import make_inputs, make_model, peak_memory, providers, side_by_side, table  # noqa: F401
