#!/usr/bin/env bash
# A tenant's move between Postgres servers, and the write pause its clients see:
#   bash bench/move.sh [ROWS] [ISOLATION] [HOW]
#   (defaults 1000000 schema replicate; ISOLATION shared, HOW copy)
#
# HOW replicate gives the tenant's tables primary keys (migrations of the run's own), so a
# schema or a database of its own moves by logical replication; copy keeps the example's
# tables, which have none, so it moves by a copy under a fence (as a shared tenant always does).
# Starts two PostgreSQL servers of its own (eu-1, eu-2), provisions one tenant (ISOLATION) on
# eu-1 and gives it ROWS rows, then pins it to eu-2 and applies while a client writes a row
# in a loop, each write as the tenant, to whichever server takes its login (a write refused
# is tried again until it is taken). Prints the apply's time, the pause it logged (fence to
# the login opened on eu-2), the client's longest gap between two accepted writes, and the
# writes counted on eu-2 afterwards: each accepted write once, none lost.
# BENCH_BIN=path runs that binary instead of building the release one.
# Needs PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432, trust auth) for
# the control plane and state, the server's initdb and pg_ctl, psql and GNU time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${1:-1000000}
ISOLATION=${2:-schema}
HOW=${3:-replicate}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
ID=$$
export PGOPTIONS="-c client_min_messages=warning"

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
find_pg_bin
psql "$PG/postgres" -qAtc "select 1" >/dev/null || { echo "no PostgreSQL at $PG" >&2; exit 1; }
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-move.XXXXXX")"
chmod 755 "$TMP"
export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"
WRITER=""
cleanup() {
  [ -z "$WRITER" ] || kill "$WRITER" 2>/dev/null || true
  stop_own_servers
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS mv${ID} WITH (FORCE)" >/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

own_server "$TMP/eu1"; EU1=$PORT
own_server "$TMP/eu2"; EU2=$PORT
psql "$PG/postgres" -qc "CREATE DATABASE mv${ID}" >/dev/null
dir="$TMP/repo"
python3 bench/generate.py 1 "$dir" schema >/dev/null
rm "$dir"/tenants/*.yaml
if [ "$HOW" = replicate ]; then
  printf 'CREATE TABLE IF NOT EXISTS projects (\n  id BIGSERIAL PRIMARY KEY,\n  name TEXT NOT NULL,\n  description TEXT\n);\n' \
    >"$dir/migrations/0001_create_projects.sql"
  printf 'CREATE TABLE IF NOT EXISTS settings (\n  id BIGSERIAL PRIMARY KEY,\n  key TEXT NOT NULL,\n  value TEXT NOT NULL\n);\n' \
    >"$dir/migrations/0002_create_settings.sql"
fi
pin() {
  printf 'slug: mover\nname: Mover\nplan: growth\nowner:\n  email: o@mover.example\nregion: eu-west-1\nisolation: %s\nserver: %s\n' "$ISOLATION" "$1" \
    >"$dir/tenants/mover.yaml"
}
pin eu-1
cat >"$dir/tenant-reconcile.hcl" <<HCL
state {
  backend = "postgres"
}
targets {
  control_plane = "postgres"
  data          = "postgres"
}
postgres {
  role_prefix     = "m${ID}_"
  schema_prefix   = "m${ID}_"
  database_prefix = "m${ID}_"
}
postgres_server "eu-1" {
  url    = "postgres://postgres@127.0.0.1:$EU1/postgres"
  region = "eu-west-1"
  cap    = 10
}
postgres_server "eu-2" {
  url    = "postgres://postgres@127.0.0.1:$EU2/postgres"
  region = "eu-west-1"
  cap    = 10
}
HCL
commit_all "$dir" "one tenant"
export DATABASE_URL="$PG/mv${ID}"
"$BIN" -C "$dir" apply --auto-approve >/dev/null 2>"$TMP/err" || { tail -5 "$TMP/err" >&2; exit 1; }
ROLE="m${ID}_mover"
# Its table: in its schema, or the shared one, where its rows carry its id.
case "$ISOLATION" in
  shared) TABLE=tenants_shared.projects; ID_COLUMN="tenant_id, "
    ID_VALUE="(SELECT tenant_id FROM tenant_reconcile.roles WHERE name = '$ROLE'), " ;;
  *) TABLE="$ROLE.projects"; ID_COLUMN=""; ID_VALUE="" ;;
esac
psql "postgres://postgres@127.0.0.1:$EU1/postgres" -qc \
  "INSERT INTO $TABLE (${ID_COLUMN}name) SELECT ${ID_VALUE}'row ' || g FROM generate_series(1, $ROWS) g" >/dev/null

# The client: write i, as the tenant, wherever its login is taken; i moves on only once a
# write of it was accepted. Each accepted write's time goes to its log.
writer() {
  local i=1 port
  while [ ! -e "$TMP/stop" ]; do
    for port in "$EU1" "$EU2"; do
      if psql "postgres://$ROLE@127.0.0.1:$port/postgres" -qAtc \
        "INSERT INTO $TABLE (name) VALUES ('write $i')" >/dev/null 2>&1; then
        echo "$i $(date +%s.%N)" >>"$TMP/writes"
        i=$((i + 1))
        continue 2
      fi
    done
    sleep 0.02
  done
}
writer &
WRITER=$!
sleep 2
pin eu-2
TENANT_RECONCILE_LOG=tenant_reconcile=info NO_COLOR=1 /usr/bin/time -f "%e %M" -o "$TMP/t" \
  "$BIN" -C "$dir" apply --auto-approve >/dev/null 2>"$TMP/err" || { tail -5 "$TMP/err" >&2; exit 1; }
sleep 2
touch "$TMP/stop"
wait "$WRITER"
WRITER=""
read -r secs kb <"$TMP/t"
paused=$(logged_count "$TMP/err" paused_ms)
gap=$(awk 'NR > 1 { g = $2 - t; if (g > max) max = g } { t = $2 } END { printf "%.2f", max }' "$TMP/writes")
accepted=$(wc -l <"$TMP/writes")
read -r on_new distinct < <(psql "postgres://postgres@127.0.0.1:$EU2/postgres" -qAt -F ' ' -c \
  "SELECT count(*), count(DISTINCT name) FROM $TABLE WHERE name LIKE 'write %'")
"$BIN" -C "$dir" plan --detailed-exitcode >/dev/null 2>&1 || { echo "the plan after the move is not empty" >&2; exit 1; }

how=copy
grep -q "replicated" "$TMP/err" && how=replication
echo "| isolation | rows | moved by | apply (s) | peak memory (MB) | writes paused (logged, s) | longest gap a client saw (s) | writes accepted | on eu-2 | distinct |"
echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
echo "| $ISOLATION | $ROWS | $how | $secs | $((kb / 1024)) | $(awk -v p="$paused" 'BEGIN { printf "%.2f", p / 1000 }') | $gap | $accepted | $on_new | $distinct |"
echo "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
[ "$on_new" = "$accepted" ] && [ "$distinct" = "$accepted" ] || { echo "writes were lost or doubled" >&2; exit 1; }
