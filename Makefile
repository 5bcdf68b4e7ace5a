# Two commands do all the set-up on a fresh machine:  make demo  and  make test.
# Both create .venv, install the pinned torch/torchvision (the CUDA build of torch 2.14.1, which
# also runs on a machine without a GPU), timm, and this package in editable mode with its `test`
# extra (every optional dependency the tests use), which builds the compiled extension
# daam_fast._C (C++ always, CUDA when nvcc is found).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.daam_fast_installed
QUIET_PIP := 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
EXT_SOURCES := setup.py pyproject.toml CMakeLists.txt $(shell find csrc -type f 2>/dev/null)
export OMP_NUM_THREADS ?= 2

.PHONY: install demo test test-fast docs bench bench-video bench-gpu gpu-check eval-report clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python $(EXT_SOURCES)
	$(BIN)/pip install -q $(PINS) timm pybind11 cmake ninja "setuptools>=77" wheel $(QUIET_PIP)
	$(BIN)/pip install -q --no-build-isolation -e ".[test]" $(PINS) $(QUIET_PIP)
	$(BIN)/python -c "import daam_fast, daam_fast._ext as e; print('daam_fast', daam_fast.__version__, '| C++ ext:', e.has_cpp(), '| CUDA compiled:', e.has_cuda_build())"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/daam-fast demo

# The whole suite (Triton kernels run on the CPU interpreter on small shapes).
test: $(STAMP)
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q -ra tests

# The docs site into site/ (mkdocs-material + mkdocstrings, the `docs` extra, which the `test` extra
# includes), offline; a broken link or a missing reference fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x tests -k "not triton"

# CPU benchmarks (pytest-benchmark); installs the `bench` extra (daam-timm-vit, grad-cam) first.
# Then the commands against their explainer (benchmarks/bench_cli.py: explain, video, peak RSS);
# `make bench BENCH_CLI=--quick` for the small sizes (about a minute on 2 free cores).
BENCH_CLI ?=
bench: $(STAMP)
	$(BIN)/pip install -q daam-timm-vit grad-cam $(PINS) $(QUIET_PIP)
	$(BIN)/python -m pytest -q -s benchmarks --benchmark-only --benchmark-columns=median,iqr,rounds
	$(BIN)/python benchmarks/bench_cli.py $(BENCH_CLI)

bench-video: $(STAMP)
	$(BIN)/python benchmarks/bench_video.py --frames 200 --batch 16 --threads 1

# The evaluation report in docs/eval/ (shipped model, 500 shapes images, every metric group; about 20 min on 1 thread).
eval-report: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/daam-fast eval --model shapes_vit --data shapes --num-images 500 --seed 0 \
	    --methods grad,direct,row,rollout,grad_rollout,attention,gradcam,random --threads 1 --out docs/eval --overwrite

# GPU benchmark (every op backend, fp32 and bf16, ViT-S/16 and ViT-B/16 end to end) into gpu_out/.
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py --dtype float32,bfloat16 --out $${OUT:-gpu_out}

# The one prepared command for a GPU machine (an image with its own python3 and torch, no venv),
# at most 8 minutes: build for this GPU's arch, the fast correctness pass (tests/test_cuda.py),
# the figures (gpu.py --quick), every test marked cuda, compute-sanitizer; results.md and
# results.json in $$OUT (or ./gpu_out) after every stage. Without a GPU it says so and exits 0;
# GPU_CHECK_FORCE=1 runs it end to end anyway (stages skip with reasons), GPU_CHECK_BUDGET_S=90
# shortens it, GPU_PY picks the python (default: python3 if it has torch, else .venv/bin/python).
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf build *.egg-info daam_fast/_C*.so .pytest_cache .benchmarks
