#!/usr/bin/env bash
# Benchmark the S3 target: `bash bench/s3.sh [N]` (default 1000).
#
# 1. apply N new tenants whose buckets go to S3 (the rest on the local target), and
# 2. the no-change plan with refresh at N tenants (median of 3),
# each with wall time, peak memory and the number of S3 requests it sent. The store is moto's
# S3 server on loopback (installed into a virtualenv by scripts/lib/moto.sh), or the server
# at $BENCH_S3 if set. Everything it creates is named b<pid>-*.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-1000}
REPEATS=3

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
build_release

if [ -n "${BENCH_S3:-}" ]; then
  export TENANT_RECONCILE_TEST_S3="$BENCH_S3"
else
  # shellcheck source=../scripts/lib/moto.sh
  source scripts/lib/moto.sh
  start_moto
fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-s3bench.XXXXXX")"
trap 'rm -rf "$TMP"; [ -n "${MOTO_PID:-}" ] && kill "$MOTO_PID" 2>/dev/null || true' EXIT

export AWS_ENDPOINT_URL="$TENANT_RECONCILE_TEST_S3" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export TENANT_RECONCILE_LOG=tenant_reconcile=debug NO_COLOR=1

DIR="$TMP/repo"
python3 bench/generate.py "$N" "$DIR" >/dev/null
cat >"$DIR/tenant-reconcile.hcl" <<HCL
targets {
  buckets = "s3"
}
s3 {
  force_path_style = true
  bucket_prefix    = "b$$"
}
HCL

# run ARGS...: one timed run; sets SECS, KB, CPU (user + system seconds of tenant-reconcile
# itself, to tell its own cost from the store's) and LOG (its stderr, with the debug lines).
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
APPLY_CALLS=$(logged_count "$LOG" s3_requests)

times="" mems="" cpus=""
for _ in $(seq "$REPEATS"); do
  run plan --detailed-exitcode
  times+="$SECS"$'\n' mems+="$KB"$'\n' cpus+="$CPU"$'\n'
done
PLAN_CPU=$(middle "$cpus")
PLAN_S=$(middle "$times")
PLAN_MB=$(mb "$(middle "$mems")")
PLAN_CALLS=$(refresh_queries "$LOG" s3)

echo
echo "| $N tenants, buckets on S3 | wall time | CPU of tenant-reconcile | peak memory | S3 requests |"
echo "|---|---|---|---|---|"
echo "| apply (every bucket new) | ${APPLY_S} s | ${APPLY_CPU} s | ${APPLY_MB} MB | ${APPLY_CALLS} |"
echo "| no-change plan with refresh (median of $REPEATS) | ${PLAN_S} s | ${PLAN_CPU} s | ${PLAN_MB} MB | ${PLAN_CALLS} |"
