#!/usr/bin/env bash
# Runs the drop-ins' tests (tests/test_compat_*.py) against each version of the peer libraries that
# nemesis_fast.compat names as reproduced, not only the one installed: each version goes into its own folder under
# $PEER_VERSIONS_DIR (pip --target, no dependencies) that is put first on PYTHONPATH for its run. ART 1.18 runs with
# numpy 1.26 and scipy 1.11 beside it (its own SaliencyMapMethod calls np.product, gone in numpy 2, and its randomized
# smoothing scipy's binom_test, gone in scipy 1.12). The peers' results are cached per version (tests/_peers.py): a
# first run takes about 12 minutes on 2 cores (the peers' own attacks), a later one about 4.
#
#   bash scripts/check_peer_versions.sh                  # in the project's root, with ".[test,peers]" installed
#   bash scripts/check_peer_versions.sh art-1.19.2       # only the cases named
# Needs PyPI (or its mirror) for the versions not yet in $PEER_VERSIONS_DIR. Exit status: the number of cases that
# failed; the log of each case is left in $PEER_VERSIONS_DIR/<case>.log.
set -uo pipefail
cd "$(dirname "$0")/.."

root="${PEER_VERSIONS_DIR:-${TMPDIR:-/tmp}/nemesis_fast_peer_versions}"
mkdir -p "$root"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(torchattacks-3.5.0 torchattacks-3.5.1 art-1.18.2 art-1.19.2 art-1.20.1)
fi

install() {  # install FOLDER REQUIREMENT...: the requirements into FOLDER, once
  local folder="$root/$1"
  shift
  [ -f "$folder/.complete" ] && return 0
  rm -rf "$folder"
  python -m pip install -q --no-deps --target "$folder" "$@" && touch "$folder/.complete"
}

failed=0
for name in "${names[@]}"; do
  peer="${name%-*}"
  version="${name##*-}"
  case "$peer" in
    torchattacks)
      tests=(tests/test_compat_torchattacks.py tests/test_compat_peer_settings.py)
      package=torchattacks module=torchattacks ;;
    art)
      tests=(tests/test_compat_art*.py tests/test_compat_peer_settings.py)
      package=adversarial-robustness-toolbox module=art ;;
    *) echo "unknown case $name (torchattacks-X.Y.Z or art-X.Y.Z)" >&2; exit 2 ;;
  esac
  path="$root/$name"
  if ! install "$name" "$package==$version"; then
    echo "$name: FAILED: pip could not install $package $version"
    failed=$((failed + 1))
    continue
  fi
  if [[ "$name" == art-1.18.* ]]; then
    if ! install numpy1 "numpy==1.26.4" "scipy==1.11.4"; then
      echo "$name: FAILED: pip could not install numpy 1.26.4 and scipy 1.11.4"
      failed=$((failed + 1))
      continue
    fi
    path="$path:$root/numpy1"
  fi
  python_path="$path${PYTHONPATH:+:$PYTHONPATH}"
  imported=$(PYTHONPATH="$python_path" python -c "import $module; print($module.__version__)" 2>&1 | tail -n 1)
  if [ "$imported" != "$version" ]; then
    echo "$name: FAILED: imports $module as $imported"
    failed=$((failed + 1))
    continue
  fi
  log="$root/$name.log"
  workers="${PYTEST_WORKERS:-2}"
  if PYTHONPATH="$python_path" python -m pytest -q -n "$workers" -p no:cacheprovider "${tests[@]}" >"$log" 2>&1; then
    echo "$name: $(tail -n 1 "$log")"
  else
    echo "$name: FAILED: $(tail -n 1 "$log") (log: $log)"
    failed=$((failed + 1))
  fi
done
exit "$failed"
