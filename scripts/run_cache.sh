#!/usr/bin/env bash
# A long run's cache (its trained models and its attacks' results: hours of CPU time) kept in git as one archive,
# <run>/cache.tar.xz, so that the next session on a fresh clone resumes the run instead of redoing it. The cache
# folder itself stays untracked (runs/ is ignored): as 8,000 small files it was 101 MiB of the working tree. The
# archive (56 MiB for runs/paper-mnist) lives in main's history but not in its tip: the tree that travels to a lent
# GPU machine must stay under 64 MiB.
#
#   bash scripts/run_cache.sh unpack [RUN]   # at a session's start: <RUN>/cache from the archive (kept entries win);
#                                            # the archive is read from the working tree, or else from the last
#                                            # commit of HEAD's history that holds it
#   bash scripts/run_cache.sh pack [RUN]     # after the run gained entries; then, to keep it in history only:
#     git add -f RUN/cache.tar.xz && git commit -m "RUN: cache archive" && git rm -q --cached RUN/cache.tar.xz \
#       && git commit -m "RUN: cache archive out of the tip (in history)"
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
    mkdir -p "$run"
    if [ -f "$archive" ]; then
      xz -dc "$archive" | tar xf - -C "$run" --skip-old-files
    else
      # The newest commit whose tree holds the archive: the last one to touch it, or its parent if that removed it.
      last="$(git log -1 --format=%H -- "$archive")"
      [ -n "$last" ] || { echo "run_cache.sh: no archive $archive, here or in git history" >&2; exit 1; }
      git cat-file -e "$last:$archive" 2> /dev/null || last="$last^"
      echo "$archive from commit $(git rev-parse --short "$last")"
      git show "$last:$archive" | xz -dc | tar xf - -C "$run" --skip-old-files
    fi
    echo "$run/cache: $(find "$run/cache" -type f | wc -l) entries"
    ;;
  *)
    echo "usage: run_cache.sh pack|unpack [RUN]" >&2
    exit 2
    ;;
esac
