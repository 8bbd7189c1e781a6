"""A tenant's application on RabbitMQ, with pika, for the broker target's tests.

    python amqp_tenant.py roundtrip URL   declares a queue, publishes, reads it back: prints
                                          "ok", or "refused: …" and exits 3 when the broker
                                          refuses the login or the vhost
    python amqp_tenant.py declare URL Q   declares a durable queue Q and publishes one message
    python amqp_tenant.py hold URL        connects, prints "connected", then waits until the
                                          broker closes the connection (prints "closed") or
                                          30 seconds pass (prints "still open", exits 4)
"""

import sys
import time

import pika
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker, ConnectionClosedByBroker

MODE, URL = sys.argv[1], sys.argv[2]


def connect():
    params = pika.URLParameters(URL)
    params.connection_attempts = 1
    params.socket_timeout = 5
    try:
        return pika.BlockingConnection(params)
    except (AMQPConnectionError, ConnectionClosedByBroker) as e:
        print(f"refused: {e!r}", flush=True)
        sys.exit(3)


if MODE == "roundtrip":
    conn = connect()
    try:
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", queue, b"hello")
        for _ in range(50):
            method, _props, body = ch.basic_get(queue, auto_ack=True)
            if method is not None:
                break
            time.sleep(0.1)
        assert body == b"hello", body
    except ChannelClosedByBroker as e:
        print(f"refused: {e!r}", flush=True)
        sys.exit(3)
    conn.close()
    print("ok", flush=True)
elif MODE == "declare":
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(sys.argv[3], durable=True)
    ch.basic_publish("", sys.argv[3], b"kept")
    conn.close()
    print("ok", flush=True)
elif MODE == "hold":
    conn = connect()
    print("connected", flush=True)
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            conn.process_data_events(time_limit=0.2)
    except Exception as e:  # the broker closing the connection, in whichever form pika says it
        print(f"closed: {type(e).__name__}", flush=True)
        sys.exit(0)
    print("still open", flush=True)
    sys.exit(4)
else:
    sys.exit(f"unknown mode {MODE}")
