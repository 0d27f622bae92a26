"""A real HTTP receiver for the tests, as a vendor would run one: it checks every delivery's signature.

``Receiver`` listens on 127.0.0.1 (HTTP/1.1 keep-alive, a thread per connection). Each path is
one endpoint: ``receiver.url("/a")`` gives its URL, ``receiver.secret("/a", secret)`` the secret
it verifies with (``verify_signature`` from the plugin's api). What it does per path is
``receiver.behave("/a", status=…, delay=…, location=…)``; ``stop()`` and ``start()`` take it off
the network and back on the same port (a receiver that is down refuses connections).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import func, select

from kloyst import testing
from kloyst.api import events, Outbox
from kloyst.db import tenancy
from kloyst.outbox.relay import relay_once
from kloyst_plugins.vendor_webhooks.addresses import AddressPolicy
from kloyst_plugins.vendor_webhooks.api import SIGNATURE_HEADER, SignatureError, verify_signature
from kloyst_plugins.vendor_webhooks.deliverer import DelivererSettings
from kloyst_plugins.vendor_webhooks.models import WebhookDelivery
from kloyst_plugins.vendor_webhooks.services import EndpointService

# Seconds, not hours: the same rules on a clock a test can wait for.
# The deliverer's rules on a clock a test can wait for: seconds, not hours.
FAST = DelivererSettings(concurrency=16, per_endpoint=4, connect_timeout=0.5, read_timeout=0.5, lease_seconds=30,
                         retry_base=0.2, retry_cap=0.5, horizon=3600, circuit_failures=3, circuit_pause_cap=0.5,
                         idle_poll_seconds=0.05, recovery_seconds=0.5,
                         policy=AddressPolicy(allow_http=True, allow_loopback=True))
PLUGINS = ("contacts", "waba", "templates", "wallet", "pricing", "messages", "vendor_webhooks")


@dataclass
class Behaviour:
    status: int = 200
    delay: float = 0.0
    location: str | None = None


@dataclass
class Received:
    path: str
    event_id: str
    delivery_id: str
    body: dict
    at: float


@dataclass
class Receiver:
    port: int = 0
    secrets: dict[str, str] = field(default_factory=dict)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # why a request's signature was refused
    hits: dict[str, int] = field(default_factory=dict)  # requests per path, answered or not
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                path = self.path
                with receiver.lock:
                    receiver.hits[path] = receiver.hits.get(path, 0) + 1
                    behaviour = receiver.behaviours.get(path, Behaviour())
                    secret = receiver.secrets.get(path)
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                status = behaviour.status
                try:
                    verify_signature(secret or "", self.headers.get(SIGNATURE_HEADER), body)
                except SignatureError as exc:
                    with receiver.lock:
                        receiver.rejected.append(str(exc))
                    status = 400
                else:
                    if 200 <= status < 300:
                        with receiver.lock:
                            receiver.received.append(Received(path, self.headers["Kloyst-Event-Id"],
                                                              self.headers["Kloyst-Delivery-Id"], json.loads(body),
                                                              time.monotonic()))
                self.send_response(status)
                if behaviour.location:
                    self.send_header("Location", behaviour.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def secret(self, path: str, secret: str) -> None:
        with self.lock:
            self.secrets[path] = secret

    def behave(self, path: str, **kwargs) -> None:
        with self.lock:
            self.behaviours[path] = Behaviour(**kwargs)

    def events_at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


def vendor(db, registry, name: str):
    """A vendor (committed) with the plugins the webhooks need on."""
    account = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor(name)
    for plugin in PLUGINS:
        testing.enable_plugin(db, account.vendor_id, plugin)
    db.commit()
    return account


def endpoint(db, registry, vendor_id: uuid.UUID, url: str, types=("*",), receiver: Receiver | None = None,
             path: str | None = None):
    """An endpoint registered as the API registers it (checked against the registry's settings); committed."""
    row, secret = EndpointService(db, vendor_id=vendor_id, cipher=registry["kloyst.cipher"],
                                  settings=registry.settings).create(url=url, event_types=list(types), description="",
                                                                     enabled=True)
    db.commit()
    if receiver is not None and path is not None:
        receiver.secret(path, secret)
    return row, secret


def emit(db, registry, vendor_id: uuid.UUID, count: int, *, source: str = "api") -> None:
    """``count`` ContactCreated events of the vendor, recorded in the outbox and relayed (handlers run now)."""
    events.record_events(Outbox(db), vendor_id, [events.ContactCreated(contact_id=uuid.uuid4(), source=source)
                                                 for _ in range(count)])
    db.commit()
    while relay_once(registry):
        pass


def statuses(db, endpoint_id) -> dict[str, int]:
    with tenancy.unscoped(db):
        rows = db.execute(select(WebhookDelivery.status, func.count()).where(WebhookDelivery.endpoint_id == endpoint_id)
                          .group_by(WebhookDelivery.status)).all()
    db.commit()
    return dict(rows)


def wait_for(condition, timeout: float, what) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
