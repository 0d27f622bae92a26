"""Vendors with an inbox, and customers who write to them, for the conversations plugin's tests.

:class:`Inbox` makes the rows the waba, templates and contacts plugins would leave (a vendor with
the messaging plugins and ``conversations`` on, money in its wallet, one WABA, one CONNECTED number
also registered in the Meta sandbox, one APPROVED template) and delivers a customer's message the
way Meta does: a signed webhook posted to the app, drained, and its ``MessageReceived`` event run
through the outbox — the same path as production, so a conversation appears only if the event
handler makes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from kloyst import testing
from kloyst.db import tenancy, utcnow
from kloyst.sandbox.state import PhoneNumber as SandboxNumber
from kloyst.sandbox.state import Template as SandboxTemplate
from kloyst.webhooks import WEBHOOK_PATH
from kloyst.webhooks.drainer import drain_once
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.conversations.models import Conversation
from kloyst_plugins.pricing import snapshots
from kloyst_plugins.templates.models import MessageTemplate
from kloyst_plugins.templates.services import set_components
from kloyst_plugins.waba.access import encrypt_waba_token
from kloyst_plugins.waba.models import PhoneNumber, Waba
from kloyst_plugins.wallet.ledger import Ledger

PLUGINS = ("contacts", "waba", "templates", "wallet", "pricing", "messages", "media", "conversations")
APP_SECRET = testing.TEST_SETTINGS["kloyst.meta.app_secret"]
TEMPLATE, LANGUAGE, BODY = "order_update", "en_US", "Hi {{1}}, order {{2}} shipped."
CUSTOMER = "+12025550123"
CONVERSATIONS = "/v1/conversations"

_ids = itertools.count(3 * 10**14 + uuid.uuid4().int % 10**13)


def meta_id() -> str:
    return str(next(_ids))


def ago(**delta) -> dt.datetime:
    return utcnow() - dt.timedelta(**delta)


@dataclass(frozen=True)
class Line:
    """A vendor's owner and its sending number (the webhook envelope names the number)."""

    account: testing.Account
    waba: Waba
    number: PhoneNumber
    template: MessageTemplate

    @property
    def vendor_id(self) -> uuid.UUID:
        return self.account.vendor_id

    @property
    def headers(self) -> dict[str, str]:
        return self.account.headers


class Inbox:
    def __init__(self, db, registry, testapp, run_outbox, sandbox=None) -> None:
        self.db, self.registry, self.sandbox = db, registry, sandbox
        self._testapp, self._run_outbox = testapp, run_outbox
        self.cipher = registry["kloyst.cipher"]
        self.hasher = registry["kloyst.mobile_hasher"]
        self.accounts = testing.AccountFactory(db, registry["kloyst.access_tokens"])

    def _save(self, row):
        with tenancy.unscoped(self.db):
            self.db.add(row)
            self.db.commit()
        return row

    def line(self, name: str = "Inbox Co", *, plugins=PLUGINS) -> Line:
        snapshots.load_development_card(self.db)
        account = self.accounts.vendor(name)
        for plugin in plugins:
            testing.enable_plugin(self.db, account.vendor_id, plugin)
        Ledger(self.db.connection(), account.vendor_id).topup(100_000_000, idempotency_key=f"test:{uuid.uuid4()}")
        self.db.commit()
        token_enc, kid = encrypt_waba_token(self.cipher, account.vendor_id, "sandbox-token")
        waba = self._save(Waba(vendor_id=account.vendor_id, meta_waba_id=meta_id(), name="Inbox WABA",
                               access_token_enc=token_enc, enc_kid=kid))
        number = self._save(PhoneNumber(vendor_id=account.vendor_id, waba_id=waba.id, meta_phone_number_id=meta_id(),
                                        display_phone_number="+1 555 010 0000", status="CONNECTED",
                                        throughput_mps=80))
        template = MessageTemplate(vendor_id=account.vendor_id, meta_waba_id=waba.meta_waba_id,
                                   meta_template_id=meta_id(), name=TEMPLATE, language=LANGUAGE, category="UTILITY",
                                   status="APPROVED", parameter_format="POSITIONAL", variable_mapping={})
        set_components(template, [{"type": "BODY", "text": BODY}])
        self._save(template)
        if self.sandbox is not None:
            self.sandbox.state.add_number(SandboxNumber(id=number.meta_phone_number_id, waba_id=waba.meta_waba_id,
                                                        display_phone_number="15550100000", throughput=80))
            self.sandbox.state.add_template(waba.meta_waba_id, SandboxTemplate(
                id=template.meta_template_id, name=TEMPLATE, language=LANGUAGE, category="UTILITY",
                components=[{"type": "BODY", "text": BODY}], status="APPROVED", parameter_format="POSITIONAL"))
        return Line(account, waba, number, template)

    def contact(self, line: Line, e164: str = CUSTOMER, *, opted_out: bool = False) -> Contact:
        vendor_id = line.vendor_id
        return self._save(Contact(
            vendor_id=vendor_id, mobile_hash=self.hasher(vendor_id, e164),
            mobile_enc=self.cipher.encrypt(e164, vendor_id=vendor_id, field="mobile"),
            enc_kid=self.cipher.active_kid, country="US", calling_code=1, labels=[], attributes={},
            opted_out=opted_out, opted_out_at=utcnow() if opted_out else None))

    def _release(self) -> None:
        """End the test session's transaction: on SQLite a reading test must not hold the one write lock while the
        application it calls writes (on PostgreSQL this commits a savepoint of the rolled-back test transaction)."""
        self.db.commit()

    @property
    def testapp(self):
        self._release()
        return self._testapp

    def run_outbox(self) -> int:
        self._release()
        return self._run_outbox()

    def envelope(self, line: Line, value: dict) -> bytes:
        return json.dumps({"object": "whatsapp_business_account", "entry": [{
            "id": line.waba.meta_waba_id, "time": int(time.time()),
            "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550100000",
                             "phone_number_id": line.number.meta_phone_number_id},
                **value}}]}]}, separators=(",", ":")).encode()

    def deliver(self, body: bytes) -> None:
        """Post ``body`` as Meta would (signed), drain it, and run the outbox (domain events, tasks)."""
        self._release()
        signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        self.testapp.post(WEBHOOK_PATH, body, status=200, headers={"Content-Type": "application/json",
                                                                    "X-Hub-Signature-256": signature})
        drain_once(self.registry)
        self._run_outbox()

    def customer_writes(self, line: Line, message: dict | str = "Hello, where is my order?", *,
                        sender: str = CUSTOMER, at: dt.datetime | None = None, wamid: str | None = None) -> str:
        """The customer ``sender`` sends ``message`` (a text, or a whole Meta message object); its wamid."""
        wamid = wamid or f"wamid.in.{uuid.uuid4().hex}"
        body = {"type": "text", "text": {"body": message}} if isinstance(message, str) else message
        digits = sender.lstrip("+")
        self.deliver(self.envelope(line, {
            "contacts": [{"profile": {"name": "Ann Customer"}, "wa_id": digits}],
            "messages": [{"from": digits, "id": wamid, "timestamp": str(int((at or utcnow()).timestamp())),
                          **body}]}))
        return wamid

    def status(self, line: Line, wamid: str, name: str, *, errors: list | None = None) -> None:
        value = {"id": wamid, "status": name, "timestamp": str(int(time.time())), "recipient_id": CUSTOMER[1:]}
        if errors:
            value["errors"] = errors
        self.deliver(self.envelope(line, {"statuses": [value]}))

    def conversation(self, line: Line, contact_id: uuid.UUID | None = None) -> Conversation | None:
        self.db.expire_all()
        with tenancy.unscoped(self.db):
            query = select(Conversation).where(Conversation.vendor_id == line.vendor_id)
            if contact_id is not None:
                query = query.where(Conversation.contact_id == contact_id)
            return self.db.scalars(query).one_or_none()

    def conversations(self, line: Line) -> list[Conversation]:
        self.db.expire_all()
        with tenancy.unscoped(self.db):
            return list(self.db.scalars(select(Conversation).where(Conversation.vendor_id == line.vendor_id)))

    # -- the API --------------------------------------------------------------------------------------------------

    def get(self, line: Line, path: str = "", status: int = 200, **params):
        return self.testapp.get(CONVERSATIONS + path, params=params, headers=line.headers, status=status).json

    def post(self, line: Line, path: str, body: dict | None = None, *, status: int = 200, key: str | None = None):
        headers = {**line.headers, **({"Idempotency-Key": key} if key else {})}
        return self.testapp.post_json(CONVERSATIONS + path, body or {}, headers=headers, status=status)

    def reply(self, line: Line, conversation_id, body: dict, *, status: int = 202, key: str | None = None):
        return self.post(line, f"/{conversation_id}/messages", body, status=status, key=key)
