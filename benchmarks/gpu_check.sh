#!/usr/bin/env bash
# The GPU machine's one command: build the extension, run the tests marked cuda or triton, run the GPU
# benchmarks; logs and JSON go under $OUT (or results/gpu). Sized to finish in under 8 minutes on an H100/H200.
#   device run: bash benchmarks/gpu_check.sh        (with .whl carried, the peer libraries are installed first)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu}"
mkdir -p "$OUT"
export MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" PYTHONUNBUFFERED=1
status=0

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>&1
{ time python3 -m pip install --no-build-isolation --no-deps -e . ; } > "$OUT/build.log" 2>&1 || { status=1; tail -40 "$OUT/build.log"; }
python3 -c "import json, nemesis_fast; print(json.dumps(nemesis_fast.backend_info(), indent=1))" >> "$OUT/device.txt" 2>&1

timeout 300 python3 -m pytest -m "cuda or triton" -q -p no:cacheprovider -x 2>&1 | tee "$OUT/tests.log" || status=1
timeout 240 nemesis-fast bench --device cuda --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" || status=1
exit $status
