#!/usr/bin/env bash
# What one new tenant costs the Postgres target in statements and round trips:
#   bash bench/round_trips.sh [N] [BIN]   (defaults: 100, the release build)
# Applies N generated schema-mode tenants, state and control plane on Postgres too, on a server
# of its own (started here with pg_stat_statements, removed at the end), then prints the
# statements the server ran per tenant (from pg_stat_statements, by kind) and, where strace is
# installed, the round trips this process sent per tenant (its `sendto` calls). The plan after
# the apply must be empty.
# Needs the PostgreSQL server's programs (initdb, pg_ctl), psql, python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-100}
# shellcheck source=lib.sh
source bench/lib.sh
if [ -n "${2:-}" ]; then BIN=$2; else build_release; fi
find_pg_bin
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-roundtrips.XXXXXX")"
cleanup() {
  stop_own_servers
  rm -rf "$TMP"
}
trap cleanup EXIT

# A server of this run's own, with pg_stat_statements loaded.
chmod 755 "$TMP"
own_server "$TMP/server" shared_preload_libraries=pg_stat_statements pg_stat_statements.track_planning=on
PG="postgres://postgres@127.0.0.1:$PORT"
psql "$PG/postgres" -qc "CREATE EXTENSION pg_stat_statements" >/dev/null
psql "$PG/postgres" -qc "CREATE DATABASE fleet" >/dev/null

python3 bench/generate.py "$N" "$TMP/repo" schema >/dev/null
postgres_config "$TMP/repo"
export DATABASE_URL="$PG/fleet" TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"
# The admin tables made first, so the count is the tenants' alone.
"$BIN" -C "$TMP/repo" plan >/dev/null 2>&1 || true
psql "$PG/postgres" -qAtc "SELECT pg_stat_statements_reset()" >/dev/null
trace=()
if command -v strace >/dev/null; then trace=(strace -f -e trace=sendto -c -o "$TMP/strace"); fi
"${trace[@]}" "$BIN" -C "$TMP/repo" apply --auto-approve >/dev/null 2>"$TMP/err" ||
  { echo "FAILED: apply" >&2; tail -20 "$TMP/err" >&2; exit 1; }
"$BIN" -C "$TMP/repo" plan --detailed-exitcode >/dev/null 2>"$TMP/err" ||
  { echo "the plan after the apply is not empty" >&2; tail -20 "$TMP/err" >&2; exit 1; }

echo "| statements a new tenant | count | planning (ms) | running (ms) |"
echo "| --- | ---: | ---: | ---: |"
# Each kind by its first words; a tenant's own names (quoted identifiers, literals) as X; with
# the server's time planning and running each kind, a tenant's share, where its cost shows.
psql "$PG/postgres" -qAt -F ' | ' -c "
  SELECT '| ' || kind, round(sum(calls)::numeric / $N, 2), round(sum(plan)::numeric / $N, 3),
    round(sum(exec)::numeric / $N, 3) || ' |' FROM (
    SELECT calls, total_plan_time AS plan, total_exec_time AS exec,
      left(regexp_replace(regexp_replace(query, '\s+', ' ', 'g'),
      '\"[^\"]*\"|''[^'']*''', 'X', 'g'), 60) AS kind FROM pg_stat_statements) s
  GROUP BY kind HAVING sum(calls) >= $N / 2 ORDER BY sum(calls) DESC, 1"
read -r total plan exec < <(psql "$PG/postgres" -qAt -F ' ' -c "SELECT round(sum(calls)::numeric / $N, 1),
  round(sum(total_plan_time)::numeric / $N, 2), round(sum(total_exec_time)::numeric / $N, 2) FROM pg_stat_statements")
echo
echo "statements a tenant, all kinds: $total ($plan ms planning them, $exec ms running them)"
if [ ${#trace[@]} -gt 0 ]; then
  sends=$(awk '$NF == "sendto" { print $4 }' "$TMP/strace")
  echo "round trips a tenant (sendto): $(awk -v s="${sends:-0}" -v n="$N" 'BEGIN { printf "%.1f", s / n }')"
else
  echo "round trips: strace is not installed (apt-get install -y strace)"
fi
