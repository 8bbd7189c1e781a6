#!/usr/bin/env bash
# Kill an apply anywhere: `bash bench/kills.sh [N] [KILLS]` (defaults 500 and 20).
#
# For each state backend (local, postgres, s3), N new tenants (schema mode, control plane and
# data on Postgres, a billing hook that appends to a ledger) are applied by runs killed with
# -9: each run is killed after a few more tenants are done than the last, and a moment after
# that line (0 to 190 ms, so the kill lands between steps and within them), KILLS times, then
# one apply runs to the end. Every run waits for the lock (`--lock-timeout 1m`): the local and
# Postgres locks go with a killed holder, and the s3 backend's lock object, which outlives it,
# is taken over once its lease (2 s here) went unrenewed twice. Then, counted from outside:
# registry rows, memberships, seeds, TenantProvisioned events and the tenants in the hook's
# ledger must each be N, and `plan --detailed-exitcode` must exit 0 (empty). A table of the
# runs and counts per backend; it exits 1 when a count is off.
# BACKENDS="local postgres" runs those only. BENCH_BIN=path runs that binary instead of
# building the release one. The s3 state lives in moto's S3 server (scripts/lib/moto.sh), or
# the server at $BENCH_S3.
# Needs PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432, trust auth) and
# psql. Everything it creates is named bench_k<pid>*/k<pid>* and removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-500}
KILLS=${2:-20}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
ID=$$

command -v psql >/dev/null || { echo "psql is missing" >&2; exit 1; }
psql "$PG/postgres" -qAtc "select 1" >/dev/null || { echo "no PostgreSQL at $PG" >&2; exit 1; }
# shellcheck source=lib.sh
source bench/lib.sh
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
if [ -n "${BENCH_S3:-}" ]; then
  export TENANT_RECONCILE_TEST_S3="$BENCH_S3"
else
  # shellcheck source=../scripts/lib/moto.sh
  source scripts/lib/moto.sh
  start_moto
fi
export AWS_ENDPOINT_URL="$TENANT_RECONCILE_TEST_S3" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-kills.XXXXXX")"
export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"
export NO_COLOR=1

cleanup() {
  drop_like "$PG" "bench\_k${ID}% k${ID}\_%" "k${ID}\_%"
  rm -rf "$TMP"
  [ -n "${MOTO_PID:-}" ] && kill "$MOTO_PID" 2>/dev/null || true
}
trap cleanup EXIT

# repo BACKEND: the fleet on a database of its own, its state on BACKEND.
repo() {
  local backend=$1 dir="$TMP/$1" state
  python3 bench/generate.py "$N" "$dir" schema >/dev/null
  psql "$PG/postgres" -qc "CREATE DATABASE bench_k${ID}_$backend" >/dev/null
  case $backend in
    local) state="" ;;
    postgres) state=$'state {\n  backend = "postgres"\n}' ;;
    s3)
      python3 - "$TENANT_RECONCILE_TEST_S3" "k${ID}-state" <<'PY'
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(f"{sys.argv[1]}/{sys.argv[2]}", method="PUT"))
PY
      state=$'state {\n  backend    = "s3"\n  bucket     = "'"k${ID}-state"$'"\n  key        = "fleet.json"\n  lock_lease = "2s"\n}' ;;
  esac
  mkdir -p "$dir/hooks"
  printf '#!/bin/sh\ncat > /dev/null\necho "$TENANT_RECONCILE_TENANT_SLUG" >> ledger\n' >"$dir/hooks/bill.sh"
  chmod +x "$dir/hooks/bill.sh"
  cat >"$dir/tenant-reconcile.hcl" <<HCL
$state
targets {
  control_plane = "postgres"
  data          = "postgres"
}
postgres {
  role_prefix     = "k${ID}_${backend}_"
  schema_prefix   = "k${ID}_${backend}_"
  database_prefix = "k${ID}_${backend}_"
}
s3 {
  force_path_style = true
}
hook "billing" {
  on      = ["provisioned"]
  command = ["./hooks/bill.sh"]
  timeout = "1m"
}
HCL
}

# taken_over BACKEND LOG: counts the locks the run of LOG took over from a killed one.
taken_over() {
  grep -c "took over the state's lock" "$2" >>"$TMP/$1.takeovers" || true
}

# killed BACKEND LINES DELAY_MS: an apply killed with -9 DELAY_MS after its LINES-th
# progress line (or when it ends first).
killed() {
  local dir="$TMP/$1" lines=$2 delay=$3
  DATABASE_URL="$PG/bench_k${ID}_$1" "$BIN" -C "$dir" apply --auto-approve --parallelism 10 \
    --lock-timeout 1m >/dev/null 2>"$TMP/$1.err" &
  local pid=$! seen=0
  while kill -0 "$pid" 2>/dev/null; do
    seen=$(grep -c '^\[' "$TMP/$1.err" || true)
    [ "$seen" -ge "$lines" ] && break
    sleep 0.02
  done
  sleep "$(awk -v ms="$delay" 'BEGIN { print ms / 1000 }')"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  taken_over "$1" "$TMP/$1.err"
}

fail=0
echo "| state backend | kills | locks taken over | registry rows | memberships | seeds | TenantProvisioned events | hook runs (ledger) | plan after (0: empty) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for backend in ${BACKENDS:-local postgres s3}; do
  echo "$backend: $N tenants, $KILLS kills ..." >&2
  repo "$backend"
  step=$(( N / (KILLS + 1) ))
  [ "$step" -ge 1 ] || step=1
  for k in $(seq 1 "$KILLS"); do
    # Each run first finishes what the last left, then a few more.
    killed "$backend" "$step" $(( (k * 37) % 200 ))
  done
  db="$PG/bench_k${ID}_$backend"
  DATABASE_URL="$db" "$BIN" -C "$TMP/$backend" apply --auto-approve --lock-timeout 1m >/dev/null 2>"$TMP/$backend.last" \
    || { echo "the last apply failed:" >&2; tail -5 "$TMP/$backend.last" >&2; fail=1; }
  taken_over "$backend" "$TMP/$backend.last"
  takeovers=$(awk '{ n += $1 } END { print n + 0 }' "$TMP/$backend.takeovers")
  code=0
  DATABASE_URL="$db" "$BIN" -C "$TMP/$backend" plan --detailed-exitcode >/dev/null 2>&1 || code=$?
  q() { psql "$db" -qAtc "$1"; }
  rows=$(q "select count(*) from tenant_reconcile.tenants")
  members=$(q "select count(*) from tenant_reconcile.memberships")
  seeds=$(q "select count(*) from tenant_reconcile.seeds")
  events=$(q "select count(*) from tenant_reconcile.outbox where type = 'TenantProvisioned'")
  ledger=$(wc -l <"$TMP/$backend/ledger")
  unique=$(sort -u "$TMP/$backend/ledger" | wc -l)
  echo "| $backend | $KILLS | $takeovers | $rows | $members | $seeds | $events | $ledger ($unique tenants) | $code |"
  for c in "$rows" "$members" "$seeds" "$events" "$unique"; do [ "$c" = "$N" ] || fail=1; done
  [ "$code" = 0 ] || fail=1
done
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo
echo "Machine: $(nproc) CPUs, ${cpu:-unknown CPU}; $("$BIN" --version)"
[ "$fail" = 0 ] || { echo "a count is off, or the plan after is not empty" >&2; exit 1; }
