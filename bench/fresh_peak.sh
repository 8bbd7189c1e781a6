#!/usr/bin/env bash
# Old build against new build, in turns: the peak memory of a fresh apply of N generated
# tenants on the local target (the example's config, with its billing hook).
#   bash bench/fresh_peak.sh OLD_BIN NEW_BIN [TENANTS] [ROUNDS] [SECONDS]
# Each round applies a copy of the same generated repo with OLD_BIN, then with NEW_BIN,
# `apply --auto-approve --parallelism 16`, reading the process's peak resident memory (VmHWM)
# from /proc every half second. With SECONDS (default 60) the run is killed after that long:
# a fresh apply peaks as its plan is made and printed, well within a minute at 100,000
# tenants, and the whole run takes an hour. With SECONDS=0 it runs to its end, and the plan
# after it must be empty. Either way the plan it printed (up to `Plan:`) must be the same,
# byte for byte, for both builds: its md5 is printed beside the peak.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib.sh
source bench/lib.sh
[ $# -ge 2 ] || { echo "usage: bash bench/fresh_peak.sh OLD_BIN NEW_BIN [TENANTS] [ROUNDS] [SECONDS]" >&2; exit 1; }
OLD=$1 NEW=$2
N=${3:-99999}
ROUNDS=${4:-2}
LIMIT=${5:-60}

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-freshpeak.XXXXXX")"
RUNNING=""
cleanup() {
  [ -z "$RUNNING" ] || kill -9 "$RUNNING" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

echo "generating $N tenants ..." >&2
python3 bench/generate.py "$N" "$TMP/template" >/dev/null
commit_all "$TMP/template" fleet
export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"
export NO_COLOR=1

# peak BIN: "peak_kib seconds md5 plan_after" of one fresh apply of a copy of the template.
peak() {
  local bin=$1 dir="$TMP/run" hwm=0 h started
  rm -rf "$dir"
  cp -r "$TMP/template" "$dir"
  started=$(date +%s.%N)
  "$bin" -C "$dir" apply --auto-approve --parallelism 16 >"$TMP/out" 2>&1 &
  RUNNING=$!
  local ticks=0
  while kill -0 "$RUNNING" 2>/dev/null; do
    h=$(awk '/^VmHWM/ { print $2 }' "/proc/$RUNNING/status" 2>/dev/null || true)
    [ -z "$h" ] || hwm=$h
    if [ "$LIMIT" -gt 0 ] && [ "$ticks" -ge $((LIMIT * 2)) ]; then
      kill -9 "$RUNNING"
      break
    fi
    sleep 0.5
    ticks=$((ticks + 1))
  done
  local ended=0
  wait "$RUNNING" 2>/dev/null || ended=$?
  RUNNING=""
  local secs after="-"
  secs=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$LIMIT" -eq 0 ]; then
    [ "$ended" -eq 0 ] || { echo "the apply failed:" >&2; tail -20 "$TMP/out" >&2; exit 1; }
    if "$bin" -C "$dir" plan --detailed-exitcode >/dev/null 2>&1; then after=empty; else after=CHANGES; fi
  fi
  echo "$hwm $secs $(sed -n '1,/^Plan: /p' "$TMP/out" | md5sum | cut -c1-12) $after"
}

echo "| round | build | peak memory (KiB) | time (s) | printed plan (md5) | plan after |"
echo "| ---: | --- | ---: | ---: | --- | --- |"
for round in $(seq "$ROUNDS"); do
  for build in old new; do
    bin=$OLD
    [ "$build" = new ] && bin=$NEW
    read -r kib secs md5 after < <(peak "$bin")
    echo "| $round | $build | $kib | $secs | $md5 | $after |"
  done
done
[ "$LIMIT" -eq 0 ] || echo "(each run killed after ${LIMIT} s; SECONDS=0 runs them to the end)"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "Machine: $(nproc) CPUs, ${cpu:-unknown CPU}, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
