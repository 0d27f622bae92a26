"""A webhook receiver for tests of the sandbox itself: it keeps every signed body the sandbox posts.

Kloyst's own tests point the sandbox at Kloyst's ``/webhook/whatsapp``; the sandbox's tests
(and anyone checking what the sandbox sends, byte for byte) point it here instead.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    """Serves on 127.0.0.1 (a free port); ``url`` takes POSTs, answers 200 and keeps ``(headers, raw body)``."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict, bytes]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    receiver.deliveries.append((dict(self.headers), raw))
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/webhook"
        threading.Thread(target=self.httpd.serve_forever, name="webhook-receiver", daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict, bytes]]:
        """The deliveries once there are at least ``count`` (AssertionError after ``timeout`` seconds)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(f"{len(self.deliveries)} webhooks arrived, expected {count}")
            return list(self.deliveries)

    def values(self) -> list[dict]:
        """Every ``entry[].changes[].value`` received, in arrival order."""
        with self.arrived:
            raws = [raw for _, raw in self.deliveries]
        return [change["value"] for raw in raws for entry in json.loads(raw)["entry"] for change in entry["changes"]]

    def statuses(self) -> list[dict]:
        return [status for value in self.values() for status in value.get("statuses", [])]

    def messages(self) -> list[dict]:
        return [message for value in self.values() for message in value.get("messages", [])]

    def signed(self, app_secret: str) -> bool:
        """True when every delivery carries a valid ``X-Hub-Signature-256`` for ``app_secret``."""
        with self.arrived:
            deliveries = list(self.deliveries)
        return all(hmac.compare_digest(headers.get("X-Hub-Signature-256", ""),
                                       "sha256=" + hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest())
                   for headers, raw in deliveries)
