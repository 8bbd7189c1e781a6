#!/usr/bin/env bash
# What the state costs a one-tenant change: `bash bench/state_writes.sh [N]` (default 10000).
#
# N local tenants are generated and applied; then one tenant's name is changed and applied,
# under strace, and the bytes written to the state's files (state.json and its journal, or
# state.db and its write-ahead log) are added up, with the apply's time. BENCH_BIN=path runs
# that binary instead of building the release one; run it with an older build and a newer one
# to compare them. Needs strace and GNU time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-10000}
# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
command -v strace >/dev/null || { echo "strace is missing (apt-get install -y strace)" >&2; exit 1; }
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-writes.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
dir="$TMP/repo"
echo "generating and applying $N tenants ..." >&2
python3 bench/generate.py "$N" "$dir" >/dev/null
"$BIN" -C "$dir" apply --auto-approve >/dev/null 2>"$TMP/err" || { tail -20 "$TMP/err" >&2; exit 1; }
files=("$dir"/tenants/*.yaml)
first=${files[0]}
slug=$(basename "$first" .yaml)
# One tenant's name changes: the apply changes that tenant alone.
sed -i 's/^name: .*/name: Renamed For The Benchmark/' "$first"
/usr/bin/time -f "%e %M" -o "$TMP/t" strace -f -qq -y -e trace=write,pwrite64,writev -o "$TMP/trace" \
  "$BIN" -C "$dir" apply --auto-approve >"$TMP/out" 2>"$TMP/err" || { tail -20 "$TMP/err" >&2; exit 1; }
grep -q "1 tenant reconciled\|1 changed" "$TMP/out" || { echo "expected one tenant to change:" >&2; tail -5 "$TMP/out" >&2; exit 1; }
# Each write's file (strace -y names it) and bytes, for the state's files only.
grep -E '<[^>]*/state\.(json|db)[^>]*>' "$TMP/trace" \
  | sed -E 's/^[0-9]+ +[a-z0-9]+\([0-9]+<([^>]*)>.*= ([0-9]+)$/\1 \2/' >"$TMP/writes"
awk '{ n[$1]++; s[$1] += $2 } END { for (f in n) printf "  %s: %d writes, %d bytes\n", f, n[f], s[f] }' "$TMP/writes" | sed "s|$dir/||" >&2
bytes=$(awk '{ s += $2 } END { print s + 0 }' "$TMP/writes")
read -r secs kb <"$TMP/t"
"$BIN" -C "$dir" plan --detailed-exitcode >/dev/null || { echo "the plan after it is not empty" >&2; exit 1; }
echo "| tenants | changed | state bytes written | apply (s, under strace) | peak memory (MB) |"
echo "| ---: | --- | ---: | ---: | ---: |"
echo "| $N | $slug | $bytes | $secs | $(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }') |"
