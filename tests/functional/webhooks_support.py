"""Builders for the webhook tests: vendors with numbers and messages (rows made with the models), and
Meta-shaped envelopes signed the way Meta signs them (HMAC-SHA256 of the exact bytes posted)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from kloyst import testing
from kloyst.db import tenancy
from kloyst.webhooks import WEBHOOK_PATH
from kloyst.webhooks.models import WebhookDelivery
from kloyst_plugins.messages.content import seal_content
from kloyst_plugins.messages.models import STATUS_RANK, MessageLog, MessageStatus
from kloyst_plugins.waba.access import encrypt_waba_token
from kloyst_plugins.waba.models import PhoneNumber, Waba

APP_SECRET = testing.TEST_SETTINGS["kloyst.meta.app_secret"]
PLUGINS = ("contacts", "waba", "templates", "messages")
RECIPIENT = "+12025550123"
_ids = itertools.count(2 * 10**14 + uuid.uuid4().int % 10**13)


def meta_id() -> str:
    return str(next(_ids))


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(testapp, body: bytes, *, signature: str | None = None, status: int = 200):
    """POST ``body`` to the webhook route, signed over these exact bytes unless ``signature`` is given."""
    return testapp.post(WEBHOOK_PATH, body, status=status, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": signature if signature is not None else sign(body)})


@dataclass(frozen=True)
class Line:
    """A vendor's sending number: what a webhook envelope names."""

    vendor_id: uuid.UUID
    number: PhoneNumber
    meta_waba_id: str

    @property
    def meta_phone_number_id(self) -> str:
        return self.number.meta_phone_number_id


def envelope(line: Line, value: dict, field: str = "messages") -> bytes:
    """One delivery as Meta writes it: escaped unicode (json.dumps' default), no spaces."""
    return json.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": line.meta_waba_id, "time": int(time.time()),
        "changes": [{"field": field, "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100000", "phone_number_id": line.meta_phone_number_id},
            **value}}]}]}, separators=(",", ":")).encode()


def status(wamid: str, name: str, *, at: int | None = None, opaque: str | None = None, errors: list | None = None,
           category: str | None = "utility") -> dict:
    result = {"id": wamid, "status": name, "timestamp": str(at or int(time.time())), "recipient_id": RECIPIENT[1:]}
    if opaque:
        result["biz_opaque_callback_data"] = opaque
    if errors:
        result["errors"] = errors
    elif category:
        result["pricing"] = {"billable": True, "pricing_model": "PMP", "category": category, "type": "regular"}
    return result


def statuses(line: Line, *items: dict) -> bytes:
    return envelope(line, {"statuses": list(items)})


def inbound(line: Line, text: str, *, sender: str = RECIPIENT, name: str = "Ann Customer", wamid: str | None = None,
            at: int | None = None) -> bytes:
    digits = sender.lstrip("+")
    return envelope(line, {"contacts": [{"profile": {"name": name}, "wa_id": digits}],
                           "messages": [{"from": digits, "id": wamid or f"wamid.in.{uuid.uuid4().hex}",
                                         "timestamp": str(at or int(time.time())), "type": "text",
                                         "text": {"body": text}}]})


def deliveries(db) -> list[WebhookDelivery]:
    db.expire_all()
    return list(db.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


class Builder:
    """Vendors, numbers and messages for a test, committed through ``db``."""

    def __init__(self, db, registry) -> None:
        self.db = db
        self.cipher = registry["kloyst.cipher"]
        self.hasher = registry["kloyst.mobile_hasher"]
        self.accounts = testing.AccountFactory(db, registry["kloyst.access_tokens"])

    def _save(self, row):
        with tenancy.unscoped(self.db):
            self.db.add(row)
            self.db.commit()
        return row

    def line(self, name: str = "Webhook Co", plugins=PLUGINS) -> Line:
        """A vendor with ``plugins`` on, its own WABA and one number."""
        account = self.accounts.vendor(name)
        for plugin in plugins:
            testing.enable_plugin(self.db, account.vendor_id, plugin)
        self.db.commit()
        token_enc, kid = encrypt_waba_token(self.cipher, account.vendor_id, "token")
        waba = self._save(Waba(vendor_id=account.vendor_id, meta_waba_id=meta_id(), name="WABA",
                               access_token_enc=token_enc, enc_kid=kid))
        number = self._save(PhoneNumber(vendor_id=account.vendor_id, waba_id=waba.id, meta_phone_number_id=meta_id(),
                                        display_phone_number="+1 555 010 0000"))
        return Line(account.vendor_id, number, waba.meta_waba_id)

    def message(self, line: Line, *, status: MessageStatus = MessageStatus.SENT, wamid: str | None = "new",
                **fields) -> MessageLog:
        """A message of ``line`` that got as far as ``status`` (SENT ones carry a fresh wamid)."""
        message_id = uuid.uuid4()
        payload = {"messaging_product": "whatsapp", "to": RECIPIENT, "type": "template",
                   "template": {"name": "order_update", "language": {"code": "en_US"}},
                   "biz_opaque_callback_data": str(message_id)}
        content_enc, kid = seal_content(self.cipher, line.vendor_id, payload)
        return self._save(MessageLog(
            id=message_id, vendor_id=line.vendor_id, phone_number_id=line.number.id, template_name="order_update",
            template_language="en_US", category="UTILITY", recipient_hash=self.hasher(line.vendor_id, RECIPIENT),
            content_enc=content_enc, enc_kid=kid, status=status.value, status_rank=STATUS_RANK[status],
            wamid=f"wamid.{uuid.uuid4().hex}" if wamid == "new" else wamid, **fields))

    def reload(self, row):
        self.db.expire_all()
        with tenancy.unscoped(self.db):
            return self.db.get(type(row), row.id)
