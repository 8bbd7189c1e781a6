#!/usr/bin/env bash
# Old build against new build, in turns: an apply of N new schema-mode tenants on Postgres.
#   bash bench/apply_turns.sh OLD_BIN NEW_BIN [TENANTS] [ROUNDS]
# Each round applies the same generated repo once with OLD_BIN and once with NEW_BIN, each
# from nothing (a database and role names of its own, all removed at the end), then runs the
# same work as one psql script (bench/pg_baseline.py), so all three see the same hour of a
# machine whose speed drifts. Nothing is dropped between runs: on ext4 without a journal, a
# file made within minutes of thousands deleted costs the kernel a scan past each of them
# (`recently_deleted` in a profile), which would weigh on each run by what the one before it
# dropped. Start it on a machine where nothing large was dropped in the last six minutes. Prints each run's wall time, peak memory, the whole machine's busy CPU
# time (from /proc/stat: the server's work and this process's), the CPU time of the apply's
# own process (user + system, from GNU time: the rest is the server's) and the transactions the
# database committed, then checks that the plan after each apply is empty.
# Needs PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432, trust auth), psql
# and GNU time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -ge 2 ] || { echo "usage: bash bench/apply_turns.sh OLD_BIN NEW_BIN [TENANTS] [ROUNDS]" >&2; exit 1; }
OLD=$1 NEW=$2
N=${3:-3000}
ROUNDS=${4:-2}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
export PGOPTIONS="-c client_min_messages=warning"
ID=$$

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-applyturns.XXXXXX")"
drop() {
  local run=$1
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS at_$run WITH (FORCE)" >/dev/null
  psql "$PG/postgres" -qc "DO \$\$ DECLARE r text; BEGIN
    FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'a${run}\_%' LOOP
      EXECUTE format('DROP ROLE %I', r);
    END LOOP; END \$\$" >/dev/null
}
RUNS_MADE=()
cleanup() {
  for run in "${RUNS_MADE[@]}"; do drop "$run"; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# commits DB: the transactions DB has committed (its statistics are flushed a second late).
commits() {
  sleep 1.5
  psql "$PG/postgres" -qAtc "SELECT xact_commit FROM pg_stat_database WHERE datname = '$1'"
}

python3 bench/generate.py "$N" "$TMP/template" schema
export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"
echo "| round | run | wall (s) | peak memory (MB) | busy CPU (s) | its own CPU (s) | transactions |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"
for round in $(seq "$ROUNDS"); do
  for build in old new psql; do
    if [ "$build" = psql ]; then
      run="${ID}r${round}psql"
      RUNS_MADE+=("$run")
      python3 bench/pg_baseline.py "$TMP/template" "a${run}_" >"$TMP/script.sql"
      psql "$PG/postgres" -qc "CREATE DATABASE at_$run" >/dev/null
      quiet "$PG"
      before=$(busy)
      /usr/bin/time -f "%e %M" -o "$TMP/t" psql -q "$PG/at_$run" -f "$TMP/script.sql" >/dev/null 2>"$TMP/err" \
        || { echo "FAILED (psql)" >&2; tail -20 "$TMP/err" >&2; exit 1; }
      cpu=$(awk -v a="$before" -v b="$(busy)" 'BEGIN { printf "%.1f", b - a }')
      read -r secs kb <"$TMP/t"
      echo "| $round | psql script | $secs | | $cpu | | $(commits "at_$run") |"
      continue
    fi
    bin=$OLD
    [ "$build" = new ] && bin=$NEW
    run="${ID}r${round}${build}"
    RUNS_MADE+=("$run")
    dir="$TMP/$run"
    cp -r "$TMP/template" "$dir"
    psql "$PG/postgres" -qc "CREATE DATABASE at_$run" >/dev/null
    postgres_config "$dir" "a${run}_"
    export DATABASE_URL="$PG/at_$run"
    quiet "$PG"
    before=$(busy)
    if ! /usr/bin/time -f "%e %M %U %S" -o "$TMP/t" "$bin" -C "$dir" apply --auto-approve >/dev/null 2>"$TMP/err"; then
      echo "FAILED ($build)" >&2
      tail -20 "$TMP/err" >&2
      exit 1
    fi
    cpu=$(awk -v a="$before" -v b="$(busy)" 'BEGIN { printf "%.1f", b - a }')
    xacts=$(commits "at_$run")
    "$bin" -C "$dir" plan --detailed-exitcode >/dev/null 2>"$TMP/err" || { echo "the plan after the $build apply is not empty" >&2; exit 1; }
    read -r secs kb user sys <"$TMP/t"
    own=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')
    echo "| $round | $build | $secs | $(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }') | $cpu | $own | $xacts |"
    rm -rf "$dir"
  done
done
echo "$N schema-mode tenants, each apply from nothing; $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
