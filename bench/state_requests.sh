#!/usr/bin/env bash
# What a plan of one tenant sends to the Postgres state backend, by fleet size:
# `bash bench/state_requests.sh [SIZES...]` (default 1000 10000). For each size: a generated
# fleet with its state on the local PostgreSQL (127.0.0.1:5432, user postgres, a database of
# its own, dropped at the end) and its targets local, applied; then `plan --tenant SLUG` of
# one tenant whose file changed, and a full plan for contrast. Prints the transactions the
# server counted for the state's database while each ran (pg_stat_database.xact_commit:
# every statement sent outside a transaction, every transaction, and each new connection),
# the wall time and the peak memory. BENCH_BIN=path runs that binary instead of building the
# release one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -gt 0 ] || set -- 1000 10000

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
command -v psql >/dev/null || { echo "psql is needed (the PostgreSQL client)" >&2; exit 1; }
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-statereq.XXXXXX")"
DB="tr_bench_state_$$"
psql_() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -Atq "$@"; }
cleanup() { rm -rf "$TMP"; psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true; }
trap cleanup EXIT
export NO_COLOR=1 DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"

commits() { psql_ -d postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'"; }

# measure ARGS...: runs the binary once; prints "transactions secs MB".
measure() {
  local before after
  before=$(commits)
  /usr/bin/time -f "%e %M" -o "$TMP/t" "$BIN" "$@" >/dev/null 2>"$TMP/err" || {
    code=$?; [ "$code" -eq 2 ] || { echo "FAILED: tenant-reconcile $*" >&2; tail -n 20 "$TMP/err" >&2; exit 1; }
  }
  # The reading connection's own: one for its start, one for its query.
  after=$(commits)
  read -r secs kb <"$TMP/t"
  echo "$((after - before - 2)) $secs $((kb / 1024))"
}

echo
echo "| tenants | command | state transactions | time (s) | peak memory (MB) |"
echo "| ---: | --- | ---: | ---: | ---: |"
for n in "$@"; do
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
  psql_ -d postgres -c "CREATE DATABASE $DB"
  dir="$TMP/repo-$n"
  python3 bench/generate.py "$n" "$dir" >/dev/null
  printf '\nstate {\n  backend = "postgres"\n}\n' >>"$dir/tenant-reconcile.hcl"
  echo "applying $n tenants ..." >&2
  "$BIN" -C "$dir" apply --auto-approve --parallelism 16 >/dev/null 2>&1
  files=("$dir"/tenants/*.yaml)
  one=$(basename "${files[0]}" .yaml)
  sed -i 's/^name: \(.*\)$/name: \1 Renamed/' "${files[0]}"
  read -r tx s mb < <(measure -C "$dir" plan --tenant "$one")
  echo "| $n | \`plan --tenant SLUG\` | $tx | $s | $mb |"
  read -r tx s mb < <(measure -C "$dir" plan)
  echo "| $n | \`plan\` (full) | $tx | $s | $mb |"
done
