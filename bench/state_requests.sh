#!/usr/bin/env bash
# What a plan of one tenant sends to the state backend, by fleet size:
# `bash bench/state_requests.sh [SIZES...]` (default 1000 10000), with BACKEND=postgres (the
# default) or BACKEND=s3. For each size: a generated fleet with its targets local and its state
# on that backend, applied; then `plan --tenant SLUG` of one tenant whose file changed, and a
# full plan for contrast, with the wall time and the peak memory of each.
#
# - postgres: the local PostgreSQL (127.0.0.1:5432, user postgres, a database of its own,
#   dropped at the end); the count is the transactions the server counted for the state's
#   database while each ran (pg_stat_database.xact_commit: every statement sent outside a
#   transaction, every transaction, and each new connection).
# - s3: moto's S3 server on loopback (scripts/lib/moto.sh), or the server at $BENCH_S3; a
#   bucket per size; the count is the requests the binary sent to S3 (its debug log), which
#   with local targets are all the state's.
# BENCH_BIN=path runs that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -gt 0 ] || set -- 1000 10000
BACKEND=${BACKEND:-postgres}

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-statereq.XXXXXX")"
DB="tr_bench_state_$$"
psql_() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -Atq "$@"; }
export NO_COLOR=1

case "$BACKEND" in
  postgres)
    command -v psql >/dev/null || { echo "psql is needed (the PostgreSQL client)" >&2; exit 1; }
    cleanup() { rm -rf "$TMP"; psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true; }
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
    ;;
  s3)
    if [ -n "${BENCH_S3:-}" ]; then
      export TENANT_RECONCILE_TEST_S3="$BENCH_S3"
    else
      # shellcheck source=../scripts/lib/moto.sh
      source scripts/lib/moto.sh
      start_moto
    fi
    cleanup() { rm -rf "$TMP"; [ -n "${MOTO_PID:-}" ] && kill "$MOTO_PID" 2>/dev/null || true; }
    export AWS_ENDPOINT_URL="$TENANT_RECONCILE_TEST_S3" AWS_REGION=us-east-1
    export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
    export TENANT_RECONCILE_LOG=tenant_reconcile=debug
    ;;
  *) echo "BACKEND is postgres or s3, not $BACKEND" >&2; exit 1 ;;
esac
trap cleanup EXIT

commits() { psql_ -d postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'"; }

# measure ARGS...: runs the binary once; prints "requests secs MB".
measure() {
  local before after requests
  [ "$BACKEND" = postgres ] && before=$(commits)
  /usr/bin/time -f "%e %M" -o "$TMP/t" "$BIN" "$@" >/dev/null 2>"$TMP/err" || {
    code=$?; [ "$code" -eq 2 ] || { echo "FAILED: tenant-reconcile $*" >&2; tail -n 20 "$TMP/err" >&2; exit 1; }
  }
  if [ "$BACKEND" = postgres ]; then
    # The reading connection's own: one for its start, one for its query.
    after=$(commits)
    requests=$((after - before - 2))
  else
    requests=$(logged_count "$TMP/err" s3_requests)
  fi
  read -r secs kb <"$TMP/t"
  echo "$requests $secs $((kb / 1024))"
}

what=$([ "$BACKEND" = postgres ] && echo "state transactions" || echo "S3 requests")
echo
echo "| tenants | command | $what | time (s) | peak memory (MB) |"
echo "| ---: | --- | ---: | ---: | ---: |"
for n in "$@"; do
  dir="$TMP/repo-$n"
  python3 bench/generate.py "$n" "$dir" >/dev/null
  if [ "$BACKEND" = postgres ]; then
    psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
    psql_ -d postgres -c "CREATE DATABASE $DB"
    printf '\nstate {\n  backend = "postgres"\n}\n' >>"$dir/tenant-reconcile.hcl"
  else
    bucket="b$$-state-$n"
    "$BIN" --version >/dev/null
    python3 - "$bucket" <<'PY'
import os, sys, urllib.request
req = urllib.request.Request(f"{os.environ['AWS_ENDPOINT_URL']}/{sys.argv[1]}", method="PUT")
urllib.request.urlopen(req).read()
PY
    printf '\nstate {\n  backend = "s3"\n  bucket  = "%s"\n}\ns3 {\n  force_path_style = true\n}\n' "$bucket" >>"$dir/tenant-reconcile.hcl"
  fi
  echo "applying $n tenants ..." >&2
  "$BIN" -C "$dir" apply --auto-approve --parallelism 16 >/dev/null 2>&1
  files=("$dir"/tenants/*.yaml)
  one=$(basename "${files[0]}" .yaml)
  sed -i 's/^name: \(.*\)$/name: \1 Renamed/' "${files[0]}"
  read -r count s mb < <(measure -C "$dir" plan --tenant "$one")
  echo "| $n | \`plan --tenant SLUG\` | $count | $s | $mb |"
  read -r count s mb < <(measure -C "$dir" plan)
  echo "| $n | \`plan\` (full) | $count | $s | $mb |"
done
