# Sourced by scripts/test and bench/s3.sh: `start_moto` installs moto's S3 server into a
# virtualenv (once), starts it on a free loopback port, and exports its address as
# TENANT_RECONCILE_TEST_S3 (it serves Route53 too). The server is stopped when the calling script exits.

# 5.2 answers GetBucketVersioning with a root element AWS never sends, which the Rust SDK
# (rightly) refuses; 5.1.18 answers as AWS does.
MOTO_VERSION="5.1.18"
MOTO_VENV="${TENANT_RECONCILE_VENV:-$HOME/.cache/tenant-reconcile/venv}"
MOTO_LAUNCHER="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tests/peers/moto_server.py"
# The webhook receiver of the delivery tests verifies signatures with the specification's
# own library.
STANDARDWEBHOOKS_VERSION="1.1.0"
# And the AMQP consumer reads RabbitMQ with pika.
PIKA_VERSION="1.4.4"
# The tenant file schema is checked by an independent validator.
CHECK_JSONSCHEMA_VERSION="0.33.3"

# Installs the Python test peers besides moto into the same virtualenv (once), and exports
# its interpreter as TENANT_RECONCILE_TEST_PYTHON.
python_peers() {
  if ! "$MOTO_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('standardwebhooks') != '$STANDARDWEBHOOKS_VERSION' or m.version('pika') != '$PIKA_VERSION' or m.version('check-jsonschema') != '$CHECK_JSONSCHEMA_VERSION')" 2>/dev/null; then
    echo "==> installing standardwebhooks==$STANDARDWEBHOOKS_VERSION, pika==$PIKA_VERSION and check-jsonschema==$CHECK_JSONSCHEMA_VERSION into $MOTO_VENV" >&2
    "$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check "standardwebhooks==$STANDARDWEBHOOKS_VERSION" "pika==$PIKA_VERSION" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
  fi
  export TENANT_RECONCILE_TEST_PYTHON="$MOTO_VENV/bin/python"
}

start_moto() {
  if ! "$MOTO_VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    echo "==> installing moto[server]==$MOTO_VERSION into $MOTO_VENV" >&2
    python3 -m venv "$MOTO_VENV"
    "$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
  local port log
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  log="$(mktemp -t moto.XXXXXX.log)"
  # moto's server with its Route53 answers as AWS writes them (see the launcher).
  "$MOTO_VENV/bin/python" "$MOTO_LAUNCHER" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  MOTO_PID=$!
  # shellcheck disable=SC2064 # expand now: the trap must stop this server
  trap "kill $MOTO_PID 2>/dev/null || true; rm -f '$log'" EXIT
  for _ in $(seq 1 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
      export TENANT_RECONCILE_TEST_S3="http://127.0.0.1:$port"
      echo "==> moto S3 server on $TENANT_RECONCILE_TEST_S3" >&2
      return 0
    fi
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then
      echo "error: moto's S3 server did not start:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "error: moto's S3 server did not answer on port $port within 20 s" >&2
  exit 1
}
