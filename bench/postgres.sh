#!/usr/bin/env bash
# Benchmark the Postgres target: `bash bench/postgres.sh [N] [BIG]` (defaults 1000 10000).
#
# 1. apply N new schema-mode tenants with tenant-reconcile, and the same work as a plain SQL
#    script through psql in one session (bench/pg_baseline.py); both times and their ratio;
# 2. the no-change plan (with refresh) at N and at BIG tenants, with the queries it sent, and
#    at N tenants in their plans' own isolation modes (shared, schema and database), whose
#    refresh must send as many queries as a fleet of one mode, whatever its size.
# BENCH_BIN=path runs that binary instead of building the release one.
# Start it on a machine where nothing large was dropped in the last six minutes: on ext4
# without a journal, a file made within minutes of thousands deleted costs the kernel a scan
# past each of them, which weighs on the apply (first) and not on the script after it.
# Needs PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432, trust auth),
# psql and GNU time. Everything it creates is named bench_*/b<pid>* and removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-1000}
BIG=${2:-10000}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
ID=$$
REPEATS=3

for tool in psql /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y postgresql-client time)" >&2; exit 1; }
done
psql "$PG/postgres" -qAtc "select 1" >/dev/null || { echo "no PostgreSQL at $PG" >&2; exit 1; }

# shellcheck source=lib.sh
source bench/lib.sh
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-pgbench.XXXXXX")"
export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"

cleanup() {
  for db in $(psql "$PG/postgres" -qAtc "select datname from pg_database where datname like 'bench\_${ID}%' or datname like 'b${ID}\_%'"); do
    psql "$PG/postgres" -qc "DROP DATABASE \"$db\" WITH (FORCE)" >/dev/null
  done
  # One statement for thousands of roles.
  psql "$PG/postgres" -qc "DO \$\$ DECLARE r text; BEGIN
    FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'b${ID}\_%' OR rolname LIKE 'p${ID}\_%' LOOP
      EXECUTE format('DROP ROLE %I', r);
    END LOOP; END \$\$" >/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

# repo N NAME [MODE]: a repo of N tenants on its own database, all in MODE (default schema;
# `plans` leaves each in its plan's mode).
repo() {
  local n=$1 name=$2 dir="$TMP/$2" mode=${3:-schema}
  python3 bench/generate.py "$n" "$dir" $([ "$mode" = plans ] || echo "$mode")
  psql "$PG/postgres" -qc "CREATE DATABASE bench_${ID}_$name" >/dev/null
  postgres_config "$dir" "b${ID}_${name}_"
  echo "$dir"
}

# timed LABEL CMD...: prints "secs kb" of one run.
timed() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$TMP/t" "$@" >"$TMP/out" 2>"$TMP/err" || { echo "FAILED: $label" >&2; tail -20 "$TMP/err" >&2; exit 1; }
  cat "$TMP/t"
}

# plan_refresh DIR: median seconds, peak KB and queries of REPEATS no-change plans.
plan_refresh() {
  local dir=$1 times="" mems="" queries=""
  for _ in $(seq $REPEATS); do
    read -r t m < <(DATABASE_URL="$PG/bench_${ID}_$(basename "$dir")" TENANT_RECONCILE_LOG=tenant_reconcile=debug NO_COLOR=1 \
      timed "plan" "$BIN" -C "$dir" plan --detailed-exitcode)
    times+="$t"$'\n'; mems+="$m"$'\n'
    # Only the server's round trips: the local bucket and file providers read files.
    queries=$(refresh_queries "$TMP/err" postgres)
  done
  local mid=$(((REPEATS + 1) / 2))
  echo "$(printf '%s' "$times" | sort -n | sed -n "${mid}p") $(printf '%s' "$mems" | sort -n | sed -n "${mid}p") $queries"
}

echo "apply: $N new schema-mode tenants ..." >&2
small=$(repo "$N" small)
quiet "$PG"
read -r apply_s apply_kb < <(DATABASE_URL="$PG/bench_${ID}_small" timed "apply" "$BIN" -C "$small" apply --auto-approve)
read -r plan_s plan_kb plan_q < <(plan_refresh "$small")

echo "baseline: the same work as one psql script ..." >&2
python3 bench/pg_baseline.py "$small" "p${ID}_" >"$TMP/baseline.sql"
psql "$PG/postgres" -qc "CREATE DATABASE bench_${ID}_baseline" >/dev/null
quiet "$PG"
read -r sql_s _ < <(timed "psql" psql -q "$PG/bench_${ID}_baseline" -f "$TMP/baseline.sql")

echo "refresh: $BIG tenants (applying them first) ..." >&2
big=$(repo "$BIG" big)
read -r big_apply_s big_apply_kb < <(DATABASE_URL="$PG/bench_${ID}_big" timed "apply big" "$BIN" -C "$big" apply --auto-approve)
read -r big_plan_s big_plan_kb big_plan_q < <(plan_refresh "$big")

echo "refresh: $N tenants in their plans' isolation modes ..." >&2
mixed=$(repo "$N" mixed plans)
DATABASE_URL="$PG/bench_${ID}_mixed" timed "apply mixed" "$BIN" -C "$mixed" apply --auto-approve >/dev/null
read -r mixed_plan_s mixed_plan_kb mixed_plan_q < <(plan_refresh "$mixed")

ratio=$(awk -v a="$apply_s" -v b="$sql_s" 'BEGIN { printf "%.2f", a / b }')
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo
echo "| what | tenants | time (s) | peak memory (MB) | queries |"
echo "| --- | ---: | ---: | ---: | ---: |"
echo "| apply, all new (schema mode) | $N | $apply_s | $(mb "$apply_kb") | |"
echo "| the same work as one psql script | $N | $sql_s | | |"
echo "| plan with refresh, no changes (median of $REPEATS) | $N | $plan_s | $(mb "$plan_kb") | $plan_q |"
echo "| apply, all new (schema mode) | $BIG | $big_apply_s | $(mb "$big_apply_kb") | |"
echo "| plan with refresh, no changes (median of $REPEATS) | $BIG | $big_plan_s | $(mb "$big_plan_kb") | $big_plan_q |"
echo "| plan with refresh, no changes, shared + schema + database (median of $REPEATS) | $N | $mixed_plan_s | $(mb "$mixed_plan_kb") | $mixed_plan_q |"
echo
echo "apply / psql = $ratio"
if [ "$plan_q" != "$big_plan_q" ] || [ "$plan_q" != "$mixed_plan_q" ]; then
  echo "refresh queries are not constant: $plan_q at $N, $big_plan_q at $BIG, $mixed_plan_q at $N in mixed modes" >&2
  exit 1
fi
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "Machine: $(nproc) CPUs, ${cpu:-unknown CPU}, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(psql "$PG/postgres" -qAtc 'show server_version' | cut -d' ' -f1) PostgreSQL; $("$BIN" --version)"
