"""What a vendor receives for one event, in a webhook delivery and in the feed alike.

``{"id", "type", "vendor_id", "occurred_at", "data"}`` where ``data`` is the event's payload
(``docs/events.md``). A ``MessageReceived`` also carries ``data.message``: the customer's
message as Meta delivered it (text, media id, location…), decrypted for the vendor through
the messages plugin's api; it is read when the body is built and never stored elsewhere.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kloyst.api import FieldCipher
from kloyst_plugins.messages.api import inbound_json

MESSAGE_RECEIVED = "MessageReceived"


@dataclass(frozen=True)
class FeedRow:
    """A ``vendor_event`` row as the body builder needs it (from the ORM or from a plain select)."""

    id: int
    vendor_id: uuid.UUID
    type: str
    occurred_at: dt.datetime
    payload: dict


def event_id(row_id: int) -> str:
    """The id a receiver dedupes on: the same in every delivery and redelivery of the event, and in the feed."""
    return f"evt_{row_id}"


def event_json(row: FeedRow, message: dict | None = None) -> dict[str, Any]:
    data = dict(row.payload)
    if row.type == MESSAGE_RECEIVED:
        data["message"] = message
    return {"id": event_id(row.id), "type": row.type, "vendor_id": str(row.vendor_id),
            "occurred_at": row.occurred_at.isoformat().replace("+00:00", "Z"), "data": data}


def inbound_messages(db, cipher: FieldCipher, rows: Iterable[FeedRow]) -> dict[uuid.UUID, dict]:
    """The decrypted messages of the ``MessageReceived`` rows among ``rows`` (one query per vendor)."""
    wanted: dict[uuid.UUID, list[uuid.UUID]] = {}
    for row in rows:
        if row.type == MESSAGE_RECEIVED and row.payload.get("inbound_id"):
            wanted.setdefault(row.vendor_id, []).append(uuid.UUID(str(row.payload["inbound_id"])))
    found: dict[uuid.UUID, dict] = {}
    for vendor_id, ids in wanted.items():
        found.update(inbound_json(db, cipher, vendor_id, ids))
    return found


def events_json(db, cipher: FieldCipher, rows: list[FeedRow]) -> list[dict[str, Any]]:
    messages = inbound_messages(db, cipher, rows)
    return [event_json(row, _message_of(row, messages)) for row in rows]


def _message_of(row: FeedRow, messages: dict[uuid.UUID, dict]) -> dict | None:
    value = row.payload.get("inbound_id") if row.type == MESSAGE_RECEIVED else None
    return messages.get(uuid.UUID(str(value))) if value else None
