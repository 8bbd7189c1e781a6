#!/usr/bin/env bash
# Old build against new build, in turns, on one synthetic repo:
#   bash bench/turns.sh OLD_BIN NEW_BIN [TENANTS] [RUNS] [-- PLAN ARGS...]
# The repo is generated and applied once (with NEW_BIN); then each round runs the no-change
# plan with OLD_BIN and NEW_BIN one after the other, so both see the same hour of a machine
# whose speed drifts. Prints each build's median wall time, CPU time (user + system) and peak
# memory. Both builds must find the repo converged (`--detailed-exitcode` exits 0).
# With TURNS_POSTGRES=postgres://postgres@127.0.0.1:5432 the tenants are schema-mode tenants on
# that server (a database and names of the run's own, removed at the end) instead of the local
# target. With TURNS_APART=1 (local target only) each build applies a copy of the repo of its
# own and plans against it: for builds whose states differ in format, where the older could not
# read the newer's (a newer build reads an older state as it is, without converting it).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -ge 2 ] || { echo "usage: bash bench/turns.sh OLD_BIN NEW_BIN [TENANTS] [RUNS] [-- PLAN ARGS...]" >&2; exit 1; }
OLD=$1 NEW=$2
N=${3:-10000}
RUNS=${4:-10}
shift $(($# < 4 ? $# : 4))
[ "${1:-}" = "--" ] && shift
ARGS=("$@")

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-turns.XXXXXX")"
dir="$TMP/repo"
PG=${TURNS_POSTGRES:-}
ID=$$
cleanup() {
  if [ -n "$PG" ]; then
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS turns_$ID WITH (FORCE)" >/dev/null
    psql "$PG/postgres" -qc "DO \$\$ DECLARE r text; BEGIN
      FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'q${ID}\_%' LOOP
        EXECUTE format('DROP ROLE %I', r);
      END LOOP; END \$\$" >/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
echo "generating and applying $N tenants with $NEW ..." >&2
if [ -n "$PG" ]; then
  python3 bench/generate.py "$N" "$dir" schema
  psql "$PG/postgres" -qc "CREATE DATABASE turns_$ID" >/dev/null
  postgres_config "$dir" "q${ID}_"
  export DATABASE_URL="$PG/turns_$ID"
  export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"
else
  python3 bench/generate.py "$N" "$dir"
fi
APART=${TURNS_APART:-}
if [ -n "$APART" ]; then
  [ -z "$PG" ] || { echo "TURNS_APART is for the local target only" >&2; exit 1; }
  for build in old new; do
    cp -r "$dir" "$TMP/repo-$build"
    bin=$OLD
    [ "$build" = new ] && bin=$NEW
    "$bin" -C "$TMP/repo-$build" apply --auto-approve >/dev/null 2>"$TMP/err" || { tail -20 "$TMP/err" >&2; exit 1; }
  done
else
  "$NEW" -C "$dir" apply --auto-approve >/dev/null 2>"$TMP/err" || { tail -20 "$TMP/err" >&2; exit 1; }
fi

for build in old new; do : >"$TMP/$build"; done
for round in $(seq "$RUNS"); do
  for build in old new; do
    bin=$OLD
    [ "$build" = new ] && bin=$NEW
    repo=$dir
    [ -n "$APART" ] && repo="$TMP/repo-$build"
    if ! /usr/bin/time -f "%e %U %S %M" -o "$TMP/t" "$bin" -C "$repo" plan --detailed-exitcode "${ARGS[@]}" >/dev/null 2>"$TMP/err"; then
      echo "FAILED ($build): the repo is not converged for it" >&2
      tail -20 "$TMP/err" >&2
      exit 1
    fi
    cat "$TMP/t" >>"$TMP/$build"
  done
  echo "  round $round done" >&2
done

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "| build | plan (s) | CPU (s) | peak memory (MB) |"
echo "| --- | ---: | ---: | ---: |"
for build in old new; do
  t=$(awk '{ print $1 }' "$TMP/$build" | median)
  c=$(awk '{ printf "%.2f\n", $2 + $3 }' "$TMP/$build" | median)
  m=$(awk '{ print $4 }' "$TMP/$build" | median)
  echo "| $build | $t | $c | $(awk -v k="$m" 'BEGIN { printf "%.1f", k / 1024 }') |"
done
echo "$N tenants, median of $RUNS runs each, in turns; $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
