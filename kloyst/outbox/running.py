"""The outbox events this process is running now (``registry["kloyst.outbox.running"]``).

On its own so that the outbox package can set it up without importing delivery, which imports
the task context, which writes to the outbox.
"""

from __future__ import annotations

import threading


class Running:
    """The outbox events this process is running now: a second copy is a duplicate, and the reconciler's evidence.

    One per application (``registry["kloyst.outbox.running"]``), shared by every worker
    thread of the process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: set[int] = set()

    def start(self, event_id: int) -> bool:
        """Record ``event_id`` as running; False when it already is (the caller is a duplicate)."""
        with self._lock:
            if event_id in self._events:
                return False
            self._events.add(event_id)
            return True

    def finish(self, event_id: int) -> None:
        with self._lock:
            self._events.discard(event_id)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._events
