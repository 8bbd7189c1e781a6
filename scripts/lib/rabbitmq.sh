# Sourced by scripts/test and bench/rabbitmq.sh: `rabbitmq_management` makes sure RabbitMQ's
# management API answers (enabling its plugin, which a fresh machine has off) and exports
# where it is for the broker target's tests, as TENANT_RECONCILE_TEST_RABBITMQ_API.

RABBITMQ_API="${TENANT_RECONCILE_TEST_RABBITMQ_API:-http://127.0.0.1:15672}"

rabbitmq_answers() {
  curl -fsS -o /dev/null -u guest:guest "$RABBITMQ_API/api/overview" 2>/dev/null
}

rabbitmq_management() {
  if ! rabbitmq_answers; then
    echo "==> enabling RabbitMQ's management plugin" >&2
    if ! rabbitmq-plugins enable rabbitmq_management >&2; then
      echo "error: could not enable RabbitMQ's management plugin; the broker tests need its API at $RABBITMQ_API" >&2
      echo "  run: rabbitmq-plugins enable rabbitmq_management   (RabbitMQ itself on 127.0.0.1:5672, guest/guest)" >&2
      exit 1
    fi
    for _ in $(seq 1 150); do
      rabbitmq_answers && break
      sleep 0.2
    done
    if ! rabbitmq_answers; then
      echo "error: RabbitMQ's management API did not answer at $RABBITMQ_API within 30 s" >&2
      echo "  check: rabbitmq-plugins list; rabbitmqctl status" >&2
      exit 1
    fi
  fi
  export TENANT_RECONCILE_TEST_RABBITMQ_API="$RABBITMQ_API"
  echo "==> RabbitMQ management API on $RABBITMQ_API" >&2
}
