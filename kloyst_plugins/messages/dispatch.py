"""The doorbell between "a message was queued" and the sender.

The ``message_log`` row is the work; the sender claims due rows itself (see ``sender.py``).
What queueing adds, in the same transaction, is one outbox event ``messages.queued`` per
number: once it commits, the outbox delivers it to a worker, whose handler wakes that
process's sender at once instead of at its next poll. A lost doorbell costs latency, never a
message: senders poll anyway.
"""

from __future__ import annotations

import threading
import uuid

from kloyst.api import Outbox

QUEUED_TOPIC = "messages.queued"


class Doorbell:
    """Wakes this process's sender; ``wait`` returns early when rung."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def ring(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        rung = self._event.wait(timeout)
        self._event.clear()
        return rung


DOORBELL = Doorbell()


def notify_queued(db, vendor_id: uuid.UUID, phone_number_ids) -> None:
    """Record, in the caller's transaction, that messages for these numbers are waiting."""
    for phone_number_id in sorted({str(p) for p in phone_number_ids}):
        Outbox(db).add(QUEUED_TOPIC, {"phone_number_id": phone_number_id}, vendor_id=vendor_id)


def handle_queued(ctx, event) -> None:
    """Outbox handler for ``messages.queued``: ring the local sender (idempotent: ringing twice is harmless)."""
    DOORBELL.ring()
