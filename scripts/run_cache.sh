#!/usr/bin/env bash
# A long run's cache (its trained models and its attacks' results: hours of CPU time) kept in git as one archive,
# <run>/cache.tar.xz, so that the next session on a fresh clone resumes the run instead of redoing it. The cache
# folder itself stays untracked (runs/ is ignored): as 8,000 small files it was 101 MiB of the working tree, over
# the 64 MiB that travels to a lent GPU machine; packed it is about 31 MiB.
#
#   bash scripts/run_cache.sh unpack [RUN]   # at a session's start: <RUN>/cache from the archive (kept entries win)
#   bash scripts/run_cache.sh pack [RUN]     # after the run gained entries; then git add -f <RUN>/cache.tar.xz
#
# RUN defaults to runs/paper-mnist. The archive is reproducible (sorted names, fixed times and owners, one xz
# thread): packing an unchanged cache writes the same bytes, so git sees no change.
set -euo pipefail
cd "$(dirname "$0")/.."
command="${1:-}"
run="${2:-runs/paper-mnist}"
archive="$run/cache.tar.xz"
case "$command" in
  pack)
    [ -d "$run/cache" ] || { echo "run_cache.sh: no cache folder $run/cache to pack" >&2; exit 1; }
    # Not the black-box adversarial images (cache/blackbox, 1.5 MB a unit): their verdicts are kept, and they can
    # be crafted again.
    tar cf - --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --exclude=cache/blackbox -C "$run" cache \
      | xz -T1 -6 > "$archive.tmp"
    mv "$archive.tmp" "$archive"
    echo "$archive: $(du -h "$archive" | cut -f1), $(xz -dc "$archive" | tar tf - | grep -c '\.pt$') entries"
    ;;
  unpack)
    [ -f "$archive" ] || { echo "run_cache.sh: no archive $archive" >&2; exit 1; }
    mkdir -p "$run"
    xz -dc "$archive" | tar xf - -C "$run" --skip-old-files
    echo "$run/cache: $(find "$run/cache" -type f | wc -l) entries"
    ;;
  *)
    echo "usage: run_cache.sh pack|unpack [RUN]" >&2
    exit 2
    ;;
esac
