"""A webhook receiver for the delivery tests: it verifies every request's signature with
the Standard Webhooks library and answers as its script says.

    python webhook_receiver.py SECRET LOG SCRIPT

It prints its port on the first line of stdout. LOG gets one JSON line per request:
{"id", "type", "tenant_id", "verified", "status"}. SCRIPT is a JSON file read at every
request: {"<event type or *>": [status, ...]} answers the n-th request of that type with the
n-th status (the last one after that), a tenant's slug as key before its type; a status of 0 means hang (never answer), and
"429:30" answers 429 with Retry-After: 30, and "200@0.5" answers 200 after half a second.
"""

import http.server
import json
import sys
import threading
import time

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET, LOG, SCRIPT = sys.argv[1], sys.argv[2], sys.argv[3]
seen = {}
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            Webhook(SECRET).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        event = json.loads(body) if body else {}
        kind = event.get("type", "?")
        with lock:
            try:
                with open(SCRIPT) as f:
                    script = json.load(f)
            except FileNotFoundError:
                script = {}
            slug = event.get("slug", "?")
            key = slug if slug in script else kind if kind in script else "*"
            answers = script.get(key) or [200]
            n = seen.get(key, 0)
            seen[key] = n + 1
            answer = str(answers[min(n, len(answers) - 1)])
            answer, _, delay = answer.partition("@")
            status, _, retry_after = answer.partition(":")
            status = int(status) if verified else 401
            with open(LOG, "a") as f:
                f.write(json.dumps({
                    "id": headers.get("webhook-id"),
                    "type": kind,
                    "tenant_id": event.get("tenant_id"),
                    "slug": event.get("slug"),
                    "verified": verified,
                    "status": status,
                }) + "\n")
        if status == 0:
            time.sleep(3600)
            return
        if delay:
            time.sleep(float(delay))
        self.send_response(status)
        if retry_after:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
