#!/usr/bin/env bash
# Benchmark `plan --changed-since` against a full plan: `bash bench/gitops.sh [SIZES...]`
# (default 1000 10000). For each size: a generated tenant repo in git, applied on the local
# target, then a branch that edits one tenant file, and one that edits 100. Prints wall time
# and peak memory (median of REPEATS, default 3) of each pull request's plan, of a plan of
# one named tenant, and of a full plan, all with refresh; and of the fresh apply, run once.
# Each pull request's plan also as CI runs it, from the commit (`--rev HEAD`: no walk of the
# working tree). APPLY=0 skips the apply and the full plan: the pull requests' plans then
# read a state that holds nobody (what they cost on the files' side, for fleets too large to
# apply often). BENCH_BIN=path runs that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -gt 0 ] || set -- 1000 10000
REPEATS=${REPEATS:-3}
APPLY=${APPLY:-1}

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-gitbench.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
export NO_COLOR=1


echo
echo "| tenants | command | time (s) | peak memory (MB) | tenants planned |"
echo "| ---: | --- | ---: | ---: | ---: |"
for n in "$@"; do
  dir="$TMP/repo-$n"
  python3 bench/generate.py "$n" "$dir" >/dev/null
  printf '.tenant-reconcile/\n' >"$dir/.gitignore"
  (cd "$dir" && git_ init -q && git_ add -A && git_ commit -qm "$n tenants")
  if [ "$APPLY" = 1 ]; then
    echo "applying $n tenants ..." >&2
    /usr/bin/time -f "%e %M" -o "$TMP/t" "$BIN" -C "$dir" apply --auto-approve --parallelism 16 >/dev/null 2>"$TMP/err" ||
      { echo "FAILED: apply" >&2; tail -n 20 "$TMP/err" >&2; exit 1; }
    read -r secs kb <"$TMP/t"
    echo "| $n | \`apply --parallelism 16\` (fresh, once) | $secs | $((kb / 1024)) | $n |"
  fi
  # The pull request: one tenant renamed.
  # (A glob, not `ls | head`: with pipefail, ls dies of SIGPIPE on a large folder.)
  files=("$dir"/tenants/*.yaml)
  one=$(basename "${files[0]}")
  (cd "$dir" && git_ checkout -qb pr && sed -i 's/^name: \(.*\)$/name: \1 Renamed/' "tenants/$one" && git_ commit -qam "rename one tenant")
  read -r s mb < <(run_median "$REPEATS" -C "$dir" plan --changed-since main)
  echo "| $n | \`plan --changed-since main\` (1 tenant file changed) | $s | $mb | 1 |"
  read -r s mb < <(run_median "$REPEATS" -C "$dir" plan --rev HEAD --changed-since main)
  echo "| $n | \`plan --rev HEAD --changed-since main\` (1 tenant file changed) | $s | $mb | 1 |"
  read -r s mb < <(run_median "$REPEATS" -C "$dir" plan --tenant "${one%.yaml}")
  echo "| $n | \`plan --tenant SLUG\` | $s | $mb | 1 |"
  (cd "$dir" && git_ checkout -q main && git_ checkout -qb pr100 &&
    for f in "${files[@]:0:100}"; do sed -i 's/^name: \(.*\)$/name: \1 Renamed/' "$f"; done &&
    git_ commit -qam "rename 100 tenants")
  read -r s mb < <(run_median "$REPEATS" -C "$dir" plan --changed-since main)
  echo "| $n | \`plan --changed-since main\` (100 tenant files changed) | $s | $mb | 100 |"
  read -r s mb < <(run_median "$REPEATS" -C "$dir" plan --rev HEAD --changed-since main)
  echo "| $n | \`plan --rev HEAD --changed-since main\` (100 tenant files changed) | $s | $mb | 100 |"
  if [ "$APPLY" = 1 ]; then
    read -r s mb < <(run_median "$REPEATS" -C "$dir" plan)
    echo "| $n | \`plan\` (full) | $s | $mb | $n |"
  fi
done
