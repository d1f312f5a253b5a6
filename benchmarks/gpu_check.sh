#!/usr/bin/env bash
# The GPU check of issue 7, in one go (about 5 minutes on one GPU; every step has a time limit
# so that the whole stays under 8 minutes):
#   1. the gpu-marked tests: CPU/GPU parity of forward passes (all roots and transitions),
#      scheduled sampling with the Trainer's CPU generator, reduced-precision fits;
#   2. benchmarks/gpu_parity.py: the same small fit on CPU and GPU (metrics within 5%,
#      predictions within 1e-4 of the state std), and the accuracy cost of tf32 and bf16;
#   3. benchmarks/run.py --device cuda: every benchmark figure at GPU scale (D ~ 5000,
#      batch 256, T 256).
# Usage: benchmarks/gpu_check.sh [OUT_DIR]     (PYTHON=... to choose the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT"
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep going on failure
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || status=1
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available())"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
step tests 80 $PY -m pytest -q -m gpu tests/test_gpu_parity.py tests/test_systems_gpu.py -p no:cacheprovider
step parity 180 $PY benchmarks/gpu_parity.py --json "$OUT/parity.json"
step bench 210 $PY benchmarks/run.py --device cuda --threads "$OMP_NUM_THREADS" --amortized quick \
    --json "$OUT/bench_cuda.json"
echo "gpu_check: $([ $status -eq 0 ] && echo all passed || echo SOME STEPS FAILED); logs in $OUT"
exit $status
