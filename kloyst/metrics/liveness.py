"""Is every loop of this process still running? What the metrics listener's ``/healthz`` answers.

``kloyst run`` registers each loop it starts — the HTTP server, the huey consumer, the
outbox relay thread, the webhook drainer thread, and plugin services that can tell
(an ``is_alive()`` method: the message sender, the campaign loop) — as a name and a check. A check is a
function returning True while its loop runs; it must be instant (no I/O): a health probe
that hangs is a failed probe. The answer is 200 only once the process has started every
loop and before it begins to stop, and while every check holds: a thread that died leaves
a process that looks up but does no work, which is exactly what Docker's health check
must see. The same checks are exported as ``kloyst_process_loop_up{loop}``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

STARTING, OK, STOPPING, FAILING = "starting", "ok", "stopping", "failing"


class Liveness:
    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], bool]] = {}
        self._lock = threading.Lock()
        self.started = False
        self.stopping = False

    def add(self, name: str, check: Callable[[], bool]) -> None:
        with self._lock:
            self._checks[name] = check

    def clear(self) -> None:
        with self._lock:
            self._checks.clear()
            self.started = self.stopping = False

    def loops(self) -> dict[str, bool]:
        """Each loop's state now; a check that raises counts as dead."""
        with self._lock:
            checks = dict(self._checks)
        states = {}
        for name, check in checks.items():
            try:
                states[name] = bool(check())
            except Exception:
                log.exception("liveness check %s failed", name)
                states[name] = False
        return states

    def report(self) -> tuple[bool, dict]:
        """``(healthy, body)`` for ``/healthz``: status, and every loop's state."""
        loops = self.loops()
        if self.stopping:
            status = STOPPING
        elif not self.started:
            status = STARTING
        else:
            status = OK if all(loops.values()) else FAILING
        body = {"status": status, "loops": loops}
        dead = sorted(name for name, alive in loops.items() if not alive)
        if dead and status == FAILING:
            body["dead"] = dead
        return status == OK, body

    # -- a prometheus_client collector -----------------------------------------------------

    def describe(self):
        return [self._family()]

    def collect(self):
        family = self._family()
        for name, alive in sorted(self.loops().items()):
            family.add_metric([name], 1.0 if alive else 0.0)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("kloyst_process_loop_up", "1 while the named loop of this process runs, 0 once "
                                 "it died (the metrics listener's /healthz then answers 503).", labels=["loop"])


def thread_check(thread: threading.Thread) -> Callable[[], bool]:
    return thread.is_alive


def consumer_check(consumer) -> Callable[[], bool]:
    """huey's consumer as Kloyst starts it (``start()``, no supervising ``run()`` loop): nothing restarts a
    worker thread that died, so every worker and the scheduler must be alive."""

    def alive() -> bool:
        threads = [thread for _, thread in consumer.worker_threads] + [consumer.scheduler]
        return not consumer.stop_flag.is_set() and all(thread.is_alive() for thread in threads)

    return alive


def server_check(server) -> Callable[[], bool]:
    """A waitress server: alive while a listening socket of its loop accepts (closing one clears ``accepting``).

    One address is one ``TcpWSGIServer``; a name resolving to several is a ``MultiSocketServer``
    whose loop map holds them all.
    """
    socket_map = getattr(server, "_map", None) or getattr(server, "map", {})

    def alive() -> bool:
        return any(getattr(dispatcher, "accepting", False) for dispatcher in list(socket_map.values()))

    return alive
