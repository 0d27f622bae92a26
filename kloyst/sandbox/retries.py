"""Failed webhook POSTs waiting for their next attempt, in the order they fall due.

Meta retries a webhook its receiver did not take, with growing pauses, for days; the sandbox
does the same up to a configurable horizon (:class:`~kloyst.sandbox.state.Behaviour`). A failed
delivery waits here in a heap keyed by the time it is due again, and retry threads take the
due ones. No thread sleeps on a failing delivery, so fresh webhooks keep flowing while a
receiver is down, and ten thousand deliveries waiting out an outage cost one heap entry each.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time

FIRST_RETRY_SECONDS = 0.5


def backoff(failed_attempts: int, max_interval: float) -> float:
    """Seconds until the next attempt: 0.5 s after the first failure, doubling per failure, capped, with jitter.

    The jitter (up to a quarter of the interval off) spreads deliveries that failed together,
    so a receiver that comes back is not hit by all of them in the same instant.
    """
    interval = min(max_interval, FIRST_RETRY_SECONDS * 2.0 ** min(failed_attempts - 1, 32))
    return interval * random.uniform(0.75, 1.0)


class RetrySchedule:
    """A heap of ``(due, item)`` with a blocking :meth:`take` of the earliest due item, for any number of threads."""

    def __init__(self):
        self._heap: list[tuple[float, int, object]] = []
        self._order = itertools.count()  # ties in ``due`` never compare the items
        self._changed = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._changed:
            return len(self._heap)

    def put(self, due: float, item) -> None:
        """Schedule ``item`` for ``due`` (a ``time.monotonic()`` time); after :meth:`close` it is dropped."""
        with self._changed:
            if self._closed:
                return
            heapq.heappush(self._heap, (due, next(self._order), item))
            # One waiter is enough: whichever wakes re-reads the earliest due time and waits for that.
            self._changed.notify()

    def take(self):
        """The earliest item once it is due; ``None`` once the schedule is closed."""
        with self._changed:
            while not self._closed:
                wait = None
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        item = heapq.heappop(self._heap)[2]
                        if self._heap:  # a waiter may be idle with no timeout: let one re-read the new earliest
                            self._changed.notify()
                        return item
                self._changed.wait(wait)
            return None

    def clear(self) -> int:
        """Drop every scheduled item and keep the schedule open; how many were dropped."""
        with self._changed:
            dropped = len(self._heap)
            self._heap.clear()
            return dropped

    def close(self) -> list:
        """Wake every waiting :meth:`take` with ``None`` and return the items that were still scheduled."""
        with self._changed:
            self._closed = True
            items = [item for _, _, item in self._heap]
            self._heap.clear()
            self._changed.notify_all()
            return items
