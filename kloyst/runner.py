"""Service modes: one image, one ini, ``SERVICE_TYPE`` decides what this process does.

=============  ==============================================================
API_GATEWAY    the REST API on waitress
WEBHOOK        only the webhook routes (and health), on the webhook port
WORKER         the huey consumer: runs tasks
OUTBOX         the outbox relay: database → queue
ALL            all of the above in one process (the embedded default)
=============  ==============================================================

SIGTERM and SIGINT stop every mode cleanly: the HTTP server stops accepting, the
consumer finishes the tasks in hand, the relay finishes its batch.
"""

from __future__ import annotations

import logging
import signal
import threading

from kloyst.config import ConfigurationError

log = logging.getLogger(__name__)

SERVICE_TYPES = ("API_GATEWAY", "WEBHOOK", "WORKER", "OUTBOX", "ALL")
WEBHOOK_PREFIXES = ("/webhook/", "/healthz", "/readyz")


def check_service_type(value: str) -> str:
    value = (value or "").strip().upper()
    if value not in SERVICE_TYPES:
        raise ConfigurationError(f"SERVICE_TYPE {value or '(empty)'!r} is not valid; use one of: "
                                 f"{', '.join(SERVICE_TYPES)}")
    return value


class Stopper:
    """A shared stop flag set by SIGTERM/SIGINT; every loop in this process watches it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._callbacks: list = []

    def on_stop(self, callback) -> None:
        self._callbacks.append(callback)

    def stop(self, *_args) -> None:
        if self.event.is_set():
            return
        log.info("stopping")
        self.event.set()
        for callback in reversed(self._callbacks):  # last started, first stopped
            try:
                callback()
            except Exception:  # one failing shutdown step must not block the others
                log.exception("error while stopping")

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)


def webhook_only(app):
    """WSGI filter for WEBHOOK mode: everything but the webhook and health routes is 404."""

    def filtered(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(WEBHOOK_PREFIXES):
            return app(environ, start_response)
        body = b'{"error": {"code": "not_found", "message": "this port serves webhooks only", "details": {}}}'
        start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return filtered


def start_http(app, host: str, port: int, stopper: Stopper, threads: int = 8):
    from waitress.server import create_server

    server = create_server(app, host=host, port=port, threads=threads, clear_untrusted_proxy_headers=True)
    stopper.on_stop(server.close)
    log.info("listening on http://%s:%s", host, server.effective_port)
    return server


def start_worker(registry, stopper: Stopper):
    queue = registry["kloyst.queue"]
    consumer = queue.huey.create_consumer(workers=registry.settings["kloyst.queue.workers"], worker_type="thread",
                                          periodic=True, check_worker_health=True, shutdown_timeout=30)
    consumer.start()
    log.info("worker started with %s threads", registry.settings["kloyst.queue.workers"])

    stopper.on_stop(lambda: consumer.stop(graceful=True))  # finishes the tasks in hand
    return consumer


def relay_loop(registry, stopper: Stopper, *, idle_ceiling: float = 2.0) -> None:
    """Publish outbox events: again at once while batches come back full, backing off when idle."""
    from kloyst.outbox.relay import relay_once

    delay = 0.05
    while not stopper.event.is_set():
        try:
            published = relay_once(registry)
        except Exception:
            log.exception("outbox relay batch failed")
            published = 0
        if published:
            delay = 0.0 if published >= 500 else 0.05
        else:
            delay = min(idle_ceiling, max(0.05, delay * 2))
        if delay:
            stopper.event.wait(delay)


def start_relay(registry, stopper: Stopper) -> threading.Thread:
    thread = threading.Thread(target=relay_loop, args=(registry, stopper), name="outbox-relay", daemon=True)
    thread.start()
    return thread


def run(mode: str, app, registry, *, on_listening=None) -> int:
    """Run ``mode`` until SIGTERM/SIGINT; return the exit status."""
    mode = check_service_type(mode)
    settings = registry.settings
    stopper = Stopper()
    threads: list[threading.Thread] = []
    if mode in ("WORKER", "ALL"):
        start_worker(registry, stopper)
    # After the consumer: huey's start() installs its own handlers, ours must win.
    stopper.install_signal_handlers()
    if mode in ("OUTBOX", "ALL"):
        threads.append(start_relay(registry, stopper))
    servers = []
    if mode in ("API_GATEWAY", "ALL"):
        servers.append(start_http(app, settings["kloyst.http.host"], settings["kloyst.http.port"], stopper))
    if mode == "WEBHOOK":
        servers.append(start_http(webhook_only(app), settings["kloyst.http.host"],
                                  settings["kloyst.http.webhook_port"], stopper))
    if on_listening is not None:
        on_listening(servers)
    try:
        if servers:
            for server in servers[1:]:
                threading.Thread(target=server.run, daemon=True).start()
            servers[0].run()
        else:
            while not stopper.event.is_set():
                stopper.event.wait(1.0)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        stopper.stop()
        for thread in threads:
            thread.join(timeout=30)
        log.info("%s stopped", mode)
    return 0
