#!/usr/bin/env bash
# Benchmark the purge: `bash bench/purge.sh [N]` (default 1000).
#
# N schema-mode tenants on Postgres, provisioned, offboarded (revoked and exported) with a
# plan that holds nothing (retention_days = 0), then purged by one apply: every schema,
# role, bucket folder, rendered file and control-plane row, each audited. Against it: a
# second fleet of N, provisioned the same way, whose schemas and roles a plain psql script
# drops in one session (what a hand-written offboarding would do, without export checks,
# audit, tombstone or state). Prints both times, their ratio, the purge's peak memory and the
# queries its plan sent.
# Needs PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432, trust auth), psql
# and GNU time. Everything it creates is named pb<pid>* and removed at the end.
# BENCH_BIN=path runs that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-1000}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
ID=$$

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
command -v psql >/dev/null || { echo "psql is missing (apt-get install -y postgresql-client)" >&2; exit 1; }
psql "$PG/postgres" -qAtc "select 1" >/dev/null || { echo "no PostgreSQL at $PG" >&2; exit 1; }
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-purge.XXXXXX")"
export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"

cleanup() {
  drop_like "$PG" "pb${ID}\_%" "pb${ID}\_%"
  rm -rf "$TMP"
}
trap cleanup EXIT

# fleet NAME: a repo of N schema-mode tenants on a database of its own, provisioned.
fleet() {
  local name=$1 dir="$TMP/$1"
  python3 bench/generate.py "$N" "$dir" schema >/dev/null
  sed -i 's/^status: suspended$//' "$dir"/tenants/*.yaml
  sed -i 's/^retention_days *=.*/retention_days = 0/' "$dir"/plans/*.hcl
  psql "$PG/postgres" -qc "CREATE DATABASE pb${ID}_$name" >/dev/null
  cat >"$dir/tenant-reconcile.hcl" <<HCL
state {
  backend = "postgres"
}
targets {
  control_plane = "postgres"
  data          = "postgres"
}
postgres {
  role_prefix     = "pb${ID}_${name}_"
  schema_prefix   = "pb${ID}_${name}_"
  database_prefix = "pb${ID}_${name}_"
}
HCL
  DATABASE_URL="$PG/pb${ID}_$name" "$BIN" -C "$dir" apply --auto-approve --parallelism 8 >/dev/null 2>"$TMP/err" \
    || { tail -20 "$TMP/err" >&2; exit 1; }
  echo "$dir"
}

# timed LABEL CMD...: prints "secs kb user-secs system-secs" of one run.
timed() {
  local label=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$TMP/t" "$@" >"$TMP/out" 2>"$TMP/err" || { echo "FAILED: $label" >&2; tail -20 "$TMP/err" >&2; exit 1; }
  cat "$TMP/t"
}

echo "provisioning and offboarding $N schema-mode tenants ..." >&2
dir=$(fleet purged)
export DATABASE_URL="$PG/pb${ID}_purged"
for f in "$dir"/tenants/*.yaml; do echo "status: deprovisioned" >>"$f"; done
read -r export_s export_kb < <(timed "offboard" "$BIN" -C "$dir" apply --auto-approve)

# Each timed part starts from a quiet server (`quiet` in lib.sh).
quiet "$PG"
echo "planning their purge ..." >&2
read -r plan_s plan_kb < <(timed "plan" "$BIN" -C "$dir" plan)
echo "purging them ..." >&2
read -r purge_s purge_kb purge_user purge_sys < <(TENANT_RECONCILE_LOG=tenant_reconcile=debug NO_COLOR=1 \
  timed "purge" "$BIN" -C "$dir" apply --auto-approve --allow-mass-purge --parallelism "${PARALLELISM:-10}")
queries=$(refresh_queries "$TMP/err" postgres)
audited=$(psql "$DATABASE_URL" -qAtc "select count(*) from tenant_reconcile.deletion_audit where purged_at is not null")
left=$(psql "$DATABASE_URL" -qAtc "select count(*) from pg_namespace where nspname like 'pb${ID}\_purged\_%'")
[ "$left" = 0 ] || { echo "FAILED: $left schemas left after the purge" >&2; exit 1; }
"$BIN" -C "$dir" plan --detailed-exitcode >/dev/null || { echo "FAILED: the plan after the purge is not empty" >&2; exit 1; }

echo "baseline: the same schemas and roles dropped by one psql script ..." >&2
base=$(fleet baseline)
psql "$PG/pb${ID}_baseline" -qAtc "select format('DROP SCHEMA %I CASCADE; DROP ROLE %I;', nspname, nspname)
  from pg_namespace where nspname like 'pb${ID}\_baseline\_%' and nspname <> 'pb${ID}_baseline__shared'" >"$TMP/drop.sql"
quiet "$PG"
read -r sql_s _ < <(timed "psql" psql -q "$PG/pb${ID}_baseline" -f "$TMP/drop.sql")
: "$base"

ratio=$(awk -v a="$purge_s" -v b="$sql_s" 'BEGIN { printf "%.2f", a / b }')
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo
echo "| what | tenants | time (s) | peak memory (MB) |"
echo "| --- | ---: | ---: | ---: |"
echo "| offboard: revoke and export (schema mode) | $N | $export_s | $(mb "$export_kb") |"
echo "| plan of the purge: counting what each holds, verifying each export | $N | $plan_s | $(mb "$plan_kb") |"
echo "| purge: plan, export checks, drops, audit, tombstones | $N | $purge_s | $(mb "$purge_kb") |"
echo "| the same schemas and roles dropped by one psql script | $N | $sql_s | |"
echo
echo "the purge's own CPU: ${purge_user} s user, ${purge_sys} s system"
echo "purge / psql = $ratio; $audited resources audited; the purge's refresh sent $queries queries to PostgreSQL"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "Machine: $(nproc) CPUs, ${cpu:-unknown CPU}, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(psql "$PG/postgres" -qAtc 'show server_version' | cut -d' ' -f1) PostgreSQL; $("$BIN" --version)"
