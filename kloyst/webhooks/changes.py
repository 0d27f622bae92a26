"""What a plugin receives from a Meta webhook: one ``change`` of one ``entry``, with where it came from.

Meta's envelope is ``{"object": "whatsapp_business_account", "entry": [{"id": <WABA id>,
"changes": [{"field": ..., "value": {...}}]}]}``; message-level fields carry
``value.metadata.phone_number_id``. The drainer splits deliveries into these and hands each
vendor's share to the ``kloyst_webhook_changes`` hook.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

WHATSAPP_OBJECT = "whatsapp_business_account"


@dataclass(frozen=True)
class WebhookChange:
    field: str  # "messages", "message_template_status_update", "phone_number_quality_update", …
    value: dict[str, Any]
    meta_waba_id: str  # entry.id
    meta_phone_number_id: str | None  # value.metadata.phone_number_id, when the field has one
    delivery_id: int  # the stored delivery it came from
    received_at: dt.datetime


class MalformedDelivery(ValueError):
    """A signed body that is not a Meta webhook envelope: no retry can make it one."""


def parse_envelope(body: bytes, *, delivery_id: int, received_at: dt.datetime) -> list[WebhookChange]:
    """Every change of every entry of one delivery, in the order Meta wrote them.

    Meta batches several entries (WABAs) and changes per POST, so nothing here indexes
    ``[0]``. A body of another product (``object`` other than ``whatsapp_business_account``)
    has no change for Kloyst; a change without a field or a ``value`` object is skipped.
    """
    try:
        data = json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError included
        raise MalformedDelivery(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("entry"), list):
        raise MalformedDelivery("the body has no entry list")
    if data.get("object") != WHATSAPP_OBJECT:
        return []
    changes = []
    for entry in data["entry"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
            continue
        waba_id = str(entry.get("id") or "")
        for change in entry["changes"]:
            if not isinstance(change, dict) or not change.get("field") or not isinstance(change.get("value"), dict):
                continue
            value = change["value"]
            metadata = value.get("metadata")
            phone_number_id = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
            changes.append(WebhookChange(field=str(change["field"]), value=value, meta_waba_id=waba_id,
                                         meta_phone_number_id=str(phone_number_id) if phone_number_id else None,
                                         delivery_id=delivery_id, received_at=received_at))
    return changes


class RetryLater(Exception):
    """Raise from ``kloyst_webhook_changes`` when a change cannot be applied *yet* (what it names is not
    recorded yet); the delivery is applied again later, with backoff, like any failure, but logged quietly."""
