#!/usr/bin/env bash
# make gpu-check: the one prepared command for a machine with a GPU (an image with its own
# python3 with torch, triton, timm, pytest, pybind11, cmake, ninja, nvcc; offline; no PyAV, no Ray).
# At most GPU_CHECK_BUDGET_S seconds (default 470: 8 minutes with the start); stages in order of
# value, each with the time the later ones leave it:
#   1. build daam_fast._C in place with that python3, for this GPU's arch only (sm_90 on H100 / H200;
#      DAAM_FAST_CUDA_ARCHS to change), then which backend auto takes for typical shapes, and why;
#   2. the fast correctness pass: tests/test_cuda.py (a few dozen cases: head dims 72-128 on every
#      backend, a side stream, the cls_attention backward, DAAM vs the reference, render, no sync);
#   3. the figures: benchmarks/gpu.py --quick (float32 and bfloat16);
#   4. the long matrix: every other test marked cuda (-m cuda over tests/, new ones included);
#   5. compute-sanitizer (memcheck) on one small case of each CUDA kernel.
# results.md and results.json in $OUT (or ./gpu_out) are rewritten after every stage (and by gpu.py
# after every section), so a timeout keeps what was measured. Without a GPU it says so and exits 0;
# GPU_CHECK_FORCE=1 runs the script end to end anyway (stages skip with their reasons; the figures
# stage runs gpu.py --cpu-smoke, which checks the script, not the GPU).
set -uo pipefail
OUTDIR=${OUT:-./gpu_out}
BUDGET=${GPU_CHECK_BUDGET_S:-470}
START=$(date +%s)
mkdir -p "$OUTDIR"
STAGES="$OUTDIR/stages.jsonl"
: > "$STAGES"
rm -f "$OUTDIR/bench.json" "$OUTDIR"/tests-*.log
STATUS=0

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# cap WANT RESERVE: WANT seconds, or what is left after keeping RESERVE (seconds of the default
# 470 s budget, scaled to this one) for the later stages
cap() { local l=$(( $(left) - $2 * BUDGET / 470 )); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }

# The python: GPU_PY, else python3 if it has torch, else the project's .venv
PY=${GPU_PY:-}
if [ -z "$PY" ]; then
  for c in python3 .venv/bin/python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import torch" >/dev/null 2>&1; then PY=$c; break; fi
  done
fi
RPY=python3; command -v python3 >/dev/null 2>&1 || RPY=${PY:-python}
report() { "$RPY" benchmarks/gpu_report.py "$OUTDIR" >/dev/null 2>&1 || echo "gpu-check: could not write results.md"; }
# record STAGE STATUS SECONDS NOTE: one line of stages.jsonl, then results.md / results.json again
record() {
  local note
  note=$(printf '%s' "$4" | tr -d '"\\' | tr '\n\t' '  ' | cut -c1-400)
  printf '{"stage": "%s", "status": "%s", "seconds": %s, "note": "%s"}\n' "$1" "$2" "$3" "$note" >> "$STAGES"
  echo "== $1: $2 (${3} s) $note"
  case "$2" in failed*) STATUS=1 ;; timed*) [ "$HAVE_GPU" = 1 ] && STATUS=1 ;; esac   # a dry run checks no GPU
  report
}
# run STAGE TIMEOUT LOG CMD...: runs CMD under the timeout, logs it, records passed / failed / timed out
run() {
  local stage=$1 limit=$2 log=$3 t0 rc summary
  shift 3
  if [ "$limit" -lt 10 ]; then record "$stage" "skipped" 0 "time budget spent ($(left) s left)"; return 0; fi
  t0=$(date +%s)
  timeout "$limit" "$@" > "$log" 2>&1
  rc=$?
  summary=$(grep -E "(passed|failed|skipped|error|deselected|no tests ran).* in [0-9.]+s" "$log" | tail -1)
  [ -n "$summary" ] || summary=$(grep -v '^\s*$' "$log" | tail -1)
  case $rc in
    0) record "$stage" "passed" $(( $(date +%s) - t0 )) "$summary" ;;
    124|137) record "$stage" "timed out after ${limit} s (kept what it measured)" $(( $(date +%s) - t0 )) "$summary" ;;
    *) record "$stage" "failed (exit $rc)" $(( $(date +%s) - t0 )) "$summary; log: $(basename "$log")" ;;
  esac
}

HAVE_GPU=0; WHY="no python with torch (GPU_PY, python3, .venv/bin/python)"
date -u +"%Y-%m-%d %H:%M:%S UTC" > "$OUTDIR/device.txt"
if [ -n "$PY" ]; then                                   # one start of torch: device facts, and is there a GPU
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$OUTDIR/device.txt" 2>/dev/null
  if "$PY" -c "import sys, torch; g = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if g else 'no GPU'); sys.exit(0 if g else 3)" >> "$OUTDIR/device.txt" 2>&1; then
    HAVE_GPU=1; WHY=""
  else
    WHY="no CUDA device visible to $PY"
  fi
fi
if [ "$HAVE_GPU" = 0 ] && [ "${GPU_CHECK_FORCE:-0}" != "1" ]; then
  echo "gpu-check: $WHY: nothing to check on this machine; exit 0 (GPU_CHECK_FORCE=1 runs the stages anyway)."
  exit 0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v nvcc >/dev/null 2>&1; then                  # CMake finds nvcc on PATH or through CUDACXX
  for d in /usr/local/cuda/bin /usr/local/cuda-13.0/bin /opt/cuda/bin; do
    [ -x "$d/nvcc" ] && { export PATH="$d:$PATH"; export CUDACXX="$d/nvcc"; break; }
  done
fi
cat "$OUTDIR/device.txt"
record "start" "$([ "$HAVE_GPU" = 1 ] && echo ok || echo "dry run")" 0 "python: ${PY:-none}; budget ${BUDGET} s${WHY:+; $WHY}"

# 1. build, for this GPU's arch only
if [ "$HAVE_GPU" = 1 ]; then
  ARCH=$("$PY" -c "import torch; a, b = torch.cuda.get_device_capability(0); print(f'{a}{b}')")
  export DAAM_FAST_CUDA_ARCHS=${DAAM_FAST_CUDA_ARCHS:-$ARCH}
  run "build (sm_$DAAM_FAST_CUDA_ARCHS)" "$(cap 240 200)" "$OUTDIR/build.log" "$PY" setup.py build_ext --inplace
  grep -E "Compiling entry|stack frame|Used [0-9]+ registers" "$OUTDIR/build.log" > "$OUTDIR/ptxas.txt" || true
else
  record "build" "skipped" 0 "$WHY (the dry run uses the extension already built)"
fi
if [ -n "$PY" ]; then
  # which backend auto takes, and why (the dispatcher's own explanation)
  run "dispatch" "$(cap 30 150)" "$OUTDIR/dispatch.log" "$PY" - <<'PYEOF'
import torch
from daam_fast import _ext
from daam_fast.ops import _dispatch
print("extension:", "CUDA kernels" if _ext.has_cuda_build() else f"no CUDA kernels ({_ext.ext_error() or 'built without'})")
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
for op, sizes in (("block_map", (64, 12, 197, 64, 1)), ("block_map", (2, 16, 257, 160, 1)),
                  ("cls_attention", (64, 6, 197, 197, 64)), ("render", (64, 12, 14, 14, 224, 224))):
    name, why = _dispatch.explain(op, dev, sizes)
    print(f"{op} {sizes} on {dev}: {name} ({why})")
PYEOF
fi

# 2. the fast correctness pass
if [ -n "$PY" ]; then
  run "tests: fast pass (tests/test_cuda.py)" "$(cap 150 150)" "$OUTDIR/tests-quick.log" \
    "$PY" -m pytest -q -ra -m cuda -p no:cacheprovider tests/test_cuda.py
  QUICK_DONE=$(tail -1 "$STAGES" | grep -c '"status": "passed"\|"status": "failed')
else
  record "tests: fast pass" "skipped" 0 "$WHY"; QUICK_DONE=0
fi

# 3. the figures
if [ "$HAVE_GPU" = 1 ]; then
  run "figures (gpu.py --quick)" "$(cap 200 90)" "$OUTDIR/bench.log" \
    "$PY" benchmarks/gpu.py --quick --dtype float32,bfloat16 --out "$OUTDIR"
elif [ -n "$PY" ]; then
  run "figures (gpu.py --cpu-smoke: no GPU, checks the script only)" "$(cap 60 30)" "$OUTDIR/bench.log" \
    "$PY" benchmarks/gpu.py --cpu-smoke --dtype float32 --out "$OUTDIR"
else
  record "figures" "skipped" 0 "$WHY"
fi

# 4. the long matrix: every test marked cuda (the fast pass's file again only if it did not finish)
if [ -n "$PY" ]; then
  IGNORE=(); [ "$QUICK_DONE" = 1 ] && IGNORE=(--ignore=tests/test_cuda.py)
  run "tests: every test marked cuda" "$(cap 400 60)" "$OUTDIR/tests-long.log" \
    "$PY" -m pytest -q -ra -m cuda -p no:cacheprovider --continue-on-collection-errors "${IGNORE[@]}" tests
else
  record "tests: every test marked cuda" "skipped" 0 "$WHY"
fi

# 5. compute-sanitizer on the CUDA kernels
if [ "$HAVE_GPU" != 1 ]; then
  record "compute-sanitizer" "skipped" 0 "$WHY"
elif ! command -v compute-sanitizer >/dev/null 2>&1; then
  record "compute-sanitizer" "skipped" 0 "compute-sanitizer not found"
else
  run "compute-sanitizer (memcheck)" "$(cap 90 0)" "$OUTDIR/sanitizer.log" \
    compute-sanitizer --tool memcheck --error-exitcode 3 "$PY" - <<'PYEOF'
import torch
from daam_fast.ops.block_map import block_map
from daam_fast.ops.cls_attention import cls_attention
from daam_fast.ops.render import render_frames
for d in (40, 128):                                   # channels 0-63 and 64-127 of the lanes
    q, k, v = torch.randn(3, 2, 3, 37, d, device="cuda").unbind(0)
    print(block_map(q[:, :, 0], k, v, q[:, :, 1], 0.2, 1, backend="cuda", heads=True)[1].shape)
    print(cls_attention(q[:, :, :5], k, v, backend="cuda")[0].shape)
s = torch.cuda.Stream()
with torch.cuda.stream(s):
    print(render_frames(torch.rand(2, 3, 5, 7, device="cuda"), torch.randint(0, 256, (2, 3, 20, 28), dtype=torch.uint8,
          device="cuda"), backend="cuda").shape)
torch.cuda.synchronize()
print("sanitizer case done")
PYEOF
  tail -3 "$OUTDIR/sanitizer.log"
fi

record "end" "$([ $STATUS = 0 ] && echo ok || echo "failures above")" $(( $(date +%s) - START )) "outputs in $OUTDIR"
echo "gpu-check: done in $(( $(date +%s) - START )) s, status $STATUS; $OUTDIR/results.md"
exit $STATUS
