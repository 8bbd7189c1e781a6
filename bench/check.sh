#!/usr/bin/env bash
# Benchmark `tenant-reconcile check` on the Postgres target: `bash bench/check.sh [N]`
# (default 1000).
#
# Applies N schema-mode tenants (which smoke-tests each before it becomes active), then runs
# `check` over all of them at a few parallelisms: time, peak memory, and the connections
# the server accepted for it (pg_stat_database.sessions of the bench database, before and
# after). Needs PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432, trust
# auth), psql and GNU time. Everything it creates is named bench_*/c<pid>* and removed.
# BENCH_BIN=path runs that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-1000}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
ID=$$

command -v psql >/dev/null || { echo "psql is missing (apt-get install -y postgresql-client)" >&2; exit 1; }
psql "$PG/postgres" -qAtc "select 1" >/dev/null || { echo "no PostgreSQL at $PG" >&2; exit 1; }
# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-checkbench.XXXXXX")"
DB="bench_${ID}_check"
export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"
export DATABASE_URL="$PG/$DB"

cleanup() {
  drop_like "$PG" "$DB" "c${ID}\_%"
  rm -rf "$TMP"
}
trap cleanup EXIT

python3 bench/generate.py "$N" "$TMP/repo" schema
psql "$PG/postgres" -qc "CREATE DATABASE $DB" >/dev/null
postgres_config "$TMP/repo" "c${ID}_"

sessions() {
  # Sessions end asynchronously after their client closes them; let them be counted.
  sleep 1
  psql "$PG/postgres" -qAtc "select sessions from pg_stat_database where datname = '$DB'"
}

echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB; $(psql "$PG/postgres" -qAtc 'show server_version')"
before=$(sessions)
/usr/bin/time -f "%e %M" -o "$TMP/t" "$BIN" -C "$TMP/repo" apply --auto-approve >"$TMP/out" 2>"$TMP/err" \
  || { tail -20 "$TMP/err" >&2; exit 1; }
read -r secs kb <"$TMP/t"
after=$(sessions)
printf '%-34s %8s s %8.1f MB %8d connections\n' "apply $N new tenants (smoke-tested)" "$secs" "$(echo "$kb/1024" | bc -l)" "$((after - before))"

for p in 1 8 32; do
  before=$(sessions)
  /usr/bin/time -f "%e %M %U %S" -o "$TMP/t" "$BIN" -C "$TMP/repo" check --parallelism "$p" >"$TMP/out" 2>"$TMP/err" \
    || { tail -20 "$TMP/err" "$TMP/out" >&2; exit 1; }
  read -r secs kb user sys <"$TMP/t"
  after=$(sessions)
  healthy=$(tail -1 "$TMP/out")
  printf '%-34s %8s s %8.1f MB %8d connections  (%s; its own CPU %s s user, %s s system)\n' "check, $N tenants, parallelism $p" "$secs" "$(echo "$kb/1024" | bc -l)" "$((after - before))" "$healthy" "$user" "$sys"
done
