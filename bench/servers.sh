#!/usr/bin/env bash
# Several Postgres servers: `bash bench/servers.sh [N] [SMALL]` (defaults 3000 300).
#
# Starts two PostgreSQL servers of its own (initdb and pg_ctl on free loopback ports) beside
# the one at $BENCH_PG, and applies N new schema-mode tenants in two regions over three
# servers: eu-1 and eu-2 (its own, eu-west-1, each capped at half the region's tenants and
# 1 %) and us-1 ($BENCH_PG, us-east-1, cap N). Then, counted from outside (each server's roles, the placement catalog, the
# registry's regions): every tenant on a server of its region, none over its cap, and the
# spread between eu-1 and eu-2; the no-change plan's time and refresh queries at N and at
# SMALL tenants (the same count: a constant number per server); and a fourth server added,
# after which the plan is still empty (nobody moves).
# BENCH_BIN=path runs that binary instead of building the release one.
# Needs PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432, trust auth), its
# initdb and pg_ctl, psql and GNU time. Everything it makes is removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-3000}
SMALL=${2:-300}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
ID=$$
export PGOPTIONS="-c client_min_messages=warning"

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
find_pg_bin
psql "$PG/postgres" -qAtc "select 1" >/dev/null || { echo "no PostgreSQL at $PG" >&2; exit 1; }
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-servers.XXXXXX")"
chmod 755 "$TMP"
export TENANT_RECONCILE_MASTER_KEY="bench-master-key-0123456789abcdef0123456789"
cleanup() {
  stop_own_servers
  drop_like "$PG" "sv${ID}\_%" "s${ID}\_%"
  rm -rf "$TMP"
}
trap cleanup EXIT

own_server "$TMP/eu1"; EU1=$PORT
own_server "$TMP/eu2"; EU2=$PORT
own_server "$TMP/eu3"; EU3=$PORT

# repo N NAME: N tenants in two regions (the generated eu-* regions made eu-west-1, the rest
# us-east-1), placed over the three servers; the eu servers' cap in NAME.cap.
repo() {
  local n=$1 dir="$TMP/$2" prefix="s${ID}_${2:0:1}_" eu cap
  python3 bench/generate.py "$n" "$dir" schema >/dev/null
  sed -i -E '/^region: /{s/^region: eu-.*/region: eu-west-1/;t;s/^region: .*/region: us-east-1/}' "$dir"/tenants/*.yaml
  # The eu servers' caps leave room for 1 % more than their region's tenants.
  eu=$(grep -l '^region: eu-west-1$' "$dir"/tenants/*.yaml | wc -l)
  cap=$(( (eu * 101 / 100 + 1) / 2 + 1 ))
  echo "$cap" >"$dir.cap"
  # A database of its own on every server: each server's data catalog is its state's.
  psql "$PG/postgres" -qc "CREATE DATABASE sv${ID}_$2" >/dev/null
  for port in "$EU1" "$EU2" "$EU3"; do
    psql "postgres://postgres@127.0.0.1:$port/postgres" -qc "CREATE DATABASE $2" >/dev/null
  done
  cat >"$dir/tenant-reconcile.hcl" <<HCL
state {
  backend = "postgres"
}
targets {
  control_plane = "postgres"
  data          = "postgres"
}
postgres {
  role_prefix     = "$prefix"
  schema_prefix   = "$prefix"
  database_prefix = "$prefix"
}
postgres_server "eu-1" {
  url    = "postgres://postgres@127.0.0.1:$EU1/$2"
  region = "eu-west-1"
  cap    = $cap
}
postgres_server "eu-2" {
  url    = "postgres://postgres@127.0.0.1:$EU2/$2"
  region = "eu-west-1"
  cap    = $cap
}
postgres_server "us-1" {
  url    = "$PG/sv${ID}_$2"
  region = "us-east-1"
  cap    = $n
}
HCL
  commit_all "$dir" "tenants"
  echo "$dir"
}

# plan_queries DIR: seconds and refresh queries of a no-change plan.
plan_queries() {
  local dir=$1
  DATABASE_URL="$PG/sv${ID}_$(basename "$dir")" TENANT_RECONCILE_LOG=tenant_reconcile=debug NO_COLOR=1 \
    /usr/bin/time -f "%e" -o "$TMP/t" "$BIN" -C "$dir" plan --detailed-exitcode >/dev/null 2>"$TMP/err" \
    || { echo "the plan of $dir is not empty" >&2; tail -5 "$TMP/err" >&2; exit 1; }
  echo "$(cat "$TMP/t") $(refresh_queries "$TMP/err" postgres)"
}

big=$(repo "$N" big)
small=$(repo "$SMALL" small)
for dir in "$big" "$small"; do
  DATABASE_URL="$PG/sv${ID}_$(basename "$dir")" /usr/bin/time -f "%e %M" -o "$TMP/apply_$(basename "$dir")" \
    "$BIN" -C "$dir" apply --auto-approve >/dev/null 2>"$TMP/err" || { echo "apply failed" >&2; tail -5 "$TMP/err" >&2; exit 1; }
done
read -r apply_s apply_kb <"$TMP/apply_big"

# Counted from outside: each server's roles, and where the catalog says each tenant is.
roles_on() { psql "$1" -qAtc "SELECT count(*) FROM pg_roles WHERE rolname LIKE 's${ID}\_b\_%' AND rolname NOT LIKE '%\_\_shared'"; }
on_eu1=$(roles_on "postgres://postgres@127.0.0.1:$EU1/postgres")
on_eu2=$(roles_on "postgres://postgres@127.0.0.1:$EU2/postgres")
on_us1=$(roles_on "$PG/postgres")
misplaced=$(psql "$PG/sv${ID}_big" -qAtc "SELECT count(*) FROM tenant_reconcile.placements p
  JOIN tenant_reconcile.tenants t ON t.slug = p.slug
  WHERE (p.server LIKE 'eu-%') <> (t.region = 'eu-west-1')")
placed=$(psql "$PG/sv${ID}_big" -qAtc "SELECT count(*) FROM tenant_reconcile.placements")
read -r plan_s plan_q < <(plan_queries "$big")
read -r small_s small_q < <(plan_queries "$small")

# A fourth server: the plan stays empty, nobody moves.
cat >>"$big/tenant-reconcile.hcl" <<HCL
postgres_server "eu-3" {
  url    = "postgres://postgres@127.0.0.1:$EU3/big"
  region = "eu-west-1"
  cap    = $N
}
HCL
read -r added_s added_q < <(plan_queries "$big")

echo "| what | tenants | time (s) | refresh queries |"
echo "| --- | ---: | ---: | ---: |"
echo "| fresh apply over 3 servers (peak $(( apply_kb / 1024 )) MB) | $N | $apply_s | |"
echo "| no-change plan | $N | $plan_s | $plan_q |"
echo "| no-change plan | $SMALL | $small_s | $small_q |"
echo "| no-change plan, a 4th server added | $N | $added_s | $added_q |"
echo
echo "placed: $placed of $N; roles on eu-1: $on_eu1, eu-2: $on_eu2 (cap $(cat "$big.cap") each), us-1: $on_us1; outside their region: $misplaced"
echo "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
[ "$misplaced" = 0 ] || { echo "tenants outside their region" >&2; exit 1; }
[ "$plan_q" = "$small_q" ] || { echo "refresh queries grow with the fleet: $small_q at $SMALL, $plan_q at $N" >&2; exit 1; }
