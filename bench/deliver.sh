#!/usr/bin/env bash
# Benchmark the outbox relay on the local control plane: `bash bench/deliver.sh [EVENTS] [BIG]`
# (defaults 10000 100000).
#
# 1. EVENTS synthetic events of 1,000 tenants, delivered to the test webhook receiver
#    (tests/peers/webhook_receiver.py, which verifies every signature): events per second and
#    peak memory of `events deliver`;
# 2. the same to RabbitMQ (a durable queue of its own bound to an exchange of its own);
# 3. `events deliver` with nothing due on an outbox of BIG delivered events: its time, and the
#    query plans of its reads (they must search an index, not scan).
# Needs python3 with the standardwebhooks and pika libraries (the test virtualenv has them:
# `TENANT_RECONCILE_TEST_PYTHON`, else $HOME/.cache/tenant-reconcile/venv/bin/python) and GNU time.
# BENCH_BIN=path runs that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EVENTS=${1:-10000}
BIG=${2:-100000}
PY=${TENANT_RECONCILE_TEST_PYTHON:-$HOME/.cache/tenant-reconcile/venv/bin/python}
"$PY" -c "import standardwebhooks" 2>/dev/null || { echo "$PY lacks standardwebhooks: run ./scripts/test once, or pip install standardwebhooks" >&2; exit 1; }
# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-deliverbench.XXXXXX")"
RECEIVER=""
trap '[ -n "$RECEIVER" ] && kill "$RECEIVER" 2>/dev/null; rm -rf "$TMP"' EXIT
SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
export BILLING_WEBHOOK_SECRET="$SECRET"

# repo DIR: the example with one tenant and a webhook to the receiver, applied.
repo() {
  local dir=$1 port=$2
  mkdir -p "$dir"
  git archive HEAD plans templates migrations | tar -x -C "$dir"
  mkdir -p "$dir/tenants"
  git show HEAD:tenants/acme.yaml >"$dir/tenants/acme.yaml"
  cat >"$dir/tenant-reconcile.hcl" <<HCL
webhook "billing" {
  url        = "http://127.0.0.1:$port/hooks"
  secret_env = "BILLING_WEBHOOK_SECRET"
}
events {
  parallelism = 32
}
HCL
  "$BIN" -C "$dir" apply --auto-approve >/dev/null 2>&1
}

# fill DB N STATUS: N synthetic events of 1,000 tenants in the outbox; with STATUS delivered,
# their deliveries too, as a relay long done with them leaves them.
fill() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sqlite3, sys, uuid
db, n, status = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = sqlite3.connect(db)
rows = []
for i in range(n):
    tenant = f"bench-tenant-{i % 1000:04d}"
    eid = str(uuid.uuid4())
    payload = json.dumps({"event_id": eid, "type": "TenantUpdated", "tenant_id": tenant, "slug": tenant, "detail": {"n": i}})
    rows.append((eid, tenant, "TenantUpdated", payload, "2026-01-01T00:00:00Z"))
c.executemany("INSERT INTO outbox (event_id, tenant_id, type, payload, created_at) VALUES (?, ?, ?, ?, ?)", rows)
if status == "delivered":
    c.execute("INSERT OR IGNORE INTO subscribers (name) VALUES ('billing')")
    c.execute("""INSERT OR IGNORE INTO deliveries (event_id, subscriber, tenant_id, outbox_id, status, attempts, next_at, delivered_at)
                 SELECT event_id, 'billing', tenant_id, id, 'delivered', 1, created_at, '2099-01-01T00:00:00Z' FROM outbox""")
    c.execute("UPDATE subscribers SET outbox_id = (SELECT max(id) FROM outbox)")
c.commit()
PY
}

"$PY" tests/peers/webhook_receiver.py "$SECRET" "$TMP/log" "$TMP/script" >"$TMP/port" &
RECEIVER=$!
for _ in $(seq 50); do [ -s "$TMP/port" ] && break; sleep 0.1; done
PORT=$(head -1 "$TMP/port")

echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB"
repo "$TMP/a" "$PORT"
"$BIN" -C "$TMP/a" events deliver >/dev/null
fill "$TMP/a/.tenant-reconcile/control.sqlite" "$EVENTS" pending
/usr/bin/time -f "%e %M %U %S" -o "$TMP/t" "$BIN" -C "$TMP/a" events deliver >"$TMP/out"
read -r secs kb user sys <"$TMP/t"
sent=$(wc -l <"$TMP/log")
printf 'deliver %d events of 1,000 tenants: %s s, %.0f events/s, %.1f MB peak, its own CPU %s s user + %s s system; %s\n' \
  "$EVENTS" "$secs" "$(echo "$EVENTS/$secs" | bc -l)" "$(echo "$kb/1024" | bc -l)" "$user" "$sys" "$(cat "$TMP/out")"
echo "  the receiver saw $sent requests, $(grep -c '"verified": true' "$TMP/log") of them verified"

# The same events to RabbitMQ (guest/guest on 127.0.0.1:5672, or $BENCH_AMQP): an exchange of
# this run's own with a durable queue bound, removed at the end.
AMQP=${BENCH_AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}
EXCHANGE="tr-bench-$$"
mkdir -p "$TMP/c"
git archive HEAD plans templates migrations | tar -x -C "$TMP/c"
mkdir -p "$TMP/c/tenants" && git show HEAD:tenants/acme.yaml >"$TMP/c/tenants/acme.yaml"
cat >"$TMP/c/tenant-reconcile.hcl" <<HCL
bus "events" {
  amqp_url_env = "EVENTS_AMQP_URL"
  exchange     = "$EXCHANGE"
}
events {
  parallelism = 32
}
HCL
export EVENTS_AMQP_URL="$AMQP"
"$BIN" -C "$TMP/c" apply --auto-approve >/dev/null 2>&1
"$PY" - "$AMQP" "$EXCHANGE" <<'PY'
import pika, sys
ch = pika.BlockingConnection(pika.URLParameters(sys.argv[1])).channel()
ch.exchange_declare(sys.argv[2], exchange_type="topic", durable=True)
ch.queue_declare(sys.argv[2], durable=True)
ch.queue_bind(sys.argv[2], sys.argv[2], routing_key="#")
PY
"$BIN" -C "$TMP/c" events deliver >/dev/null
fill "$TMP/c/.tenant-reconcile/control.sqlite" "$EVENTS" pending
/usr/bin/time -f "%e %M %U %S" -o "$TMP/t" "$BIN" -C "$TMP/c" events deliver >"$TMP/out"
read -r secs kb user sys <"$TMP/t"
queued=$("$PY" - "$AMQP" "$EXCHANGE" <<'PY'
import pika, sys
ch = pika.BlockingConnection(pika.URLParameters(sys.argv[1])).channel()
n = ch.queue_declare(sys.argv[2], durable=True, passive=True).method.message_count
ch.queue_delete(sys.argv[2]); ch.exchange_delete(sys.argv[2])
print(n)
PY
)
printf 'publish %d events to RabbitMQ, each confirmed: %s s, %.0f events/s, %.1f MB peak, its own CPU %s s user + %s s system; %s messages in the bound queue\n' \
  "$EVENTS" "$secs" "$(echo "$EVENTS/$secs" | bc -l)" "$(echo "$kb/1024" | bc -l)" "$user" "$sys" "$queued"

repo "$TMP/b" "$PORT"
"$BIN" -C "$TMP/b" events deliver >/dev/null
fill "$TMP/b/.tenant-reconcile/control.sqlite" "$BIG" delivered
best=""
for _ in 1 2 3; do
  /usr/bin/time -f "%e %M" -o "$TMP/t" "$BIN" -C "$TMP/b" events deliver >"$TMP/out"
  read -r secs kb <"$TMP/t"
  best=$(printf '%s\n%s\n' "$best" "$secs" | grep . | sort -n | head -1)
done
printf 'deliver with nothing due, %d delivered events in the outbox: %s s (best of 3), %.1f MB peak\n' "$BIG" "$best" "$(echo "$kb/1024" | bc -l)"
echo "  query plans of its reads:"
python3 - "$TMP/b/.tenant-reconcile/control.sqlite" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for label, sql in [
    ("new events", "SELECT o.event_id FROM subscribers s JOIN outbox o ON o.id > s.outbox_id WHERE s.name = 'billing'"),
    ("due", """SELECT d.event_id FROM deliveries d JOIN outbox o ON o.id = d.outbox_id
               WHERE d.status = 'pending' AND d.next_at <= '2030-01-01T00:00:00Z'
               AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.subscriber = d.subscriber AND e.tenant_id = d.tenant_id
                               AND e.status = 'pending' AND e.outbox_id < d.outbox_id)"""),
]:
    plan = " / ".join(r[3] for r in c.execute("EXPLAIN QUERY PLAN " + sql))
    print(f"    {label}: {plan}")
PY
