"""The rules of a conversation: opening one, keeping its summary current, reading, assigning, labelling, replying.

**The summary is derived, so every update is idempotent.** ``MessageReceived`` arrives at least once
and in any order; applying it sets ``last_inbound_at`` and ``last_message_*`` to the later of what is
there and what the event names, and *recounts* ``unread_count`` from the inbound messages sent after
``last_read_at`` (capped at :data:`UNREAD_CAP`, so a customer who wrote ten thousand times costs a
bounded scan). A redelivered event therefore changes nothing, and two events applied in either order
leave the same row. The row is locked while it is updated (``FOR UPDATE`` on PostgreSQL; SQLite has one
writer), so a reply and an inbound message landing together cannot lose each other's update.

**The customer-service window** is open for 24 hours after the customer's last message to that
number (Meta's timestamp of it), checked against the messages themselves when a reply is sent — not
against the summary, which an inbound message not yet applied could leave behind. 23 h 59 min after
the last message a reply is queued; 24 h 1 min after, it is a 422 ``window_closed`` that says to send
a template, which is how a business writes first (``/templates``).

**A reply** is checked whole before anything is written — the number is the vendor's and connected,
the contact has not opted out (409), the window is open (422) — then queued through
``messages.api.queue_reply`` as a free ``service`` message and the conversation's last message set,
in one transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kloyst.api import Conflict, NotFound, Unprocessable, User, utcnow
from kloyst_plugins.contacts.api import Contact, ContactService
from kloyst_plugins.conversations.models import INBOUND, OUTBOUND, Conversation
from kloyst_plugins.conversations.schemas import MEDIA_KINDS, ReplyCreate, TemplateCreate
from kloyst_plugins.media.api import Direction, find_media, MediaStatus
from kloyst_plugins.messages.api import (
    count_inbound_since,
    Idempotency,
    latest_inbound,
    MessageLog,
    MessageService,
    queue_reply,
    Queued,
    replayed,
    Reply,
    TemplateSend,
)
from kloyst_plugins.waba.api import PhoneNumber

WINDOW = dt.timedelta(hours=24)
UNREAD_CAP = 1000
# Meta keeps an uploaded media for 30 days; an older upload's id would be refused when sent.
UPLOAD_LIFETIME = dt.timedelta(days=30)


def window_expires_at(last_inbound_at: dt.datetime | None) -> dt.datetime | None:
    return last_inbound_at + WINDOW if last_inbound_at is not None else None


def window_open(last_inbound_at: dt.datetime | None, now: dt.datetime) -> bool:
    expires = window_expires_at(last_inbound_at)
    return expires is not None and now < expires


@dataclass(frozen=True)
class Inbound:
    """What a conversation needs of one stored inbound message (from the ``MessageReceived`` event)."""

    id: uuid.UUID
    contact_id: uuid.UUID
    phone_number_id: uuid.UUID
    sent_at: dt.datetime


class ConversationService:
    """Conversations of one vendor, in the caller's session (scoped to that vendor) and transaction."""

    def __init__(self, db: Session, registry, *, vendor_id: uuid.UUID) -> None:
        self.db = db
        self.registry = registry
        self.vendor_id = vendor_id
        self.cipher = registry["kloyst.cipher"]

    @classmethod
    def for_request(cls, request) -> ConversationService:
        return cls(request.db, request.registry, vendor_id=request.vendor_id)

    # -- finding and opening ------------------------------------------------------------------------------------

    def find(self, contact_id: uuid.UUID, phone_number_id: uuid.UUID, *, lock: bool = False) -> Conversation | None:
        query = select(Conversation).where(Conversation.contact_id == contact_id,
                                           Conversation.phone_number_id == phone_number_id)
        if lock:
            query = query.with_for_update().execution_options(populate_existing=True)
        return self.db.scalars(query).one_or_none()

    def lock(self, conversation: Conversation) -> Conversation:
        """``conversation`` re-read under a row lock: the state every update starts from."""
        return self.db.scalars(select(Conversation).where(Conversation.id == conversation.id).with_for_update()
                               .execution_options(populate_existing=True)).one()

    def open(self, contact_id: uuid.UUID, phone_number_id: uuid.UUID, *,
             at: dt.datetime | None = None) -> tuple[Conversation, bool]:
        """The conversation of ``(contact, number)``, created if new (``True`` then), locked for an update."""
        found = self.find(contact_id, phone_number_id, lock=True)
        if found is not None:
            return found, False
        conversation = Conversation(vendor_id=self.vendor_id, contact_id=contact_id, phone_number_id=phone_number_id,
                                    last_message_at=at or utcnow(), unread_count=0, labels=[])
        try:
            with self.db.begin_nested():
                self.db.add(conversation)
                self.db.flush()
        except IntegrityError:  # a concurrent transaction opened it first
            found = self.find(contact_id, phone_number_id, lock=True)
            if found is None:
                raise
            return found, False
        return conversation, True

    def open_for(self, contact_id: uuid.UUID, phone_number_id: uuid.UUID) -> tuple[Conversation, bool]:
        """``open`` for a client: the contact and the number must be the vendor's (404 otherwise)."""
        if self.db.get(Contact, contact_id) is None:
            raise NotFound("contact not found", code="contact_not_found", details={"contact_id": str(contact_id)})
        if self.db.get(PhoneNumber, phone_number_id) is None:
            raise NotFound("phone number not found", code="phone_number_not_found",
                           details={"phone_number_id": str(phone_number_id)})
        conversation, created = self.open(contact_id, phone_number_id)
        if created:
            latest = latest_inbound(self.db, contact_id, phone_number_id)
            if latest is not None:  # the customer wrote before (its event may not have been applied yet)
                self.apply_inbound(conversation, Inbound(latest.id, contact_id, phone_number_id, latest.sent_at))
        return conversation, created

    # -- keeping the summary ------------------------------------------------------------------------------------

    def receive(self, inbound: Inbound) -> Conversation:
        """Apply one stored inbound message (idempotent: see the module docstring)."""
        conversation, _ = self.open(inbound.contact_id, inbound.phone_number_id, at=inbound.sent_at)
        return self.apply_inbound(conversation, inbound)

    def apply_inbound(self, conversation: Conversation, inbound: Inbound) -> Conversation:
        if conversation.last_inbound_at is None or inbound.sent_at > conversation.last_inbound_at:
            conversation.last_inbound_at = inbound.sent_at
        self._last_message(conversation, INBOUND, inbound.id, inbound.sent_at)
        conversation.unread_count = count_inbound_since(self.db, conversation.contact_id,
                                                        conversation.phone_number_id, conversation.last_read_at,
                                                        cap=UNREAD_CAP)
        self.db.flush()
        return conversation

    def sent(self, conversation: Conversation, message: MessageLog) -> None:
        """A reply or template was queued from the conversation: it is the last message now."""
        self._last_message(conversation, OUTBOUND, message.id, message.created_at or utcnow())
        self.db.flush()

    @staticmethod
    def _last_message(conversation: Conversation, direction: str, message_id: uuid.UUID, at: dt.datetime) -> None:
        never = conversation.last_message_id is None
        if never or (at, str(message_id)) >= (conversation.last_message_at, str(conversation.last_message_id)):
            conversation.last_message_at = at
            conversation.last_message_id = message_id
            conversation.last_message_direction = direction

    # -- the inbox's actions ------------------------------------------------------------------------------------

    def mark_read(self, conversation: Conversation) -> str | None:
        """Everything the customer sent so far is read; the wamid of their latest message (for Meta's receipt)."""
        conversation = self.lock(conversation)
        latest = latest_inbound(self.db, conversation.contact_id, conversation.phone_number_id)
        if latest is not None and (conversation.last_read_at is None or latest.sent_at > conversation.last_read_at):
            conversation.last_read_at = latest.sent_at
        conversation.unread_count = count_inbound_since(self.db, conversation.contact_id,
                                                        conversation.phone_number_id, conversation.last_read_at,
                                                        cap=UNREAD_CAP)
        self.db.flush()
        return latest.wamid if latest is not None else None

    def assign(self, conversation: Conversation, user_id: uuid.UUID | None) -> None:
        """Assign to one of the vendor's active users (another vendor's is "not found"), or unassign."""
        if user_id is not None:
            user = self.db.get(User, user_id)  # tenant scoping: only this vendor's users are found
            if user is None or user.vendor_id != self.vendor_id:
                raise Unprocessable("user_id: no user of your vendor has this id", code="user_not_found",
                                    field="user_id", details={"user_id": str(user_id)})
            if user.disabled_at is not None:
                raise Unprocessable("user_id: this user is disabled; assign an active user", code="user_disabled",
                                    field="user_id", details={"user_id": str(user_id)})
        conversation = self.lock(conversation)
        conversation.assignee_user_id = user_id
        self.db.flush()

    def change_labels(self, conversation: Conversation, add: list[str], remove: list[str], *, limit: int) -> None:
        conversation = self.lock(conversation)
        dropped = set(remove)
        labels = {label: None for label in (conversation.labels or []) if label not in dropped}
        for label in add:
            if label not in dropped:
                labels[label] = None
        if len(labels) > limit:
            raise Unprocessable(f"add: a conversation has at most {limit} labels; this change would give it "
                                f"{len(labels)}", code="too_many_labels", field="add")
        conversation.labels = list(labels)
        self.db.flush()

    # -- sending ------------------------------------------------------------------------------------------------

    def reply(self, conversation: Conversation, body: ReplyCreate, *,
              idempotency: Idempotency | None = None, now: dt.datetime | None = None) -> Queued:
        """Queue a free-form reply, if everything allows it (see the module docstring)."""
        if (earlier := replayed(self.db, idempotency)) is not None:
            return earlier
        messages = MessageService.for_registry(self.db, self.registry, vendor_id=self.vendor_id)
        number = messages.sending_number(conversation.phone_number_id)
        contact = self._contact(conversation)
        self._window(conversation, now or utcnow())
        contacts = ContactService(self.db, vendor_id=self.vendor_id, cipher=self.cipher,
                                  hasher=self.registry["kloyst.mobile_hasher"])
        # A customer known only by a business-scoped user id (a username user) is addressed by it.
        address = contacts.addressee(contact)
        recipient_hash = contact.mobile_hash if address.field == "to" else contact.bsuid_hash
        if recipient_hash is None:  # ck_contact_identified: the identifier addressee() chose has its hash
            raise RuntimeError(f"contact {contact.id} has no keyed hash for its {address.field}")
        queued = queue_reply(self.db, self.cipher, self.vendor_id, Reply(
            phone_number_id=number.id, contact_id=contact.id, recipient_hash=recipient_hash,
            country=contact.country, type=body.type, body=self._meta_body(body, number),
            to=address.value if address.field == "to" else None,
            bsuid=address.value if address.field == "recipient" else None), idempotency=idempotency)
        if not queued.replayed:
            self.sent(self.lock(conversation), queued.message)
        return queued

    def send_template(self, conversation: Conversation, body: TemplateCreate, *,
                      idempotency: Idempotency | None = None) -> Queued:
        """Queue a template to the conversation's contact through the messages plugin's send (priced as usual)."""
        given = body.parameters
        messages = MessageService.for_registry(self.db, self.registry, vendor_id=self.vendor_id)
        queued = messages.queue(TemplateSend(
            phone_number_id=conversation.phone_number_id, template_name=body.template.name,
            template_language=body.template.language, contact_id=conversation.contact_id,
            body=given.body if given else None, header=given.header if given else None,
            buttons=tuple(given.buttons) if given else (), variables=body.variables,
            use_parameters=given is not None), idempotency=idempotency)
        if not queued.replayed:
            self.sent(self.lock(conversation), queued.message)
        return queued

    def _contact(self, conversation: Conversation) -> Contact:
        contact = self.db.get(Contact, conversation.contact_id)
        if contact is None:
            raise NotFound("contact not found", code="contact_not_found",
                           details={"contact_id": str(conversation.contact_id)})
        if contact.opted_out:
            raise Conflict("contact opted out: nothing is sent to a contact who opted out (opt them in first, if "
                           "they asked to be messaged again)", code="contact_opted_out",
                           details={"contact_id": str(contact.id)})
        return contact

    def _window(self, conversation: Conversation, now: dt.datetime) -> None:
        latest = latest_inbound(self.db, conversation.contact_id, conversation.phone_number_id)
        last = latest.sent_at if latest is not None else None
        if not window_open(last, now):
            expired = window_expires_at(last)
            when = (f"it closed at {expired.isoformat()}, 24 hours after the customer's last message"
                    if expired is not None else "the customer has not written to this number")
            raise Unprocessable(f"the customer-service window is closed ({when}): free-form messages can only be "
                                "sent within 24 hours of the customer's last message; send a template instead "
                                f"(POST /v1/conversations/{conversation.id}/templates)", code="window_closed",
                                details={"last_inbound_at": last.isoformat() if last else None,
                                         "window_expired_at": expired.isoformat() if expired else None})

    def _meta_body(self, body: ReplyCreate, number: PhoneNumber):
        """Meta's object for the reply; an uploaded medium (``/v1/media``) is sent by the id Meta gave it."""
        meta_body = body.meta_body()
        if body.type in MEDIA_KINDS and meta_body.get("id"):
            meta_body["id"] = self._uploaded(body.type, uuid.UUID(meta_body["id"]), number, f"{body.type}.id")
        header = meta_body.get("header") if body.type == "interactive" else None
        if header and header["type"] in MEDIA_KINDS and header[header["type"]].get("id"):
            kind = header["type"]
            header[kind]["id"] = self._uploaded(kind, uuid.UUID(header[kind]["id"]), number,
                                                f"interactive.header.{kind}.id")
        return meta_body

    def _uploaded(self, kind: str, media_id: uuid.UUID, number: PhoneNumber, field: str) -> str:
        """Meta's id of an upload of the vendor's that this number may send as ``kind`` (a 422 naming why not)."""
        item = find_media(self.db, self.vendor_id, media_id)
        if item is None:
            raise Unprocessable(f"{field}: none of your uploaded media has this id (upload it with POST /v1/media)",
                                code="media_not_found", field=field, details={"media_id": str(media_id)})
        problem = None
        if item.direction != Direction.OUTBOUND.value:
            problem = "this media was received from a customer; upload a file to send it"
        elif item.status != MediaStatus.STORED.value or not item.meta_media_id:
            problem = f"this media is {item.status}, not stored: only a stored upload can be sent"
        elif item.kind != kind:
            problem = f"this media was uploaded as {item.kind}: send it as a {item.kind} reply"
        elif item.phone_number_id != number.id:
            problem = ("this media was uploaded for another of your numbers: Meta's media ids belong to the number "
                       "that uploaded them; upload it for this one")
        elif item.created_at + UPLOAD_LIFETIME <= utcnow():
            problem = "Meta keeps an upload for 30 days and this one is older: upload it again"
        if problem is not None:
            raise Unprocessable(f"{field}: {problem}", code="media_unusable", field=field,
                                details={"media_id": str(media_id), "status": item.status, "kind": item.kind})
        return str(item.meta_media_id)
