#!/usr/bin/env bash
# Benchmark tenant-reconcile on synthetic repos: `bash bench/run.sh [SIZES...]`.
# Prints a markdown table of wall time and peak RSS per command and tenant count.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -gt 0 ] || set -- 1000 10000
SIZES=("$@")
REPEATS=5 # quick no-change plans are noisy; report the median of this many runs

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time

build_release

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-bench.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# run DIR ARGS...: one timed run; leaves "secs kb" in $TMP/t. Apply's per-tenant progress
# lines go to stderr, so stderr is kept in a file and shown only if the command fails.
run() {
  local dir=$1; shift
  if ! /usr/bin/time -f "%e %M" -o "$TMP/t" "$BIN" -C "$dir" "$@" >/dev/null 2>"$TMP/err"; then
    echo "FAILED: tenant-reconcile -C $dir $*" >&2
    tail -n 20 "$TMP/err" >&2
    exit 1
  fi
}

ROWS=""
# measure N LABEL COUNT DIR ARGS...: median time and median peak RSS over COUNT runs.
measure() {
  local n=$1 label=$2 count=$3 dir=$4; shift 4
  local times="" mems=""
  for _ in $(seq "$count"); do
    run "$dir" "$@"
    read -r secs kb <"$TMP/t"
    times+="$secs"$'\n'; mems+="$kb"$'\n'
  done
  local mid=$(((count + 1) / 2))
  local t m
  t=$(printf '%s' "$times" | sort -n | sed -n "${mid}p")
  m=$(printf '%s' "$mems" | sort -n | sed -n "${mid}p")
  if [ "$count" -gt 1 ]; then label+=" (median of $count)"; fi
  ROWS+="| $n | $label | $t | $(awk -v k="$m" 'BEGIN { printf "%.1f", k / 1024 }') |"$'\n'
  echo "  $n: $label: ${t}s, ${m} KB" >&2
}

for n in "${SIZES[@]}"; do
  dir="$TMP/repo-$n"
  echo "generating $n tenants ..." >&2
  python3 bench/generate.py "$n" "$dir"
  measure "$n" "validate" 1 "$dir" validate
  measure "$n" "plan (fresh, all add)" 1 "$dir" plan
  measure "$n" "apply --auto-approve (all new)" 1 "$dir" apply --auto-approve
  # --detailed-exitcode makes run() fail (exit 2) if the repo is not actually converged,
  # so the no-change numbers below cannot silently be measuring a plan with changes.
  measure "$n" "plan, no changes" "$REPEATS" "$dir" plan --detailed-exitcode
  measure "$n" "plan --no-refresh, no changes" "$REPEATS" "$dir" plan --no-refresh --detailed-exitcode
  rm -rf "$dir" # a 10,000-tenant apply leaves a lot on disk; free it before the next size
done

echo
echo "| tenants | command | time (s) | peak memory (MB) |"
echo "| ---: | --- | ---: | ---: |"
printf '%s' "$ROWS"
echo
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
mem=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
echo "Machine: $(nproc) CPUs, ${cpu:-unknown CPU}, $mem RAM, Linux $(uname -r); $("$BIN" --version)"
