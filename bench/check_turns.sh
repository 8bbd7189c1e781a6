#!/usr/bin/env bash
# Old build against new build, in turns: `check` of one applied fleet on Postgres.
#   bash bench/check_turns.sh OLD_BIN NEW_BIN [TENANTS] [ROUNDS]
# Applies TENANTS generated schema-mode tenants once with NEW_BIN (each smoke-tested on its
# way to active), then runs `check` over all of them with OLD_BIN and NEW_BIN in turns, so
# both see the same fleet and the same hour of a machine whose speed drifts. Prints each
# run's wall time, the whole machine's busy CPU time (from /proc/stat: the server's work and
# this process's) and the check's own CPU time (user + system, from GNU time).
# Needs PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432, trust auth), psql
# and GNU time. Everything it creates is named ct_*/k<pid>* and removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -ge 2 ] || { echo "usage: bash bench/check_turns.sh OLD_BIN NEW_BIN [TENANTS] [ROUNDS]" >&2; exit 1; }
OLD=$1 NEW=$2
N=${3:-3000}
ROUNDS=${4:-3}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
export PGOPTIONS="-c client_min_messages=warning"
ID=$$
DB="ct_$ID"

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-checkturns.XXXXXX")"
cleanup() {
  drop_like "$PG" "$DB" "k${ID}\_%"
  rm -rf "$TMP"
}
trap cleanup EXIT

python3 bench/generate.py "$N" "$TMP/repo" schema
postgres_config "$TMP/repo" "k${ID}_"
psql "$PG/postgres" -qc "CREATE DATABASE $DB" >/dev/null
export DATABASE_URL="$PG/$DB"
export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"
"$NEW" -C "$TMP/repo" apply --auto-approve >/dev/null 2>"$TMP/err" || { tail -20 "$TMP/err" >&2; exit 1; }

echo "| round | build | wall (s) | busy CPU (s) | its own CPU (s) | check |"
echo "| ---: | --- | ---: | ---: | ---: | --- |"
for round in $(seq "$ROUNDS"); do
  for build in old new; do
    bin=$OLD
    [ "$build" = new ] && bin=$NEW
    before=$(busy)
    # Exit 2 is an unhealthy tenant: still a run, said in the table.
    code=0
    /usr/bin/time -f "%e %U %S" -o "$TMP/t" "$bin" -C "$TMP/repo" check >"$TMP/out" 2>"$TMP/err" || code=$?
    [ "$code" -le 2 ] || { tail -20 "$TMP/err" >&2; exit 1; }
    cpu=$(awk -v a="$before" -v b="$(busy)" 'BEGIN { printf "%.1f", b - a }')
    read -r secs user sys <"$TMP/t"
    own=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')
    echo "| $round | $build | $secs | $cpu | $own | $([ "$code" = 0 ] && echo healthy || echo "exit $code") |"
  done
done
echo "$N schema-mode tenants; $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
