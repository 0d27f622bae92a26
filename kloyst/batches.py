"""Writing what worker threads produce in batches: one writer thread, a queue, and a stop marker.

The sender (messages) and the vendor webhook deliverer both make many small outcomes on many
threads and record them with one statement per batch. :func:`write_in_batches` is that writer's
loop: it waits for a first item, gathers more for a moment (``linger_seconds``) up to
``batch_size``, hands the batch over, and on ``None`` (the stop marker) writes whatever is
still queued, so nothing handed to the queue before the stop is lost in memory.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import TypeVar

Item = TypeVar("Item")
log = logging.getLogger(__name__)

STOP = None  # put on the queue to end the loop (after what is already queued is written)


def write_in_batches(source: queue.Queue | queue.SimpleQueue, write: Callable[[list[Item]], None], *, batch_size: int,
                     linger_seconds: float = 0.02) -> None:
    """Hand ``source``'s items to ``write`` in batches of at most ``batch_size`` until :data:`STOP` arrives."""
    closing = False
    while not closing:
        first = source.get()
        if first is STOP:
            break
        batch = [first]
        deadline = time.monotonic() + linger_seconds
        while len(batch) < batch_size:
            try:
                item = source.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is STOP:
                closing = True
                break
            batch.append(item)
        write(batch)
    # Whatever is still queued after the stop: write it, then nothing is left in memory.
    rest = []
    while True:
        try:
            item = source.get_nowait()
        except queue.Empty:
            break
        if item is not STOP:
            rest.append(item)
    if rest:
        write(rest)


def write_until_done(write: Callable[[list[Item]], None], batch: list[Item], *, stopping, what: str) -> bool:
    """``write(batch)``, retried with backoff (to 30 s) while it fails; True once it succeeded.

    Giving up would be worse than waiting (an outcome not recorded comes back through its lease as a
    second call), so only a process that is ``stopping`` (an Event) gives up, after five tries: False.
    """
    attempt = 0
    while True:
        try:
            write(batch)
            return True
        except Exception:
            attempt += 1
            log.exception("%s: could not record %d outcomes (try %d); retrying", what, len(batch), attempt)
            if stopping.is_set() and attempt >= 5:
                return False
            time.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)))
