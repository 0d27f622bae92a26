"""Service modes: one image, one ini, ``SERVICE_TYPE`` decides what this process does.

=============  ==============================================================
API_GATEWAY    the REST API on waitress
WEBHOOK        only the webhook routes (and health), on the webhook port, and the
               drainer that applies stored webhooks
WORKER         the huey consumer: runs tasks
OUTBOX         the outbox relay: database → queue
ALL            all of the above in one process (the embedded default)
=============  ==============================================================

SIGTERM and SIGINT stop every mode cleanly: the HTTP server stops accepting, the
consumer finishes the tasks in hand, the relay finishes its batch.

With ``kloyst.metrics.port`` set, every mode also opens the metrics listener
(:mod:`kloyst.metrics.server`): ``/metrics``, and ``/healthz`` answering for the loops
started here.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
from typing import Any

from waitress.server import create_server

from kloyst import metrics
from kloyst.config import SERVICE_TYPES, ConfigurationError, as_service_type  # noqa: F401 - SERVICE_TYPES re-exported
from kloyst.heartbeat import Heartbeat, HeartbeatSettings
from kloyst.http.errors import error_body
from kloyst.http.tweens import SECURITY_HEADERS, largest_body_limit
from kloyst.metrics import liveness, server as metrics_server
from kloyst.outbox.relay import Relay
from kloyst.webhooks import WEBHOOK_PREFIX, drainer

log = logging.getLogger(__name__)
WEBHOOK_PATHS = frozenset({"/healthz", "/readyz"})
# The modes whose metrics listener also exports the shared, scrape-time gauges (outbox backlog, queue depth,
# wallet holds…): one relay process rather than every worker replica runs their queries.
SHARED_GAUGE_MODES = frozenset({"OUTBOX", "ALL"})


def check_service_type(value: str) -> str:
    """``value`` as a service type, or a :class:`ConfigurationError` listing the valid ones."""
    try:
        return as_service_type(value)
    except ValueError as exc:
        raise ConfigurationError(f"SERVICE_TYPE: {exc}") from None


class StopRequested(SystemExit):
    """Raised in the main thread by SIGTERM/SIGINT to leave the server loop; :func:`run` then stops in order.

    Closing waitress's sockets from inside the signal handler would pull them out from under
    the ``select`` the main thread is blocked in (``EBADF``), so the handler only unwinds.
    A ``SystemExit`` because waitress's loop catches exactly that and drains its request threads.
    """

    def __init__(self) -> None:
        super().__init__(0)


class Stopper:
    """A shared stop flag set by SIGTERM/SIGINT; every loop in this process watches it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._callbacks: list = []
        self._stopped = False
        self._lock = threading.Lock()

    def on_stop(self, callback) -> None:
        self._callbacks.append(callback)

    def stop(self, *_args) -> None:
        """Set the flag and run the stop callbacks, once, last started first stopped."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        log.info("stopping")
        self.event.set()
        for callback in reversed(self._callbacks):
            try:
                callback()
            except Exception:  # one failing shutdown step must not block the others
                log.exception("error while stopping")

    def _on_signal(self, signum, _frame) -> None:
        if self.event.is_set():  # a second signal while stopping changes nothing
            return
        log.info("received %s", signal.Signals(signum).name)
        self.event.set()
        raise StopRequested()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _note_signal(self, signum, _frame) -> None:
        log.info("received %s while starting; stopping once started", signal.Signals(signum).name)
        self.event.set()

    def install_startup_handlers(self) -> None:
        """While the mode starts: a signal only sets the flag (unwinding half-started parts would leak them);
        :func:`run` sees the flag once everything is up and stops in order."""
        signal.signal(signal.SIGTERM, self._note_signal)
        signal.signal(signal.SIGINT, self._note_signal)


def webhook_only(app):
    """WSGI filter for WEBHOOK mode: everything but the webhook and health routes is a JSON 404."""
    body = json.dumps(error_body("not_found", "this port serves webhooks only")).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *SECURITY_HEADERS.items()]

    def filtered(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in WEBHOOK_PATHS or path.startswith(WEBHOOK_PREFIX):
            return app(environ, start_response)
        start_response("404 Not Found", list(headers))
        return [body]

    return filtered


# What nginx (nginx/) sets; waitress rewrites REMOTE_ADDR, the scheme and host from these, and only
# when the peer is kloyst.http.trusted_proxy. Every other forwarding header is removed.
TRUSTED_PROXY_HEADERS = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port"}


def start_http(app, host: str, port: int, stopper: Stopper, threads: int = 8, max_body_bytes: int | None = None,
               trusted_proxy: str | None = None, reuse_port: bool = False):
    """A waitress server for ``app`` (not yet running: call ``server.run()``), closed by ``stopper``.

    ``max_body_bytes`` caps what waitress buffers before the application sees a request; it
    should sit above every route's own limit, so ordinary oversize bodies still get the JSON 413.
    ``trusted_proxy`` is the one peer whose ``X-Forwarded-*`` headers are believed (one hop).
    """
    options: dict[str, Any] = {"max_request_body_size": max_body_bytes} if max_body_bytes else {}
    if reuse_port:
        # Several processes bind the same port and the kernel spreads connections between them: one
        # Python process is one core, and the webhook receiver is CPU-bound.
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
        options["sockets"] = [listener]
    if trusted_proxy:
        options.update(trusted_proxy=trusted_proxy, trusted_proxy_headers=TRUSTED_PROXY_HEADERS,
                       trusted_proxy_count=1)
    address: dict[str, Any] = {} if reuse_port else {"host": host, "port": port}
    server = create_server(app, threads=threads, clear_untrusted_proxy_headers=True, **address, **options)
    stopper.on_stop(server.close)
    log.info("listening on http://%s:%s", host, server.effective_port)  # type: ignore[union-attr]  # not in types-waitress
    return server


def start_worker(registry, stopper: Stopper):
    queue = registry["kloyst.queue"]
    consumer = queue.huey.create_consumer(workers=registry.settings["kloyst.queue.workers"], worker_type="thread",
                                          periodic=True, check_worker_health=True, shutdown_timeout=30)
    consumer.start()
    stopper.install_startup_handlers()  # huey's start() put its own handlers in place; Kloyst's decide
    log.info("worker started with %s threads", registry.settings["kloyst.queue.workers"])

    stopper.on_stop(lambda: consumer.stop(graceful=True))  # finishes the tasks in hand
    return consumer


def relay_loop(registry, stopper: Stopper) -> None:
    """Run one :class:`~kloyst.outbox.relay.Relay` until stopped (its loop polls adaptively).

    One relay for the life of the process, so it keeps its place in the vendor round robin,
    its floors and its reconcile clock. A database hiccup does not end the loop: it is
    logged, and the relay starts again after a pause.
    """
    relay = Relay(registry)
    pause = 0.5
    while not stopper.event.is_set():
        try:
            relay.run(stopper.event)
            pause = 0.5
        except Exception:
            log.exception("outbox relay failed; restarting in %.1f s", pause)
            stopper.event.wait(pause)
            pause = min(30.0, pause * 2)


def start_relay(registry, stopper: Stopper) -> threading.Thread:
    thread = threading.Thread(target=relay_loop, args=(registry, stopper), name="outbox-relay", daemon=True)
    thread.start()
    log.info("outbox relay started")
    return thread


def start_webhook_drainer(registry, stopper: Stopper) -> threading.Thread:
    """The thread that applies stored webhooks (:mod:`kloyst.webhooks.drainer`), beside the webhook route."""
    return drainer.start(registry, stopper.event)


def start_background_services(registry, mode: str, heartbeat) -> list:
    """What plugins run beside ``mode`` (``kloyst_background_services``), already started."""
    pm = registry["kloyst.plugin_manager"]
    services = [service for _, service in pm.collect("kloyst_background_services", registry=registry, mode=mode,
                                                     heartbeat=heartbeat)]
    for service in services:
        log.info("started %s", type(service).__name__)
    return services


def run(mode: str, app, registry, *, on_listening=None) -> int:
    """Run ``mode`` until SIGTERM/SIGINT; return the exit status."""
    mode = check_service_type(mode)
    settings = registry.settings
    stopper = Stopper()
    stopper.install_startup_handlers()
    # The metrics listener first: a taken port stops start-up before anything runs, and it is stopped
    # last. Its /healthz says "starting" until every loop below is up, "stopping" from the first signal.
    loops = metrics.of(registry).liveness
    loops.clear()
    if mode in SHARED_GAUGE_MODES:
        metrics.of(registry).export_shared()
    metrics_server.start(registry, stopper)
    # Before anything claims work: claims name this process, and its beats tell the others it is alive.
    heartbeat = Heartbeat(registry["kloyst.engine"], mode, HeartbeatSettings.from_settings(settings)).start()
    loops.add("heartbeat", heartbeat.is_alive)
    threads: list[threading.Thread] = []
    if mode in ("WORKER", "ALL"):
        loops.add("huey_consumer", liveness.consumer_check(start_worker(registry, stopper)))
    if mode in ("OUTBOX", "ALL"):
        threads.append(start_relay(registry, stopper))
        loops.add("outbox_relay", liveness.thread_check(threads[-1]))
    if mode in ("WEBHOOK", "ALL"):
        threads.append(start_webhook_drainer(registry, stopper))
        loops.add("webhook_drainer", liveness.thread_check(threads[-1]))
    servers = []
    # Twice the largest route limit: a body just over a limit gets the JSON 413 from the app, an absurd
    # one is cut by waitress before it fills the disk.
    server_options = {"threads": settings["kloyst.http.threads"], "max_body_bytes": 2 * largest_body_limit(registry),
                      "trusted_proxy": settings["kloyst.http.trusted_proxy"],
                      "reuse_port": settings["kloyst.http.reuse_port"]}
    if mode in ("API_GATEWAY", "ALL"):
        servers.append(start_http(app, settings["kloyst.http.host"], settings["kloyst.http.port"], stopper,
                                  **server_options))
    elif mode == "WEBHOOK":
        servers.append(start_http(webhook_only(app), settings["kloyst.http.host"],
                                  settings["kloyst.http.webhook_port"], stopper,
                                  **{**server_options, "threads": settings["kloyst.http.webhook_threads"]}))
    services = start_background_services(registry, mode, heartbeat)
    for server in servers:
        loops.add("http", liveness.server_check(server))
    for service in services:
        if callable(getattr(service, "is_alive", None)):  # a plugin service that can tell (the sender)
            loops.add(type(service).__name__.lower(), service.is_alive)
    loops.started = True
    stopper.on_stop(lambda: setattr(loops, "stopping", True))  # registered last, so it runs first
    if on_listening is not None:
        on_listening(servers)
    # Last: huey's consumer.start() installs its own handlers, ours must win; and a signal now finds
    # everything started, inside the try below.
    stopper.install_signal_handlers()
    try:
        if servers and not stopper.event.is_set():  # one at most: the HTTP modes serve one port each
            servers[0].run()
        else:
            while not stopper.event.is_set():
                stopper.event.wait(1.0)
    except (KeyboardInterrupt, SystemExit):  # StopRequested when waitress is not the one catching it
        pass
    finally:
        stopper.stop()
        for service in services:
            service.stop(timeout=30)
        for thread in threads:
            thread.join(timeout=30)
        heartbeat.stop()  # last: what this process still held is free for the others at once
        log.info("%s stopped", mode)
    return 0
