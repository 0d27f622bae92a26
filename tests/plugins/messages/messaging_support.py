"""Vendors that can send, built row by row with the models, for the messages plugin's tests.

:class:`Messaging` makes each piece (WABA, number, template, contact, message, dead letter) the way
the waba, templates and contacts plugins would leave it, so a test states only what it is
about; ``messaging.sending_vendor()`` is the usual whole: a vendor with the messaging plugins on, 100 USD
in its wallet on the development rate card (every send holds its price), one WABA, one CONNECTED number and
one APPROVED template ``order_update`` (``Hi {{1}}, order {{2}} shipped.``). Nothing here talks to Meta:
register numbers and templates in ``meta_sandbox`` when a test sends.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

from kloyst import testing
from kloyst.db import tenancy, utcnow
from kloyst.meta.payloads import template_payload
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.messages.content import seal_content
from kloyst_plugins.messages.models import STATUS_RANK, DeadLetter, MessageLog, MessageStatus
from kloyst_plugins.pricing import snapshots
from kloyst_plugins.templates.models import MessageTemplate
from kloyst_plugins.templates.services import set_components
from kloyst_plugins.waba.access import encrypt_waba_token
from kloyst_plugins.wallet.ledger import Ledger
from kloyst_plugins.waba.models import PhoneNumber, Waba

PLUGINS = ("contacts", "waba", "templates", "wallet", "pricing", "messages")
FUNDS = 100_000_000  # 100 USD in micro-units: every send holds its price
TEMPLATE = "order_update"
LANGUAGE = "en_US"
BODY = "Hi {{1}}, order {{2}} shipped."
RECIPIENT = "+12025550123"

_meta_ids = itertools.count(10**14 + uuid.uuid4().int % 10**13)


def meta_id() -> str:
    """A fresh 15-digit Meta id (WABAs, numbers and templates are unique across the platform)."""
    return str(next(_meta_ids))


@dataclass(frozen=True)
class SendingVendor:
    """A vendor ready to send: its owner's account (``.headers`` signs requests) and its rows."""

    account: testing.Account
    waba: Waba
    number: PhoneNumber
    template: MessageTemplate

    @property
    def headers(self) -> dict[str, str]:
        return self.account.headers

    @property
    def vendor_id(self) -> uuid.UUID:
        return self.account.vendor_id


class Messaging:
    """Builds messaging rows for a test, committed (savepoints under ``db``; real commits under ``committed_db``)."""

    def __init__(self, db, registry) -> None:
        self.db = db
        self.cipher = registry["kloyst.cipher"]
        self.hasher = registry["kloyst.mobile_hasher"]
        self.accounts = testing.AccountFactory(db, registry["kloyst.access_tokens"])

    def _save(self, *rows):
        with tenancy.unscoped(self.db):
            self.db.add_all(rows)
            self.db.commit()
        return rows[0]

    def vendor(self, name: str = "Sender Co", *, funds: int = FUNDS) -> testing.Account:
        """A vendor and its owner, with the messaging plugins on and ``funds`` micro-units in its wallet."""
        snapshots.load_development_card(self.db)
        account = self.accounts.vendor(name)
        for plugin in PLUGINS:
            testing.enable_plugin(self.db, account.vendor_id, plugin)
        if funds:
            Ledger(self.db.connection(), account.vendor_id).topup(funds, idempotency_key=f"test:{uuid.uuid4()}")
        self.db.commit()
        return account

    def waba(self, vendor_id: uuid.UUID, *, token: str = "sandbox-token") -> Waba:
        token_enc, kid = encrypt_waba_token(self.cipher, vendor_id, token)
        return self._save(Waba(vendor_id=vendor_id, meta_waba_id=meta_id(), name="SendingVendor WABA",
                               access_token_enc=token_enc, enc_kid=kid))

    def number(self, waba: Waba, *, status: str = "CONNECTED", throughput: int = 80) -> PhoneNumber:
        return self._save(PhoneNumber(vendor_id=waba.vendor_id, waba_id=waba.id, meta_phone_number_id=meta_id(),
                                      display_phone_number="+1 555 010 0000", status=status,
                                      throughput_mps=throughput))

    def template(self, waba: Waba, *, name: str = TEMPLATE, language: str = LANGUAGE, body: str = BODY,
                 header: dict | None = None, buttons: list | None = None, status: str = "APPROVED",
                 category: str = "UTILITY", parameter_format: str = "POSITIONAL",
                 variable_mapping: dict | None = None) -> MessageTemplate:
        """A template of ``waba`` as a sync stores it (variables parsed from the components)."""
        components = ([header] if header else []) + [{"type": "BODY", "text": body}]
        if buttons:
            components.append({"type": "BUTTONS", "buttons": buttons})
        template = MessageTemplate(vendor_id=waba.vendor_id, meta_waba_id=waba.meta_waba_id,
                                   meta_template_id=meta_id(), name=name, language=language, category=category,
                                   status=status, parameter_format=parameter_format,
                                   variable_mapping=variable_mapping or {})
        set_components(template, components)
        return self._save(template)

    def contact(self, vendor_id: uuid.UUID, e164: str = RECIPIENT, *, name: str | None = None,
                country: str | None = "US", attributes: dict | None = None, opted_out: bool = False) -> Contact:
        """A contact as the contacts API stores it: number and name sealed, looked up by keyed hash."""
        return self._save(Contact(
            vendor_id=vendor_id, mobile_hash=self.hasher(vendor_id, e164),
            mobile_enc=self.cipher.encrypt(e164, vendor_id=vendor_id, field="mobile"),
            name_enc=self.cipher.encrypt(name, vendor_id=vendor_id, field="name") if name else None,
            enc_kid=self.cipher.active_kid, country=country, calling_code=1, labels=[],
            attributes=attributes or {}, opted_out=opted_out, opted_out_at=utcnow() if opted_out else None))

    def message(self, number: PhoneNumber, *, to: str = RECIPIENT, template: str = TEMPLATE,
                status: MessageStatus = MessageStatus.QUEUED, **fields) -> MessageLog:
        """A message from ``number`` as the API queues it; ``status`` and ``fields`` set where it has got to."""
        message_id = uuid.uuid4()
        payload = template_payload(to, template, LANGUAGE, body=["Ann", "A-1"],
                                   biz_opaque_callback_data=str(message_id))
        content_enc, kid = seal_content(self.cipher, number.vendor_id, payload)
        return self._save(MessageLog(
            id=message_id, vendor_id=number.vendor_id, phone_number_id=number.id, template_name=template,
            template_language=LANGUAGE, category="UTILITY", recipient_hash=self.hasher(number.vendor_id, to),
            country="US", content_enc=content_enc, enc_kid=kid, status=status.value, status_rank=STATUS_RANK[status],
            **fields))

    def dead_letter(self, message: MessageLog, *, error_code: int = 131026, error_kind: str = "permanent",
                    reason: str = "Message undeliverable", **fields) -> DeadLetter:
        return self._save(DeadLetter(vendor_id=message.vendor_id, message_id=message.id, error_code=error_code,
                                     error_kind=error_kind, reason=reason, **fields))

    def failed(self, number: PhoneNumber, *, error_code: int = 131026, **fields) -> tuple[MessageLog, DeadLetter]:
        """A message the sender gave up on, with its dead letter (as the sender leaves them)."""
        message = self.message(number, status=MessageStatus.FAILED, error_code=error_code,
                               error_message="Message undeliverable", failed_at=utcnow(), attempts=1, **fields)
        return message, self.dead_letter(message, error_code=error_code)

    def sending_vendor(self, name: str = "Sender Co", *, funds: int = FUNDS) -> SendingVendor:
        account = self.vendor(name, funds=funds)
        waba = self.waba(account.vendor_id)
        return SendingVendor(account, waba, self.number(waba), self.template(waba))
