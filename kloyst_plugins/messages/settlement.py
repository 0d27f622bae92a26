"""Telling other plugins that a priced message reached an end that moves money.

A message may carry a price (``message_log.price_micros``) and the wallet hold that pays for
it (``hold_id``): a campaign sets both when it queues its messages, and
:class:`~kloyst_plugins.messages.services.MessageService` when it queues a single send or a test
send. The messages plugin does not settle money itself, so it reports, through the
``kloyst_messages_settled`` hook and in the very transaction that records the message's new
state, each priced message that was

- ``sent``: Meta accepted it (the sender's answer, or a wamid adopted from a late answer or a
  status webhook);
- ``failed``: it failed without being sent (a permanent error, retries exhausted, refused);
- ``undelivered``: it was sent, then a status webhook reported it failed.

Because the report shares the transaction, a message's state and its money commit together or
not at all. Unpriced messages (a pricing rule made them free) never reach the hook.
"""

from __future__ import annotations

import uuid

from kloyst.api import SettledMessage

SENT = "sent"
FAILED = "failed"
UNDELIVERED = "undelivered"


def as_uuid(value) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def settled_from_rows(rows, outcome: str) -> list[SettledMessage]:
    """``(id, vendor_id, campaign_id, hold_id, price_micros)`` rows → the priced ones as :class:`SettledMessage`."""
    return [SettledMessage(as_uuid(r[0]), as_uuid(r[1]), as_uuid(r[2]), as_uuid(r[3]), int(r[4]), outcome)
            for r in rows if r[4] is not None]


def report(plugin_manager, conn, settled: list[SettledMessage]) -> None:
    """Call ``kloyst_messages_settled`` on every installed plugin with ``conn``; nothing when none is priced."""
    if settled:
        plugin_manager.hook.kloyst_messages_settled(conn=conn, settled=settled)
