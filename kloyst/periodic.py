"""A piece of work done on a timer in a thread of its own: the retention pass, the wallet check.

Both belong beside a service mode's own loops (``kloyst_background_services``), run first a minute
after start-up (or one interval, if shorter: a restart does not add their work to the work of
starting) and then every interval, and must not die of one failed run: a failure is logged and
the work is tried again at the next interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

FIRST_RUN_AFTER_SECONDS = 60.0


class Periodic:
    """``work()`` every ``interval_seconds`` until :meth:`stop`; a service for ``kloyst_background_services``.

    ``stop`` is the event that ends it: pass the one ``work`` watches too, so that stopping also
    ends a run in progress at its next safe point (the retention pass, between two batches).
    """

    def __init__(self, name: str, interval_seconds: float, work: Callable[[], object], *,
                 stop: threading.Event | None = None) -> None:
        self.name = name
        self.interval = interval_seconds
        self.work = work
        self._stop = stop or threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"kloyst-{name}", daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        wait = min(FIRST_RUN_AFTER_SECONDS, self.interval)
        while not self._stop.wait(wait):
            wait = self.interval
            try:
                self.work()
            except Exception:
                log.exception("%s: the run failed; trying again in %s s", self.name, self.interval)
