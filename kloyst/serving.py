"""Serving a waitress server from a background thread, and stopping it from another (EBADF-safe).

Used by :mod:`kloyst.runner` and by the metrics listener (:mod:`kloyst.metrics.server`), which the
runner starts: so it lives below both.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from waitress import trigger, wasyncore

log = logging.getLogger(__name__)


def serve_in_background(server, name: str = "http") -> Callable[..., None]:
    """Run a waitress ``server`` in a daemon thread; return a function that stops it from any other thread.

    waitress is not thread-safe: closing its sockets from another thread pulls them out from
    under its ``select`` (``EBADF``). Its trigger runs a callable inside the loop's own thread,
    so the stop closes every socket there, which empties the loop's map and ends it.
    """
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()

    def stop(timeout: float = 10) -> None:
        socket_map = server._map  # noqa: SLF001 - the loop's own map is what close_all needs
        close_in_loop = lambda: wasyncore.close_all(socket_map)  # noqa: E731 - one thunk, pulled once
        try:
            server.trigger.pull_trigger(close_in_loop)
        except OSError:
            # The loop's trigger was closed under it: give the loop a new one (it is in the map at the
            # loop's next turn, within waitress's one-second select timeout) and pull that instead.
            log.warning("%s: the server loop's trigger was already closed; waking it through a new one", name)
            server.trigger = trigger.trigger(socket_map)
            server.trigger.pull_trigger(close_in_loop)
        thread.join(timeout)
        if not thread.is_alive():
            wasyncore.close_all(socket_map)  # a no-op after the loop's own close; the loop is gone either way
        server.task_dispatcher.shutdown()

    return stop
