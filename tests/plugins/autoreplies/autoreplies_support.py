"""Shops that auto-reply, customers who write to them, and the replies read back, for the auto-replies tests.

:class:`Builder` makes the rows the waba, templates, contacts and wallet plugins would leave (a vendor
with every messaging plugin and ``autoreplies`` on, money in its wallet, one WABA, one CONNECTED number),
through the messages plugin's test builders;
:func:`inbound` writes the webhook Meta posts when a customer writes, signed as Meta signs it, so a test
drives the real path: webhook → drainer → ``MessageReceived`` → outbox → the plugin's handler.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from kloyst import testing
from kloyst.db import tenancy
from kloyst.webhooks import WEBHOOK_PATH
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.messages.content import open_content
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.templates.models import MessageTemplate
from kloyst_plugins.waba.models import PhoneNumber, Waba

# The messages plugin's builders make the vendor, WABA, number, template and contact rows the same way here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "messages"))
from messaging_support import FUNDS, Messaging, RECIPIENT  # noqa: E402

CUSTOMER = RECIPIENT
SHOP_NUMBER = "+1 555 010 0000"  # Messaging.number's display number
RULES = "/v1/autoreplies/rules"
SETTINGS = "/v1/autoreplies/settings"
# A Monday: 10:00 UTC is 11:00 in Berlin (open 09:00–17:00), 20:00 UTC is 21:00 there (closed).
OPEN = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.timezone.utc)
CLOSED = dt.datetime(2026, 12, 7, 20, 0, tzinfo=dt.timezone.utc)
BERLIN_HOURS = {"time_zone": "Europe/Berlin", "business_hours": {d: [["09:00", "17:00"]] for d in
                                                                 ("mon", "tue", "wed", "thu", "fri")}}


@dataclass(frozen=True)
class Shop:
    account: testing.Account
    waba: Waba
    number: PhoneNumber

    @property
    def headers(self) -> dict[str, str]:
        return self.account.headers

    @property
    def vendor_id(self) -> uuid.UUID:
        return self.account.vendor_id


class Builder:
    """Rows for a test, committed through ``db`` (savepoints under ``db``, real commits under ``committed_db``)."""

    def __init__(self, db, registry) -> None:
        self.db = db
        self.cipher = registry["kloyst.cipher"]
        self.messaging = Messaging(db, registry)

    def save(self, *rows):
        with tenancy.unscoped(self.db):
            self.db.add_all(rows)
            self.db.commit()
        return rows[0]

    def shop(self, name: str = "Auto Co", *, funds: int = FUNDS, autoreplies: bool = True) -> Shop:
        """A vendor with the messaging plugins (and ``autoreplies``) on, ``funds`` in its wallet, a CONNECTED number."""
        account = self.messaging.vendor(name, funds=funds)
        if autoreplies:
            testing.enable_plugin(self.db, account.vendor_id, "autoreplies")
            self.db.commit()
        waba = self.messaging.waba(account.vendor_id)
        return Shop(account, waba, self.messaging.number(waba))

    def template(self, shop: Shop, name: str = "opening_hours", *, body: str = "We open at nine.",
                 **fields) -> MessageTemplate:
        return self.messaging.template(shop.waba, name=name, body=body, **fields)

    def contact(self, shop: Shop, e164: str = CUSTOMER, *, language: str | None = None,
                opted_out: bool = False) -> Contact:
        return self.messaging.contact(shop.vendor_id, e164, attributes={"language": language} if language else None,
                                      opted_out=opted_out)

    def replies(self, shop: Shop) -> list[dict]:
        """What the shop queued, oldest first: each message's payload, plus its row as ``_row``."""
        self.db.expire_all()
        with tenancy.unscoped(self.db):
            rows = self.db.scalars(select(MessageLog).where(MessageLog.vendor_id == shop.vendor_id)
                                   .order_by(MessageLog.created_at, MessageLog.id)).all()
        return [{**open_content(self.cipher, shop.vendor_id, row.content_enc), "_row": row} for row in rows]

    def texts(self, shop: Shop) -> list[str]:
        """The bodies of the shop's queued text messages, oldest first."""
        return [reply["text"]["body"] for reply in self.replies(shop) if reply.get("type") == "text"]


def sign(body: bytes) -> str:
    secret = testing.TEST_SETTINGS["kloyst.meta.app_secret"]
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def inbound(shop: Shop, text: str | None, *, at: dt.datetime, sender: str | None = CUSTOMER,
            bsuid: str | None = None, wamid: str | None = None, kind: str = "text", part: dict | None = None) -> bytes:
    """Meta's webhook for one customer message to ``shop``'s number (a text, unless ``kind``/``part`` say else).

    ``sender=None`` with a ``bsuid`` is a username user whose number Meta withholds.
    """
    message = {"id": wamid or f"wamid.in.{uuid.uuid4().hex}", "timestamp": str(int(at.timestamp())),
               "type": kind, kind: part if part is not None else {"body": text}}
    contact: dict = {"profile": {"name": "Ann Customer"}}
    if sender is not None:
        message["from"] = contact["wa_id"] = sender.lstrip("+")
    if bsuid is not None:
        message["from_user_id"] = contact["user_id"] = bsuid
    return json.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": shop.waba.meta_waba_id, "time": int(at.timestamp()),
        "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100000", "phone_number_id": shop.number.meta_phone_number_id},
            "contacts": [contact],
            "messages": [message]}}]}]}, separators=(",", ":")).encode()


def post_webhook(testapp, body: bytes) -> None:
    testapp.post(WEBHOOK_PATH, body, status=200,
                 headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body)})
