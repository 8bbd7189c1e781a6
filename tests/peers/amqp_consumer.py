"""An AMQP consumer for the delivery tests, with pika: it binds a queue of its own to the
exchange (declared as the relay declares it), prints "ready", then prints each message as a
JSON line {"message_id", "routing_key", "delivery_mode", "event_id"} until it has N or ten
seconds pass with none, and removes its queue and the exchange.

    python amqp_consumer.py URL EXCHANGE N
"""

import json
import sys

import pika

URL, EXCHANGE, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = pika.BlockingConnection(pika.URLParameters(URL))
ch = conn.channel()
ch.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
queue = ch.queue_declare("", exclusive=True).method.queue
ch.queue_bind(queue, EXCHANGE, routing_key="#")
print("ready", flush=True)
got = 0
for method, props, body in ch.consume(queue, inactivity_timeout=10):
    if method is None:
        break
    event = json.loads(body)
    print(json.dumps({
        "message_id": props.message_id,
        "routing_key": method.routing_key,
        "delivery_mode": props.delivery_mode,
        "event_id": event.get("event_id"),
        "slug": event.get("slug"),
    }), flush=True)
    ch.basic_ack(method.delivery_tag)
    got += 1
    if got >= N:
        break
ch.cancel()
ch.exchange_delete(EXCHANGE)
conn.close()
