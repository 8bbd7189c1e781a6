#!/usr/bin/env bash
# Benchmark the RabbitMQ broker target: `bash bench/rabbitmq.sh [N]` (default 1000).
#
# 1. apply N new tenants, each with a vhost, user, permissions and limits on RabbitMQ (the
#    rest on the local target), smoke tests included (an AMQP login per tenant), and
# 2. the no-change plan with refresh at N tenants (median of 3),
# each with wall time, peak memory and the number of management API requests sent. The
# broker is the one at $RABBITMQ_API_URL (default http://127.0.0.1:15672, guest/guest; its
# management plugin is enabled if it is off). Everything it creates is named b<pid>_*, and
# removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-1000}
REPEATS=3

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
build_release
# shellcheck source=../scripts/lib/rabbitmq.sh
source scripts/lib/rabbitmq.sh
rabbitmq_management

export RABBITMQ_API_URL="${RABBITMQ_API_URL:-$TENANT_RECONCILE_TEST_RABBITMQ_API}"
export RABBITMQ_API_USER="${RABBITMQ_API_USER:-guest}" RABBITMQ_API_PASSWORD="${RABBITMQ_API_PASSWORD:-guest}"
export TENANT_RECONCILE_LOG=tenant_reconcile=debug NO_COLOR=1
PREFIX="b$$_"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-mqbench.XXXXXX")"
# Removes this run's vhosts and users, whatever happened.
cleanup() {
  local kind
  for kind in vhosts users; do
    curl -fsS -u "$RABBITMQ_API_USER:$RABBITMQ_API_PASSWORD" "$RABBITMQ_API_URL/api/$kind?columns=name" |
      python3 -c "import json, sys; [print(x['name']) for x in json.load(sys.stdin) if x['name'].startswith('$PREFIX')]" |
      while read -r name; do
        curl -fsS -o /dev/null -u "$RABBITMQ_API_USER:$RABBITMQ_API_PASSWORD" -X DELETE "$RABBITMQ_API_URL/api/$kind/$name" || true
      done
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

DIR="$TMP/repo"
python3 bench/generate.py "$N" "$DIR" >/dev/null
cat >"$DIR/tenant-reconcile.hcl" <<HCL
targets {
  broker = "rabbitmq"
}
rabbitmq {
  vhost_prefix = "$PREFIX"
  user_prefix  = "$PREFIX"
}
HCL
# Every plan gives its tenants broker limits, as a real one would.
for plan in "$DIR"/plans/*.hcl; do
  sed -i 's/^quotas = {$/quotas = {\n  broker_connections = 20\n  broker_queues = 50/' "$plan"
done

# run ARGS...: one timed run; sets SECS, KB, CPU (user + system seconds of tenant-reconcile
# itself, to tell its own cost from the broker's) and LOG (its stderr, with the debug lines).
run() {
  LOG="$TMP/log"
  if ! /usr/bin/time -f "%e %M %U %S" -o "$TMP/t" "$BIN" -C "$DIR" "$@" >/dev/null 2>"$LOG"; then
    echo "FAILED: tenant-reconcile $*" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  read -r SECS KB USR SYS <"$TMP/t"
  CPU=$(python3 -c "print(round($USR + $SYS, 2))")
}
mb() { echo "$(( $1 / 1024 ))"; }

run apply --auto-approve
APPLY_S=$SECS APPLY_MB=$(mb "$KB") APPLY_CPU=$CPU
APPLY_CALLS=$(logged_count "$LOG" broker_requests)
echo "apply: ${SECS} s, ${CPU} s CPU, $(mb "$KB") MB, ${APPLY_CALLS} requests" >&2

times="" mems="" cpus=""
for _ in $(seq "$REPEATS"); do
  run plan --detailed-exitcode
  times+="$SECS"$'\n' mems+="$KB"$'\n' cpus+="$CPU"$'\n'
done
PLAN_CPU=$(middle "$cpus")
PLAN_S=$(middle "$times")
PLAN_MB=$(mb "$(middle "$mems")")
PLAN_CALLS=$(refresh_queries "$LOG" rabbitmq)

echo
echo "| $N tenants, vhosts on RabbitMQ | wall time | CPU of tenant-reconcile | peak memory | management API requests |"
echo "|---|---|---|---|---|"
echo "| apply (every vhost new, smoke tests included) | ${APPLY_S} s | ${APPLY_CPU} s | ${APPLY_MB} MB | ${APPLY_CALLS} |"
echo "| no-change plan with refresh (median of $REPEATS) | ${PLAN_S} s | ${PLAN_CPU} s | ${PLAN_MB} MB | ${PLAN_CALLS} |"
