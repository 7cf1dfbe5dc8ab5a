#!/usr/bin/env bash
# The GPU machine's one command: build the extension, run the tests marked cuda or triton, run every GPU
# benchmark; logs and one JSON per benchmark suite go under $OUT (or results/gpu). Each phase (below) fits in 10 minutes
# on an H100/H200: each step has its own time limit, and a step that fails or runs out does not stop the rest.
#
# Peer libraries (torchattacks, ART) for the attack benchmarks travel as wheels in .whl/ (see the device
# tool's README): python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#   torchattacks adversarial-robustness-toolbox scikit-learn joblib threadpoolctl
set -uo pipefail
cd "$(dirname "$0")/.."
# Phases: `tests` (build, then the cuda/triton tests), `bench` (build, then the kernel and attack suites), `apps`
# (build, then the certify and compat suites), or `all` (these three, the default). The device tool allows 600 s per
# command: run `tests`, `bench` and `apps` as three calls on the warm machine (a later build finds the first's outputs
# and takes seconds).
# `paper` (not in `all`): the evaluation's paper preset on full MNIST on the GPU, for the table beside the CPU run's.
# It reads the MNIST files from $MNIST_DIR (default runs/mnist-data, an ignored folder: copy the four .gz files of
# ../shared/data/mnist there and name it in the device tool's `carry`), stops itself after 530 s, and resumes from
# its cache (runs/paper-mnist-gpu, kept on the warm machine) when called again; the results come back as one
# archive, $OUT/paper-results.tgz, once the run is complete.
phase="${1:-all}"
case "$phase" in all | tests | bench | apps | paper) ;; *) echo "usage: gpu_check.sh [all|tests|bench|apps|paper]" >&2; exit 2 ;; esac
OUT="${OUT:-results/gpu}"
mkdir -p "$OUT"
export MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" PYTHONUNBUFFERED=1
status=0

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  echo "== build"
  { time timeout 200 python3 -m pip install -q --no-build-isolation --no-deps -e . ; } 2>&1 | tail -20
  echo "== backend_info"
  python3 -c "import json, nemesis_fast; print(json.dumps(nemesis_fast.backend_info(), indent=1))"
} > "$OUT/device.txt" 2>&1 || status=1

if [ "$phase" = all ] || [ "$phase" = tests ]; then
  timeout 240 python3 -m pytest -m "cuda or triton" -q -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" || status=1
fi
[ "$phase" = tests ] && exit $status

if [ "$phase" = paper ]; then
  results=runs/paper-mnist-gpu
  timeout 530 python3 -m nemesis_fast.cli evaluate --preset paper --data-dir "${MNIST_DIR:-runs/mnist-data}" \
    --out "$results" --device cuda --no-progress 2>&1 | tee -a "$OUT/paper.log" || status=1
  if [ "$status" = 0 ]; then
    tar czf "$OUT/paper-results.tgz" --exclude cache -C "$results" . || status=1
  else
    echo "(the paper run stopped before its end: call gpu_check.sh paper again to resume it)" | tee -a "$OUT/paper.log"
  fi
  exit $status
fi

# suite:seconds; at most 200 + 260 s for `bench`, 200 + 240 s for `apps`.
suites="bounded_relu:40 gaussian_augment:40 jsma:60 attacks:80 training:40 certify:120 compat:120"
[ "$phase" = bench ] && suites="bounded_relu:40 gaussian_augment:40 jsma:60 attacks:80 training:40"
[ "$phase" = apps ] && suites="certify:120 compat:120"
for entry in $suites; do
  suite="${entry%%:*}"
  echo "== $suite" >> "$OUT/bench.log"
  timeout "${entry##*:}" python3 -m nemesis_fast.cli bench "$suite" --device cuda --json "$OUT/$suite.json" >> "$OUT/bench.log" 2>&1 \
    || { status=1; echo "(suite $suite failed or ran out of time)" >> "$OUT/bench.log"; }
done
cat "$OUT/bench.log"
exit $status
