#!/usr/bin/env bash
# Puts in place, in a fresh checkout, the ignored files that benchmarks/gpu_check.sh's calls carry to a lent GPU
# machine (see its header), so that a session with a machine spends its device minutes on the checks:
#   runs/mnist-data/                the four MNIST .gz files (from ../shared/data/mnist, or MNIST_SOURCE)
#   runs/certify-models/gda.pt      the `paper` run's GDA + ReLU model, read from that run's cache (a --cached-only
#                                   look: trains nothing; it reads the data from MNIST_SOURCE, the folder the run
#                                   read, which its entries' older keys name)
#   .whl/                           the peers' wheels and pytest-timeout's (the tests' own timeout) for the GPU
#                                   machine's Python 3.12 (needs PyPI)
#   runs/test-cache/                the tests' MNIST model (tests/conftest.py's `mnist_model`, full MNIST), trained
#                                   here if the temp folder's cache lacks it (a minute), for gpu_check.sh's tests
#
#   bash scripts/prepare_gpu_carry.sh          # in the project's root, with the package installed
# Each part already in place is kept (an MNIST file that is not a whole .gz is copied again); .whl/ holding two
# versions of a package is refused. Takes a few minutes on two cores (the look reads the run's 16,000 entries).
set -euo pipefail
cd "$(dirname "$0")/.."

mnist_source="${MNIST_SOURCE:-../shared/data/mnist}"
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
mkdir -p runs/mnist-data
for f in "${files[@]}"; do  # a file cut short (an interrupted copy) is copied again
  gzip -t "runs/mnist-data/$f" 2> /dev/null && continue
  rm -f "runs/mnist-data/$f.tmp"  # cp keeps the source's mode: a read-only copy left by an interrupted run
  cp "$mnist_source/$f" "runs/mnist-data/$f.tmp"
  mv "runs/mnist-data/$f.tmp" "runs/mnist-data/$f"
done
echo "runs/mnist-data: ${#files[@]} files"

if [ ! -f runs/certify-models/gda.pt ]; then
  [ -d runs/paper-mnist/cache ] || bash scripts/run_cache.sh unpack runs/paper-mnist
  look="$(mktemp -d)"
  trap 'rm -rf "$look"' EXIT
  nemesis-fast evaluate --preset paper --data-dir "$mnist_source" --out "$look/out" \
    --cache-dir runs/paper-mnist/cache --cached-only --no-progress > "$look/log.txt" 2>&1 \
    || { cat "$look/log.txt" >&2; exit 1; }
  [ -f "$look/out/partial/models/gda.pt" ] || { echo "the paper run's cache holds no GDA model" >&2; exit 1; }
  mkdir -p runs/certify-models
  cp "$look/out/partial/models/gda.pt" runs/certify-models/gda.pt
fi
echo "runs/certify-models/gda.pt: $(du -h runs/certify-models/gda.pt | cut -f1)"

cached="$(python3 -c "import sys, tempfile; sys.path.insert(0, 'tests'); import conftest
print(f'{tempfile.gettempdir()}/{conftest.mnist_model_file(conftest.FULL_MNIST_TRAINING)}')")"
if [ ! -f "runs/test-cache/$(basename "$cached")" ]; then
  if [ ! -f "$cached" ]; then
    log="$(mktemp)"
    NEMESIS_FAST_MNIST="$(cd runs/mnist-data && pwd)" python3 -m pytest -q -p no:cacheprovider \
      "tests/test_attacks_mnist.py::test_fixture_model_is_accurate_on_the_500_images" > "$log" 2>&1 \
      || { cat "$log" >&2; rm -f "$log"; echo "prepare_gpu_carry.sh: training the tests' MNIST model failed" >&2; exit 1; }
    rm -f "$log"
  fi
  mkdir -p runs/test-cache
  cp "$cached" runs/test-cache/
fi
echo "runs/test-cache: $(ls runs/test-cache)"

wheels=(torchattacks-3.5.1 adversarial_robustness_toolbox-1.20.1 pytest_timeout-2.4.0)
for wheel in "${wheels[@]}"; do
  compgen -G ".whl/$wheel-*.whl" > /dev/null || python3 -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 -d .whl "${wheel%-*}==${wheel##*-}"
done
# One version of each: two stop the GPU machine's whole install (an older one left by an earlier version of this list).
twice="$(cd .whl && printf '%s\n' *.whl | cut -d- -f1 | sort | uniq -d)"
[ -z "$twice" ] || { echo "prepare_gpu_carry.sh: more than one version in .whl of: $twice (keep one)" >&2; exit 1; }
echo ".whl: $(ls .whl)"
