#!/usr/bin/env bash
# Benchmark `export`: one schema-mode tenant on Postgres holding ROWS rows (default
# 1,000,000) in its projects table, exported with `tenant-reconcile export`; prints the time,
# the peak memory (it streams: memory must not grow with the rows) and the size written.
# Needs PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432, trust auth), psql
# and GNU time. Everything it creates is named xb<pid>* and removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${1:-1000000}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
ID=$$

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
build_release
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-export.XXXXXX")"
cleanup() {
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS xb${ID} WITH (FORCE)" >/dev/null
  psql "$PG/postgres" -qc "DROP ROLE IF EXISTS xb${ID}_acme" >/dev/null
  psql "$PG/postgres" -qc "DROP ROLE IF EXISTS xb${ID}__shared" >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT

repo="$TMP/repo"
mkdir -p "$repo/tenants"
cp -r plans templates migrations "$repo/"
cp tenants/acme.yaml "$repo/tenants/"
cat >"$repo/tenant-reconcile.hcl" <<HCL
state {
  backend = "postgres"
}
targets {
  control_plane = "postgres"
  data          = "postgres"
}
postgres {
  role_prefix     = "xb${ID}_"
  schema_prefix   = "xb${ID}_"
  database_prefix = "xb${ID}_"
}
HCL
psql "$PG/postgres" -qc "CREATE DATABASE xb${ID}" >/dev/null
export DATABASE_URL="$PG/xb${ID}"
export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"
"$BIN" -C "$repo" apply --auto-approve >/dev/null 2>&1
echo "filling acme's projects with $ROWS rows ..." >&2
psql "$DATABASE_URL" -qc "INSERT INTO xb${ID}_acme.projects (name, description)
  SELECT 'project ' || i, 'a description of project ' || i || ', with a comma' FROM generate_series(2, $ROWS) i"

/usr/bin/time -f "%e %M" -o "$TMP/t" "$BIN" -C "$repo" export acme --to "$TMP/out" >"$TMP/said"
read -r secs kb <"$TMP/t"
size=$(du -sb "$TMP/out" | cut -f1)
cat "$TMP/said" >&2
echo
echo "| rows | time (s) | peak memory (MB) | written (MB) |"
echo "| ---: | ---: | ---: | ---: |"
echo "| $ROWS | $secs | $(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }') | $(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1048576 }') |"
echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $("$BIN" --version)"
