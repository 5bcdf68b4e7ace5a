#!/usr/bin/env bash
# make gpu-check: the one prepared command for a machine with a GPU (../shared/GPU.md: its own
# python3 with torch, triton, timm, pytest, pybind11, cmake, ninja, nvcc; offline; no PyAV, no Ray).
#   1. builds daam_fast._C in place with that python3 (sm_90 only: quicker; DAAM_FAST_CUDA_ARCHS to change)
#   2. runs the CUDA tests (-m cuda: every backend against the reference on CUDA tensors, the DAAM call
#      under torch.cuda.set_sync_debug_mode("error")), then compute-sanitizer on one small case
#   3. benchmarks/gpu.py --quick (fp32 and bf16) writing results.json / results.md
# Everything lands in $OUT (or ./gpu_out). At most 8 minutes in all; without a GPU it says so, exits 0.
set -uo pipefail
PY=${GPU_PY:-python3}
OUTDIR=${OUT:-./gpu_out}
BUDGET=${GPU_CHECK_BUDGET_S:-470}
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
mkdir -p "$OUTDIR"
STATUS=0
# GPU_CHECK_FORCE=1 runs every stage even without a GPU (a dry run of this script: the CUDA tests skip)
if [ "${GPU_CHECK_FORCE:-0}" != "1" ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  echo "gpu-check: no CUDA device visible to $PY (or no torch there): nothing to check on this machine; exit 0."
  exit 0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v nvcc >/dev/null 2>&1; then                  # CMake finds nvcc on PATH or through CUDACXX
  for d in /usr/local/cuda/bin /usr/local/cuda-13.0/bin /opt/cuda/bin; do
    [ -x "$d/nvcc" ] && { export PATH="$d:$PATH"; export CUDACXX="$d/nvcc"; break; }
  done
fi
export DAAM_FAST_CUDA_ARCHS=${DAAM_FAST_CUDA_ARCHS:-90}
{ nvidia-smi || true; "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"; } 2>&1 | tee "$OUTDIR/device.txt"

echo "== 1. build (log: $OUTDIR/build.log)"
timeout $(( $(left) < 200 ? $(left) : 200 )) "$PY" setup.py build_ext --inplace > "$OUTDIR/build.log" 2>&1
"$PY" -c "import daam_fast._ext as e; ok = e.has_cuda_build(); print('extension built, CUDA kernels:', ok, e.ext_error()); raise SystemExit(0 if ok else 1)" \
  || { echo "gpu-check: the CUDA extension did not build (see build.log); the tests run without it"; STATUS=1; }
grep -E "Compiling entry|stack frame|Used [0-9]+ registers" "$OUTDIR/build.log" > "$OUTDIR/ptxas.txt" || true

echo "== 2. CUDA tests (log: $OUTDIR/tests.log)"
timeout $(( $(left) - 150 )) "$PY" -m pytest -q -ra -m cuda -p no:cacheprovider \
  tests/test_cuda.py tests/test_op_block_map.py tests/test_op_cls_attention.py tests/test_op_render.py \
  tests/test_op_library.py tests/test_no_sync.py 2>&1 | tee "$OUTDIR/tests.log" | tail -25
[ "${PIPESTATUS[0]}" = "0" ] || STATUS=1
if command -v compute-sanitizer >/dev/null 2>&1 && [ "$(left)" -gt 150 ]; then
  echo "== compute-sanitizer (memcheck) on one small case of each CUDA kernel (log: $OUTDIR/sanitizer.log)"
  timeout 60 compute-sanitizer --tool memcheck --error-exitcode 3 "$PY" - > "$OUTDIR/sanitizer.log" 2>&1 <<'PYEOF'
import torch
from daam_fast.ops.block_map import block_map
from daam_fast.ops.cls_attention import cls_attention
from daam_fast.ops.render import render_frames
q, k, v = torch.randn(3, 2, 3, 37, 40, device="cuda").unbind(0)
print(block_map(q[:, :, 0], k, v, q[:, :, 1], 0.2, 1, backend="cuda", heads=True)[1].shape)
print(cls_attention(q[:, :, :5], k, v, backend="cuda")[0].shape)
print(render_frames(torch.rand(2, 3, 5, 7, device="cuda"), torch.randint(0, 256, (2, 3, 20, 28), dtype=torch.uint8,
      device="cuda"), backend="cuda").shape)
torch.cuda.synchronize()
PYEOF
  rc=$?; tail -3 "$OUTDIR/sanitizer.log"; [ $rc = 0 ] || { echo "compute-sanitizer: exit $rc"; STATUS=1; }
fi

echo "== 3. benchmarks/gpu.py --quick ($(left) s left)"
timeout $(( $(left) > 30 ? $(left) : 30 )) "$PY" benchmarks/gpu.py --quick --dtype float32,bfloat16 --out "$OUTDIR" \
  2>&1 | tee "$OUTDIR/bench.log" | tail -40
[ "${PIPESTATUS[0]}" = "0" ] || STATUS=1
echo "gpu-check: done in $(( $(date +%s) - START )) s, status $STATUS; outputs in $OUTDIR"
exit $STATUS
