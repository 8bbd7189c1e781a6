#!/usr/bin/env bash
# Several runners on one fleet: `bash bench/runners.sh [N]` (default 2000).
#
# On a Postgres state (control plane and data on Postgres too), N new schema-mode tenants are
# applied three ways, each on a database and names of its own:
#   one     one runner, `apply --auto-approve`;
#   shards  four runners side by side, `apply --auto-approve --shard K/4`, the fourth killed
#           with -9 once a third of the tenants are registered, then its share run again;
#   claims  four runners given one saved plan, `apply PLAN --claim`, the fourth killed with
#           -9 once a third of the tenants are registered: the other three finish its share.
# For each: the wall time, the largest runner's peak memory, and, counted from outside
# (psql), registry rows and TenantProvisioned events, each of which must be N, the roles
# made, which must be as many as one runner makes, and the exit code of a
# `plan --detailed-exitcode` after it, which must be 0 (empty).
# BENCH_BIN=path runs that binary instead of building the release one.
# Needs PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432, trust auth),
# psql, git and GNU time. Everything it creates is named bench_*/r<pid>* and removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-2000}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
ID=$$

for tool in psql git; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
psql "$PG/postgres" -qAtc "select 1" >/dev/null || { echo "no PostgreSQL at $PG" >&2; exit 1; }

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-runners.XXXXXX")"
export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"
export NO_COLOR=1

cleanup() {
  drop_like "$PG" "bench\_r${ID}% r${ID}\_%" "r${ID}\_%"
  rm -rf "$TMP"
}
trap cleanup EXIT

# repo NAME: the fleet in a git repo of its own (committed, as CI checks it out), on a
# database of its own, its first tenant applied so the state is written once.
repo() {
  local name=$1 dir="$TMP/$1"
  python3 bench/generate.py "$N" "$dir" schema >/dev/null
  psql "$PG/postgres" -qc "CREATE DATABASE bench_r${ID}_$name" >/dev/null
  cat >"$dir/tenant-reconcile.hcl" <<HCL
state {
  backend = "postgres"
}
targets {
  control_plane = "postgres"
  data          = "postgres"
}
postgres {
  role_prefix     = "r${ID}_${name}_"
  schema_prefix   = "r${ID}_${name}_"
  database_prefix = "r${ID}_${name}_"
}
HCL
  printf '.tenant-reconcile/\n*.plan\n' >"$dir/.gitignore"
  commit_all "$dir" fleet
  local first
  first=$(basename "$(ls "$dir/tenants" | head -1)" .yaml)
  DATABASE_URL="$PG/bench_r${ID}_$name" "$BIN" -C "$dir" apply --auto-approve --tenant "$first" >/dev/null 2>&1
  echo "$dir"
}

# counts NAME: registry rows, tenant roles, TenantProvisioned events, and the exit code of a
# plan after it (0: empty).
counts() {
  local name=$1 db="$PG/bench_r${ID}_$1" code=0
  local rows roles events
  rows=$(psql "$db" -qAtc "select count(*) from tenant_reconcile.tenants")
  roles=$(psql "$PG/postgres" -qAtc "select count(*) from pg_roles where rolname like 'r${ID}\_${name}\_%'")
  events=$(psql "$db" -qAtc "select count(*) from tenant_reconcile.outbox where type = 'TenantProvisioned'")
  DATABASE_URL="$db" "$BIN" -C "$TMP/$name" plan --detailed-exitcode >/dev/null 2>&1 || code=$?
  echo "$rows $roles $events $code"
}

# runners NAME ARGS...: four runners of `apply ARGS` (a `{K}` in ARGS is the runner's number)
# at once; with KILL set, the fourth is killed with -9 once a third of the fleet is
# registered. Prints the wall seconds and the largest peak KB.
runners() {
  local name=$1; shift
  local dir="$TMP/$name" db="$PG/bench_r${ID}_$name" pids=() start end
  start=$(date +%s.%N)
  for k in 1 2 3 4; do
    local args=("${@//\{K\}/$k}")
    DATABASE_URL="$db" /usr/bin/time -f "%M" -o "$TMP/$name.mem.$k" \
      "$BIN" -C "$dir" apply "${args[@]}" >"$TMP/$name.out.$k" 2>"$TMP/$name.err.$k" &
    pids+=($!)
  done
  if [ -n "${KILL:-}" ]; then
    until [ "$(psql "$db" -qAtc "select count(*) from tenant_reconcile.tenants")" -ge $((N / 3)) ]; do sleep 0.2; done
    # The binary under GNU time: kill it, not time.
    pkill -9 -P "${pids[3]}" || true
  fi
  for i in 0 1 2 3; do
    if ! wait "${pids[$i]}" && { [ -z "${KILL:-}" ] || [ "$i" != 3 ]; }; then
      echo "runner $((i + 1)) of $name failed:" >&2; tail -5 "$TMP/$name.err.$((i + 1))" >&2
    fi
  done
  end=$(date +%s.%N)
  local peak
  peak=$(cat "$TMP/$name".mem.* 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1)
  echo "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') ${peak:-0}"
}

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
row() { # LABEL SECS KB COUNTS...
  local label=$1 s=$2 kb=$3; shift 3
  echo "| $label | $s | $(mb "$kb") | $1 | $2 | $3 | $4 |"
}

echo "one runner: $N tenants ..." >&2
repo one >/dev/null
start=$(date +%s.%N)
DATABASE_URL="$PG/bench_r${ID}_one" /usr/bin/time -f "%M" -o "$TMP/one.mem" "$BIN" -C "$TMP/one" apply --auto-approve >/dev/null 2>"$TMP/one.err"
one_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
one=$(counts one)

echo "four shards, the fourth killed, then run again: $N tenants ..." >&2
repo shards >/dev/null
read -r shards_s shards_kb < <(KILL=1 runners shards --auto-approve --shard "{K}/4" --lock-timeout 10m)
# A shard's share is its own: the killed runner's is finished by running it again.
start=$(date +%s.%N)
DATABASE_URL="$PG/bench_r${ID}_shards" "$BIN" -C "$TMP/shards" apply --auto-approve --shard 4/4 >/dev/null 2>"$TMP/shards.rerun"
rerun_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
shards=$(counts shards)

echo "four claiming runners, the fourth killed: $N tenants ..." >&2
repo claims >/dev/null
DATABASE_URL="$PG/bench_r${ID}_claims" "$BIN" -C "$TMP/claims" plan --out "$TMP/claims/fleet.plan" >/dev/null 2>&1
read -r claims_s claims_kb < <(KILL=1 runners claims "$TMP/claims/fleet.plan" --claim)
claims=$(counts claims)
tally=$(grep -h "^The plan: " "$TMP"/claims.out.* | sort | uniq -c | sort -rn | head -1 | sed 's/^ *[0-9]* //')
applied=$(grep -h "^This runner applied " "$TMP"/claims.out.* | grep -oE '[0-9]+' | paste -sd' ')

# The first tenant was applied before, by one runner: each count is N.
echo
echo "| runners ($N tenants, the first applied before) | wall time (s) | peak memory, largest runner (MB) | registry rows | roles | TenantProvisioned events | plan after (0: empty) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
# shellcheck disable=SC2086
row "one runner" "$one_s" "$(cat "$TMP/one.mem")" $one
# shellcheck disable=SC2086
row "four, --shard K/4, one killed at a third, its share run again ($rerun_s s more)" "$shards_s" "$shards_kb" $shards
# shellcheck disable=SC2086
row "four, --claim, one killed -9 at a third" "$claims_s" "$claims_kb" $claims
echo
echo "claiming runners' own counts (the killed one says none): $applied; their tally: $tally"
fail=0
one_roles=$(echo "$one" | cut -d' ' -f2)
for c in "$one" "$shards" "$claims"; do
  # shellcheck disable=SC2086
  set -- $c
  if [ "$1" != "$N" ] || [ "$2" != "$one_roles" ] || [ "$3" != "$N" ] || [ "$4" != 0 ]; then fail=1; fi
done
[ "$fail" = 0 ] || { echo "a tenant was not applied exactly once, or the plan after is not empty" >&2; exit 1; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "Machine: $(nproc) CPUs, ${cpu:-unknown CPU}, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(psql "$PG/postgres" -qAtc 'show server_version' | cut -d' ' -f1) PostgreSQL; $("$BIN" --version)"
