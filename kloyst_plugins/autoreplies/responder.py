"""Answering customers: what one domain event makes the plugin send, exactly once.

Three events reach it (``plugin.py`` subscribes to them), each after the change that caused it committed:

* ``MessageReceived``: the best keyword rule (:mod:`.matching`) answers with its text or template;
  with no rule, the away message answers outside business hours (:mod:`.hours`), at most once per
  conversation (contact × number) per ``away_interval_hours``. An ``opt_in`` rule (START) opts an
  opted-out contact back in through the contacts plugin, which records ``ContactOptedIn``.
* ``ContactOptedOut`` with source ``webhook`` (the customer wrote STOP): the opt-out confirmation.
* ``ContactOptedIn`` with source ``webhook`` (an ``opt_in`` rule): the opt-in confirmation.
  Opt-outs and opt-ins made through the API are the vendor's doing, not the customer's: no message.

**Once.** Delivery is at least once, so before anything is queued the trigger is claimed: an
``autoreply_reply`` row keyed ``inbound:<inbound id>`` or ``event:<event id>``, unique per vendor, in a
savepoint of the delivery's transaction. A redelivery (or a second worker delivering the same event
at the same time: it waits on the unique index, then fails) finds the key taken and sends nothing.
The claim and the queued message commit together, or neither does. The queued message also carries
the idempotency key ``autoreply:<trigger>``, the messages plugin's own guard.

**Never**: to an opted-out contact (but the confirmation of that very opt-out, which answers the
customer's STOP and which Meta's opt-out guidance expects; it says nothing else), to a message older than
the 24-hour customer-service window, to a sender without a contact, to one of the vendor's own numbers,
or to reactions and system notices.

**Failures** of an answer that cannot be queued — the wallet cannot pay a template, the template is no
longer APPROVED, the number is disconnected — are API errors of the messages plugin: the answer's
savepoint is rolled back (no message, no hold), the claim stays with status ``failed`` and the error,
the rule's ``failures`` and ``last_error`` count it, and a warning is logged. The event is not retried:
retrying would only fail again, and a late answer is worse than none. Anything else (the database
going away) raises, the delivery's transaction rolls back with the claim, and the event comes again.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import cast

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kloyst.api import ApiError, events
from kloyst_plugins.autoreplies import hours, matching, services
from kloyst_plugins.autoreplies.models import (AutoReply, AutoReplyConversation, AutoReplyRule, ReplyKind,
                                               ReplyStatus, RuleAction)
from kloyst_plugins.contacts.api import Actor, Contact, ContactService, ContactSource
from kloyst_plugins.messages.api import (Idempotency, inbound_json, latest_inbound, MessageService, queue_reply,
                                         Reply, request_hash, TemplateSend)
from kloyst_plugins.waba.api import PhoneNumber

log = logging.getLogger(__name__)

WINDOW = dt.timedelta(hours=24)  # Meta's customer-service window: free-form replies only inside it
# Not a customer speaking: nothing to answer.
IGNORED_TYPES = frozenset({"reaction", "system", "unsupported", "ephemeral", "errors"})
CUSTOMER = Actor(ContactSource.WEBHOOK)
LANGUAGE_ATTRIBUTE = "language"  # the contact attribute a rule's language is compared with


@dataclass(frozen=True)
class Outgoing:
    """What to send: a text or an APPROVED template (name, language)."""

    text: str | None = None
    template: tuple[str, str] | None = None


class _Lost(Exception):
    """A claim's guard said no (another message got the away slot first)."""


class Responder:
    """Decides and queues the auto-replies of one vendor, in the event delivery's session and transaction."""

    def __init__(self, db: Session, registry, *, vendor_id: uuid.UUID, now: dt.datetime) -> None:
        self.db = db
        self.registry = registry
        self.vendor_id = vendor_id
        self.now = now
        self.cipher = registry["kloyst.cipher"]
        self.contacts = ContactService(db, vendor_id=vendor_id, cipher=self.cipher,
                                       hasher=registry["kloyst.mobile_hasher"])

    def handle(self, event) -> AutoReply | None:
        """Answer the domain event ``event`` (a ``DomainEvent``); the claim row when something was decided."""
        data = event.data
        if isinstance(data, events.MessageReceived):
            return self.message_received(data)
        if isinstance(data, events.ContactOptedOut) and data.source == ContactSource.WEBHOOK.value:
            return self.confirm(event.id, data.contact_id, opted_out=True)
        if isinstance(data, events.ContactOptedIn) and data.source == ContactSource.WEBHOOK.value:
            return self.confirm(event.id, data.contact_id, opted_out=False)
        return None

    # -- a customer's message --------------------------------------------------------------------------------

    def message_received(self, received: events.MessageReceived) -> AutoReply | None:
        if received.opt_out or received.contact_id is None or received.type in IGNORED_TYPES:
            return None  # an opt-out is confirmed on its own event; no contact, no conversation
        if received.sent_at < self.now - WINDOW:
            return None
        contact = self.db.get(Contact, received.contact_id)
        message = inbound_json(self.db, self.cipher, self.vendor_id, [received.inbound_id]).get(received.inbound_id)
        if contact is None or message is None or self._from_own_number(message):
            return None
        trigger = f"inbound:{received.inbound_id}"
        rule = self._rule(said(message), contact)
        if contact.opted_out:
            if rule is None or rule.action != RuleAction.OPT_IN.value:
                return None
            claim = self._claim(trigger, ReplyKind.OPTED_IN, received, rule=rule)
            if claim is not None:
                claim.status = ReplyStatus.DONE.value
                self._hit(rule)
                self.contacts.opt_in(contact, actor=CUSTOMER)  # records ContactOptedIn: its confirmation follows
            return claim
        if rule is not None:
            if rule.action == RuleAction.OPT_IN.value:
                return None  # already opted in: nothing to do
            claim = self._claim(trigger, ReplyKind.KEYWORD, received, rule=rule)
            if claim is not None:
                self._hit(rule)
                template = ((rule.template_name, rule.template_language)
                            if rule.template_name and rule.template_language else None)
                self._send(claim, Outgoing(rule.reply_text, template), contact, received.phone_number_id, rule=rule)
            return claim
        settings = services.settings_of(self.db)
        if not settings.away_enabled or hours.is_open(settings.business_hours or {}, settings.time_zone,
                                                      received.sent_at):
            return None
        interval = dt.timedelta(hours=settings.away_interval_hours)
        claim = self._claim(trigger, ReplyKind.AWAY, received,
                            guard=lambda: self._away_slot(contact.id, received.phone_number_id, interval))
        if claim is not None:
            self._send(claim, Outgoing(settings.away_text), contact, received.phone_number_id)
        return claim

    def _rule(self, text: str, contact: Contact) -> AutoReplyRule | None:
        if not text:
            return None
        exact, prefixes = matching.candidates(text)
        keywords = {exact, *prefixes} - {""}
        if not keywords:
            return None
        query = select(AutoReplyRule).where(AutoReplyRule.enabled.is_(True), AutoReplyRule.keyword.in_(keywords))
        if contact.opted_out:
            query = query.where(AutoReplyRule.action == RuleAction.OPT_IN.value)
        language = (contact.attributes or {}).get(LANGUAGE_ATTRIBUTE)
        found = matching.best(self.db.scalars(query), text, language if isinstance(language, str) else None)
        return found  # type: ignore[return-value]

    def _from_own_number(self, message: dict) -> bool:
        """Whether the message comes from one of the vendor's own numbers (never answer ourselves)."""
        sender = "".join(ch for ch in str(message.get("from") or "") if ch.isdigit())
        if not sender:
            return False
        own = self.db.scalars(select(PhoneNumber.display_phone_number)).all()
        return any(sender == "".join(ch for ch in str(number or "") if ch.isdigit()) for number in own)

    def _away_slot(self, contact_id: uuid.UUID, phone_number_id: uuid.UUID, interval: dt.timedelta) -> bool:
        """Take the conversation's away slot: True if no away message went out in the last ``interval``.

        A conditional UPDATE: of two messages handled at once, the second waits for the first's row
        lock (PostgreSQL) or for the one writer (SQLite), then finds the slot taken.
        """
        conversation = AutoReplyConversation.__table__
        try:
            with self.db.begin_nested():
                self.db.add(AutoReplyConversation(vendor_id=self.vendor_id, contact_id=contact_id,
                                                  phone_number_id=phone_number_id))
                self.db.flush()
        except IntegrityError:
            pass  # the conversation has its row already
        taken = cast(CursorResult, self.db.execute(
            update(AutoReplyConversation)
            .where(AutoReplyConversation.contact_id == contact_id,
                   AutoReplyConversation.phone_number_id == phone_number_id,
                   (conversation.c.away_sent_at.is_(None)) | (conversation.c.away_sent_at <= self.now - interval))
            .values(away_sent_at=self.now).execution_options(synchronize_session=False)))
        return taken.rowcount == 1

    # -- opt-out and opt-in confirmations -------------------------------------------------------------------

    def confirm(self, event_id: int, contact_id: uuid.UUID, *, opted_out: bool) -> AutoReply | None:
        settings = services.settings_of(self.db)
        enabled, text = ((settings.opt_out_confirmation, settings.opt_out_text) if opted_out else
                         (settings.opt_in_confirmation, settings.opt_in_text))
        contact = self.db.get(Contact, contact_id)
        if not enabled or contact is None or contact.opted_out != opted_out:
            return None  # turned off, gone, or changed its mind again since: confirm nothing stale
        inbound = self._last_inbound(contact_id)
        if inbound is None or inbound.sent_at < self.now - WINDOW:
            return None
        kind = ReplyKind.OPT_OUT if opted_out else ReplyKind.OPT_IN
        claim = self._claim(f"event:{event_id}", kind, None, contact_id=contact_id,
                            phone_number_id=inbound.phone_number_id, inbound_id=inbound.id, event_id=event_id)
        if claim is not None:
            self._send(claim, Outgoing(text), contact, inbound.phone_number_id)
        return claim

    def _last_inbound(self, contact_id: uuid.UUID):
        """The contact's last message to any of the vendor's numbers (one indexed look-up per number)."""
        found = [latest_inbound(self.db, contact_id, number_id)
                 for number_id in self.db.scalars(select(PhoneNumber.id))]
        return max((m for m in found if m is not None), key=lambda m: m.sent_at, default=None)

    # -- claiming and sending --------------------------------------------------------------------------------

    def _claim(self, trigger: str, kind: ReplyKind, received: events.MessageReceived | None, *,
               rule: AutoReplyRule | None = None, guard=None, **fields) -> AutoReply | None:
        """The claim of ``trigger`` (None when it was claimed before, or ``guard`` said no)."""
        if received is not None:
            fields |= {"contact_id": received.contact_id, "phone_number_id": received.phone_number_id,
                       "inbound_id": received.inbound_id}
        row = AutoReply(vendor_id=self.vendor_id, trigger=trigger, kind=kind.value, status=ReplyStatus.QUEUED.value,
                        rule_id=rule.id if rule is not None else None, created_at=self.now, **fields)
        try:
            with self.db.begin_nested():
                self.db.add(row)
                self.db.flush()
                if guard is not None and not guard():
                    raise _Lost
        except (IntegrityError, _Lost):
            return None
        return row

    def _send(self, claim: AutoReply, answer: Outgoing, contact: Contact, phone_number_id: uuid.UUID, *,
              rule: AutoReplyRule | None = None) -> None:
        """Queue ``answer`` for the claim; an API error of the messages plugin is recorded, not raised."""
        try:
            with self.db.begin_nested():
                if answer.template is not None:
                    message = self._queue_template(claim, answer.template, contact, phone_number_id)
                else:
                    message = self._queue_text(claim, answer.text or "", contact, phone_number_id)
        except ApiError as exc:
            claim.status, claim.error = ReplyStatus.FAILED.value, f"{exc.code}: {exc.message}"[:500]
            log.warning("auto-reply %s (%s) of vendor %s not queued: %s", claim.trigger, claim.kind, self.vendor_id,
                        claim.error)
            if rule is not None:
                self.db.execute(update(AutoReplyRule).where(AutoReplyRule.id == rule.id).values(
                    failures=AutoReplyRule.failures + 1, last_failed_at=self.now, last_error=claim.error)
                    .execution_options(synchronize_session=False))
        else:
            claim.message_id = message.id
        self.db.flush()

    def _queue_text(self, claim: AutoReply, text: str, contact: Contact, phone_number_id: uuid.UUID):
        """A free-form text (free inside the window); the window and opt-out were checked by the caller."""
        address = self.contacts.addressee(contact)
        reply = Reply(phone_number_id=phone_number_id, contact_id=contact.id,
                      recipient_hash=(self.contacts.mobile_hash(address.value) if not address.is_bsuid else
                                      self.contacts.bsuid_hash(address.value)),
                      country=contact.country, type="text", body={"body": text},
                      to=None if address.is_bsuid else address.value, bsuid=address.value if address.is_bsuid else None)
        key = f"autoreply:{claim.trigger}"
        return queue_reply(self.db, self.cipher, self.vendor_id, reply,
                           idempotency=Idempotency(key, request_hash([key, text]))).message

    def _queue_template(self, claim: AutoReply, template: tuple[str, str], contact: Contact,
                        phone_number_id: uuid.UUID):
        name, language = template
        service = MessageService.for_registry(self.db, self.registry, vendor_id=self.vendor_id)
        send = TemplateSend(phone_number_id=phone_number_id, template_name=name, template_language=language,
                            contact_id=contact.id)
        key = f"autoreply:{claim.trigger}"
        return service.queue(send, idempotency=Idempotency(key, request_hash([key, name, language]))).message

    def _hit(self, rule: AutoReplyRule) -> None:
        self.db.execute(update(AutoReplyRule).where(AutoReplyRule.id == rule.id)
                        .values(hits=AutoReplyRule.hits + 1, last_hit_at=self.now)
                        .execution_options(synchronize_session=False))


def said(message: dict) -> str:
    """What the customer wrote or tapped: a text's body, a quick-reply button's text, an interactive reply's title."""
    kind = message.get("type")
    part = message.get(kind) if isinstance(kind, str) else None
    if not isinstance(part, dict):
        return ""
    if kind == "text":
        value = part.get("body")
    elif kind == "button":
        value = part.get("text")
    elif kind == "interactive":
        reply = part.get("button_reply") or part.get("list_reply") or {}
        value = reply.get("title") if isinstance(reply, dict) else None
    else:
        value = None
    return value if isinstance(value, str) else ""
