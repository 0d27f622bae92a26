"""Reading customers' inbound messages back, decrypted, for the vendor they were sent to.

For other plugins (through :mod:`kloyst_plugins.messages.api`) that hand a vendor its own
customers' messages: the vendor webhooks plugin puts them in ``MessageReceived`` deliveries.
The content is decrypted with the vendor's id as associated data, so a row can only ever be
opened as the vendor it was stored for.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from kloyst.api import FieldCipher
from kloyst_plugins.messages.models import InboundMessage
from kloyst_plugins.messages.webhooks import INBOUND_FIELD

log = logging.getLogger(__name__)


def inbound_json(db, cipher: FieldCipher, vendor_id: uuid.UUID,
                 inbound_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """``{inbound id: Meta's message object}`` for those of ``inbound_ids`` that are ``vendor_id``'s.

    ``db`` is a session or a connection. One query however many ids; ids of another vendor, or
    of rows gone, are left out, as is a row that cannot be decrypted (logged: a key removed
    before rotation).
    """
    ids = list(dict.fromkeys(inbound_ids))
    if not ids:
        return {}
    rows = db.execute(select(InboundMessage.id, InboundMessage.content_enc)
                      .where(InboundMessage.vendor_id == vendor_id, InboundMessage.id.in_(ids))).all()
    found: dict[uuid.UUID, dict[str, Any]] = {}
    for inbound_id, content_enc in rows:
        try:
            found[inbound_id] = _open(cipher, vendor_id, content_enc)
        except Exception as exc:
            log.error("inbound message %s cannot be read: %s", inbound_id, type(exc).__name__)
    return found


def open_inbound(cipher: FieldCipher, message: InboundMessage) -> dict[str, Any]:
    """The message object Meta delivered (text, media id, location…), decrypted for its vendor."""
    return _open(cipher, message.vendor_id, message.content_enc)


def _open(cipher: FieldCipher, vendor_id: uuid.UUID, content_enc: bytes) -> dict[str, Any]:
    return json.loads(cipher.decrypt(bytes(content_enc), vendor_id=vendor_id, field=INBOUND_FIELD))
