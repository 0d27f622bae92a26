"""Queueing a template message, and putting a dead letter back in the queue: the rules both go through.

A send is checked whole before anything is written, so a refused request leaves no row and
no outbox event and nothing reaches Meta:

* the number is the vendor's (another vendor's is "not found") and in service (``CONNECTED``);
* the recipient is a valid number, a WhatsApp business-scoped user id (BSUID), or one of the
  vendor's contacts; a recipient known as a contact who opted out is never queued, however it is
  named. A contact without a known number, and a BSUID, are addressed by Meta's ``recipient``
  field instead of ``to`` (:func:`addressed`); an authentication template to one is refused here
  with a 422 ``bsuid_recipient_unsupported``, because Meta refuses it (error 131062);
* the template exists in the number's WABA, is APPROVED, and the parameters fit its
  variables exactly (the templates plugin's ``validate_send``, naming each problem).

Then, in the caller's transaction, one ``message_log`` row (QUEUED, content sealed), the hold that
pays for it and one ``messages.queued`` outbox event: the sender sees all three or none. The
message id is chosen before the payload is built because Meta echoes it back
(``biz_opaque_callback_data``), which is how a send Meta accepted before a crash is recognised.

**Every send is paid for before it is queued**, exactly as a campaign's message is: the pricing
plugin prices one message of the template's category to the recipient's country (the vendor's rate
card, tiers and pricing rules; quotation-level charges such as a minimum charge are for quotations,
not single sends), and the wallet holds that price under the reference ``message:<id>``. The
message carries its price and hold, so the sender's outcome settles it through
``kloyst_messages_settled`` like any priced message: captured when Meta accepts it, released when it
never went out, refunded when it was sent and then failed. A wallet that cannot pay is a 402
``insufficient_funds`` with the amounts, and the request leaves nothing behind (the hold comes after
the message row in one transaction), so Meta is never called. A requeued dead letter pays again
under a new hold: its first hold was released when it failed.

**Idempotency** (Stripe's rules, :mod:`kloyst.http.idempotency`): a request with an ``Idempotency-Key`` is
stored with its key and the SHA-256 of its canonical body. The same key and body again get
the same message back, never a second row; the same key with another body is a 422. Two
concurrent requests with one key meet at the unique ``(vendor_id, idempotency_key)`` index:
the second insert waits for the first transaction, fails in its savepoint, and answers with
the winner's message. Refused requests store nothing, so a client may fix one and retry it
under the same key.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kloyst.api import Conflict, FieldCipher, MobileHasher, new_id, NotFound, tenancy, Unprocessable, utcnow
from kloyst_plugins.contacts.api import Contact
from kloyst_plugins.contacts.api import bsuid_country, ContactService, looks_like_bsuid, read_bsuid, read_phone
from kloyst_plugins.messages import content, dispatch
from kloyst_plugins.messages.models import STATUS_RANK, DeadLetter, MessageLog, MessageStatus
from kloyst_plugins.pricing.api import QuotationService
from kloyst_plugins.templates.api import (
    Resolved,
    TemplateParameterError,
    build_payload,
    resolve_variables,
    TemplateNotFound,
    find_sendable,
)
from kloyst_plugins.templates.api import MessageTemplate
from kloyst_plugins.waba.api import PhoneNumber
from kloyst_plugins.waba.api import meta_waba_id_of
from kloyst_plugins.waba.api import CONNECTED
from kloyst_plugins.wallet.api import Ledger


def hold_reference(message_id: uuid.UUID) -> str:
    """The wallet hold of a single send (a campaign's is ``campaign:<id>``)."""
    return f"message:{message_id}"


def _no_quotation(*args, **kwargs):
    raise RuntimeError("pricing one message never creates a quotation, so it has nothing to enqueue")


def request_hash(body: Any) -> str:
    """SHA-256 of the body as canonical JSON: key order and spacing do not make two requests differ."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Idempotency:
    key: str
    request_hash: str


@dataclass(frozen=True)
class TemplateSend:
    """One template message to queue, as a client asked for it (see :class:`.schemas.MessageCreate`)."""

    phone_number_id: uuid.UUID
    template_name: str
    template_language: str
    to: str | None = None
    contact_id: uuid.UUID | None = None
    body: Any = None
    header: Any = None
    buttons: tuple = ()
    variables: dict | None = None  # fill from the contact instead of body/header
    use_parameters: bool = False  # body/header/buttons were given, even if empty


@dataclass(frozen=True)
class Recipient:
    e164: str  # or, when ``field`` is "recipient", the BSUID of a user whose number Kloyst does not know
    country: str | None
    mobile_hash: bytes  # the keyed hash of the number, or of the BSUID
    contact: Contact | None
    field: str = "to"  # Meta's addressee field: "to" (a number) or "recipient" (a BSUID)


AUTHENTICATION = "AUTHENTICATION"


def addressed(payload: dict, field: str) -> dict:
    """Meta's send body addressed by ``field``: "to" leaves it as built; "recipient" moves the address there.

    Meta's ``recipient`` takes a business-scoped user id (BSUID) or parent BSUID; with both, ``to``
    wins, so a BSUID send carries no ``to``. The key keeps its place, so the JSON differs only in the name.
    """
    if field == "to":
        return payload
    return {("recipient" if key == "to" else key): value for key, value in payload.items()}


@dataclass(frozen=True)
class Queued:
    message: MessageLog
    replayed: bool  # an earlier request with the same Idempotency-Key made it


class MessageService:
    """Queueing and requeueing for one vendor, in the caller's session and transaction.

    The session must be scoped to that vendor (a request's, or a task's), so the number,
    contact and template lookups here only ever find the vendor's own rows.
    """

    def __init__(self, db: Session, *, vendor_id: uuid.UUID, cipher: FieldCipher, hasher: MobileHasher,
                 pricing: QuotationService) -> None:
        if tenancy.current_scope(db) != vendor_id:
            raise tenancy.TenancyError("MessageService needs a session scoped to the message's vendor")
        self.db = db
        self.vendor_id = vendor_id
        self.cipher = cipher
        self.pricing = pricing
        self.contacts = ContactService(db, vendor_id=vendor_id, cipher=cipher, hasher=hasher)

    @classmethod
    def for_registry(cls, db: Session, registry, *, vendor_id: uuid.UUID) -> MessageService:
        return cls(db, vendor_id=vendor_id, cipher=registry["kloyst.cipher"], hasher=registry["kloyst.mobile_hasher"],
                   pricing=QuotationService(db, vendor_id=vendor_id, registry=registry, enqueue=_no_quotation))

    @classmethod
    def for_request(cls, request) -> MessageService:
        return cls.for_registry(request.db, request.registry, vendor_id=request.vendor_id)

    def recipient_number(self, message: MessageLog) -> str:
        """The number a message goes to, read from its sealed content (only the payload holds it)."""
        payload = content.open_content(self.cipher, self.vendor_id, message.content_enc)
        return payload.get("to") or payload["recipient"]  # "recipient": a BSUID (see addressed())

    def queue(self, send: TemplateSend, *, idempotency: Idempotency | None = None) -> Queued:
        """Check ``send`` whole, then queue it with its doorbell; a known key answers with its message as it is now."""
        if idempotency is not None and (earlier := self._by_key(idempotency.key)) is not None:
            return self._replay(earlier, idempotency)
        number = self.sending_number(send.phone_number_id)
        recipient = self._recipient(send)
        template = self._template(number, send.template_name, send.template_language)
        if recipient.field == "recipient" and template.category == AUTHENTICATION:
            raise Unprocessable("authentication templates cannot be sent to a WhatsApp business-scoped user id (Meta's "
                                "error 131062): this contact is known only by its BSUID; add its phone number to "
                                "send it an authentication template", code="bsuid_recipient_unsupported",
                                details={"fields": [{"field": "template", "problem": "AUTHENTICATION needs a number"}],
                                         "meta_error_code": 131062})
        price = self.unit_price(recipient.country, template.category)
        message_id = new_id()
        payload = self._payload(send, recipient, template, message_id)
        content_enc, enc_kid = content.seal_content(self.cipher, self.vendor_id, payload)
        message = MessageLog(
            id=message_id, vendor_id=self.vendor_id, phone_number_id=number.id,
            contact_id=recipient.contact.id if recipient.contact is not None else None,
            template_id=template.id, template_name=template.name, template_language=template.language,
            category=template.category, recipient_hash=recipient.mobile_hash, country=recipient.country,
            content_enc=content_enc, enc_kid=enc_kid, status=MessageStatus.QUEUED.value,
            status_rank=STATUS_RANK[MessageStatus.QUEUED], next_attempt_at=utcnow(),
            idempotency_key=idempotency.key if idempotency else None,
            request_hash=idempotency.request_hash if idempotency else None, price_micros=price)
        try:
            with self.db.begin_nested():
                self.db.add(message)
                self.db.flush()
        except IntegrityError:
            # A concurrent request with the same key committed first: its message is the answer.
            winner = self._by_key(idempotency.key) if idempotency is not None else None
            if winner is None:
                raise
            return self._replay(winner, idempotency)
        # After the row, so a send that lost the idempotency race above never held money.
        self._hold(message, key=f"message:{message.id}:hold")
        dispatch.notify_queued(self.db, self.vendor_id, [number.id])
        return Queued(message, replayed=False)

    def unit_price(self, country: str | None, category: str) -> int:
        """What one message of ``category`` to ``country`` costs this vendor now (the pricing plugin's answer).

        A free-form message inside the customer-service window (category ``SERVICE``,
        ``pricing.api.SERVICE``) costs 0: it is queued unpriced and holds nothing.
        """
        return self.pricing.message_price(country, category)

    def _hold(self, message: MessageLog, *, key: str) -> None:
        """Hold ``message.price_micros`` and name the hold on the message (402 when the wallet cannot pay).

        A price of zero (a pricing rule gave the message away) holds nothing and leaves the message
        unpriced: there is nothing to capture.
        """
        if not message.price_micros:
            message.price_micros, message.hold_id = None, None
        else:
            hold = Ledger(self.db.connection(), self.vendor_id).hold(
                message.price_micros, idempotency_key=key, reference=hold_reference(message.id))
            message.hold_id = hold.id
        self.db.flush()

    def sending_number(self, phone_number_id: uuid.UUID) -> PhoneNumber:
        """The vendor's number, if Meta has it in service; a number that cannot send is refused up front."""
        number = self.db.get(PhoneNumber, phone_number_id)
        if number is None:
            raise NotFound("phone number not found", code="phone_number_not_found",
                           details={"phone_number_id": str(phone_number_id)})
        if number.status != CONNECTED:
            raise Conflict(f"phone number {number.display_phone_number} is {number.status}, not {CONNECTED}: it "
                           "cannot send until Meta reports it connected again", code="phone_number_unavailable",
                           details={"phone_number_id": str(number.id), "status": number.status})
        return number

    def requeue(self, dead_letter: DeadLetter) -> MessageLog:
        """Send a dead letter's message again, through the same gates as a new send.

        The dead letter keeps why it failed; the message loses its error and starts a fresh
        round of retries. Both rows are locked, so two requeues of one letter cannot both win.
        """
        letter = self.db.scalars(select(DeadLetter).where(DeadLetter.id == dead_letter.id).with_for_update()
                                 .execution_options(populate_existing=True)).one()
        if letter.requeued_at is not None:
            raise Conflict(f"this dead letter was requeued at {letter.requeued_at.isoformat()}",
                           code="already_requeued", details={"requeued_at": letter.requeued_at.isoformat()})
        message = self.db.scalars(select(MessageLog).where(MessageLog.id == letter.message_id).with_for_update()
                                  .execution_options(populate_existing=True)).one()
        if message.status != MessageStatus.FAILED.value:
            raise Conflict(f"message {message.id} is {message.status} now, not FAILED: there is nothing to requeue",
                           code="message_not_failed", details={"status": message.status})
        if message.campaign_id is not None:
            # A campaign's money is its own hold, released when the message failed: its campaign pays again.
            raise Conflict(f"message {message.id} belongs to campaign {message.campaign_id}: retry it through its "
                           "campaign (POST /campaigns/{id}/retry-failed), which pays for it again",
                           code="priced_message", details={"campaign_id": str(message.campaign_id)})
        self.sending_number(message.phone_number_id)
        if message.contact_id is not None:
            contact = self.db.get(Contact, message.contact_id)
            if contact is not None and contact.opted_out:
                raise _opted_out(contact)
        message.status, message.status_rank = MessageStatus.QUEUED.value, STATUS_RANK[MessageStatus.QUEUED]
        message.next_attempt_at, message.lease_until, message.retry_count = utcnow(), None, 0
        message.error_code = message.error_subcode = message.error_message = message.failed_at = None
        letter.requeued_at = utcnow()
        # Its first hold was released when it failed: this round pays again, under a hold of its own.
        message.price_micros = self.unit_price(message.country, message.category)
        self._hold(message, key=f"dead-letter:{letter.id}:requeue")
        dispatch.notify_queued(self.db, self.vendor_id, [message.phone_number_id])
        return message

    def _by_key(self, key: str) -> MessageLog | None:
        return self.db.scalars(select(MessageLog).where(MessageLog.idempotency_key == key)).one_or_none()

    @staticmethod
    def _replay(earlier: MessageLog, idempotency: Idempotency) -> Queued:
        if earlier.request_hash != idempotency.request_hash:
            raise Unprocessable("Idempotency-Key reused with different parameters: a key names one request; "
                                "send a new key for a different message", code="idempotency_key_reused",
                                field="Idempotency-Key", details={"message_id": str(earlier.id)})
        return Queued(earlier, replayed=True)

    def _recipient(self, send: TemplateSend) -> Recipient:
        if send.contact_id is not None:
            contact = self.db.get(Contact, send.contact_id)
            if contact is None:
                raise NotFound("contact not found", code="contact_not_found",
                               details={"contact_id": str(send.contact_id)})
            to = self.contacts.addressee(contact)
            address, field, country = to.value, to.field, contact.country
        elif looks_like_bsuid(send.to or ""):  # a WhatsApp user known by BSUID (US.1349…), not a number
            address, field = read_bsuid(send.to or "", field="to"), "recipient"
            contact = self.contacts.find_by_bsuid(address)
            country = contact.country if contact is not None else bsuid_country(address)
        else:
            phone = read_phone(send.to, None, field="to")
            address, field, country = phone.e164, "to", phone.region
            contact = self.contacts.find_by_phone(phone)
        if contact is not None and contact.opted_out:
            raise _opted_out(contact)
        known_by = self.contacts.mobile_hash(address) if field == "to" else self.contacts.bsuid_hash(address)
        return Recipient(address, country, known_by, contact, field)

    def _template(self, number: PhoneNumber, name: str, language: str) -> MessageTemplate:
        """The APPROVED template of the number's WABA (not approved: the templates plugin's 422)."""
        try:
            return find_sendable(self.db, meta_waba_id_of(self.db, number), name, language)
        except TemplateNotFound as exc:
            # A 404 names the URL's resource; here the template is a field of the body.
            raise Unprocessable(f"template: {exc.message}", code=exc.code,
                                details={"fields": [{"field": "template", "problem": exc.message}]}) from None

    def _payload(self, send: TemplateSend, recipient: Recipient, template: MessageTemplate,
                 message_id: uuid.UUID) -> dict:
        """Meta's send body, once the values fit the template (else a 422 listing every problem)."""
        body, header = send.body, send.header
        field = "parameters"
        try:
            # Without parameters, a contact's template is filled from the contact: by the send's
            # variables, else by the mapping stored on the template.
            if not send.use_parameters and (send.variables is not None or (
                    recipient.contact is not None and template.variable_mapping)):
                field = "variables"
                resolved = self._resolve(template, send.variables, recipient.contact)
                body, header = resolved.body, resolved.header
            return addressed(build_payload(template, recipient.e164, body=body, header=header, buttons=send.buttons,
                                           biz_opaque_callback_data=str(message_id)), recipient.field)
        except TemplateParameterError as exc:
            raise exc.as_api_error(field) from None

    def _resolve(self, template: MessageTemplate, variables: dict | None,
                 contact: Contact | None) -> Resolved:
        if contact is None:
            raise Unprocessable("variables are filled from a contact, and this number is not one of your contacts; "
                                "send 'parameters' instead, or add the contact first", code="variables_need_contact")
        fields = {"name": self.contacts.decrypt_name(contact), "mobile": self.contacts.decrypt_mobile(contact),
                  "country": contact.country, "attributes": contact.attributes or {}}
        return resolve_variables(template, variables, fields)


def _opted_out(contact: Contact) -> Conflict:
    return Conflict("contact opted out: nothing is sent to a contact who opted out (opt them in first, if they "
                    "asked to be messaged again)", code="contact_opted_out", details={"contact_id": str(contact.id)})


# -- answers ------------------------------------------------------------------------------------------------------

REPLAYED_HEADER = "Idempotent-Replayed"  # on an answer replayed for an Idempotency-Key (as Stripe's)


def message_json(message: MessageLog, service: MessageService) -> dict:
    """A message as the API answers it (``MessageAnswer``): the recipient's number read from its sealed content."""
    return {"id": message.id, "status": message.status, "phone_number_id": message.phone_number_id,
            "to": service.recipient_number(message), "country": message.country, "contact_id": message.contact_id,
            "campaign_id": message.campaign_id,
            "template": {"id": message.template_id, "name": message.template_name,
                         "language": message.template_language, "category": message.category},
            "wamid": message.wamid, "attempts": message.attempts, "retry_count": message.retry_count,
            "next_attempt_at": message.next_attempt_at, "duplicate_sends": message.duplicate_sends,
            "error_code": message.error_code, "error_subcode": message.error_subcode,
            "error_message": message.error_message, "pricing_category": message.pricing_category,
            "billable": message.billable, "idempotency_key": message.idempotency_key,
            "created_at": message.created_at, "updated_at": message.updated_at, "sent_at": message.sent_at,
            "delivered_at": message.delivered_at, "read_at": message.read_at, "failed_at": message.failed_at}
