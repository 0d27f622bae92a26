"""Replies in the customer-service window: every kind, every limit, the window's edges, opt-outs, idempotency."""

from __future__ import annotations

import uuid

import pytest
from conversations_support import ago, CUSTOMER
from sqlalchemy import select

from kloyst.db import tenancy
from kloyst.outbox import OutboxEvent
from kloyst_plugins.messages.content import open_content
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.waba.models import PhoneNumber


@pytest.fixture
def conversation(inbox, line):
    """A conversation whose customer wrote five minutes ago: the window is open."""
    inbox.customer_writes(line, "Hi, can you help?", at=ago(minutes=5))
    return inbox.conversation(line)


def queued(inbox, line) -> list[MessageLog]:
    inbox.db.expire_all()
    with tenancy.unscoped(inbox.db):
        return list(inbox.db.scalars(select(MessageLog).where(MessageLog.vendor_id == line.vendor_id)))


def payload(inbox, message: MessageLog) -> dict:
    return open_content(inbox.cipher, message.vendor_id, message.content_enc)


LINK = "https://cdn.example.com/files/receipt.pdf"
VALID = {
    "text": {"type": "text", "text": {"body": "Your order ships today: https://example.com/t/1", "preview_url": True}},
    "image": {"type": "image", "image": {"link": "https://cdn.example.com/a.jpg", "caption": "Your parcel"}},
    "video": {"type": "video", "video": {"link": "https://cdn.example.com/a.mp4"}},
    "audio": {"type": "audio", "audio": {"link": "https://cdn.example.com/a.ogg"}},
    "document": {"type": "document", "document": {"link": LINK, "filename": "receipt.pdf", "caption": "Receipt"}},
    "sticker": {"type": "sticker", "sticker": {"link": "https://cdn.example.com/s.webp"}},
    "location": {"type": "location", "location": {"latitude": 37.4847, "longitude": -122.1486, "name": "Our shop",
                                                  "address": "1 Hacker Way"}},
    "contacts": {"type": "contacts", "contacts": [{"name": {"formatted_name": "Support Desk", "first_name": "Support"},
                                                   "phones": [{"phone": "+1 555 0100", "type": "WORK"}],
                                                   "emails": [{"email": "help@example.com", "type": "WORK"}]}]},
    "buttons": {"type": "interactive", "interactive": {
        "type": "button", "header": {"type": "text", "text": "Delivery"}, "body": {"text": "Is now a good time?"},
        "footer": {"text": "Reply any time"},
        "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                               {"type": "reply", "reply": {"id": "later", "title": "Later"}}]}}},
    "list": {"type": "interactive", "interactive": {
        "type": "list", "body": {"text": "Pick a slot"},
        "action": {"button": "Slots", "sections": [
            {"title": "Morning", "rows": [{"id": "m1", "title": "9:00", "description": "Before noon"}]},
            {"title": "Evening", "rows": [{"id": "e1", "title": "18:00"}]}]}}},
}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_each_kind_of_reply_is_queued_free_with_metas_payload(inbox, line, conversation, kind):
    answer = inbox.reply(line, conversation.id, VALID[kind]).json
    [message] = queued(inbox, line)
    body = VALID[kind]
    sent = payload(inbox, message)
    assert sent["type"] == body["type"]
    assert sent["to"] == CUSTOMER and sent["messaging_product"] == "whatsapp"
    assert sent["recipient_type"] == "individual"
    assert sent["biz_opaque_callback_data"] == str(message.id)
    assert sent[body["type"]] == body[body["type"]]
    assert message.category == "service" and message.price_micros is None and message.hold_id is None
    assert message.contact_id == conversation.contact_id and message.template_name is None
    assert message.status == "QUEUED"
    assert answer["message"]["id"] == str(message.id) and answer["message"]["status"] == "QUEUED"
    assert answer["message"]["content"] == {body["type"]: body[body["type"]], "type": body["type"]}
    assert answer["conversation"]["last_message"]["id"] == str(message.id)
    assert answer["conversation"]["last_message"]["direction"] == "outbound"
    with tenancy.unscoped(inbox.db):
        doorbells = inbox.db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == line.vendor_id,
                                                               OutboxEvent.topic == "messages.queued")).all()
    assert doorbells


def _with(kind: str, path: str, value):
    """VALID[kind] with the field at ``path`` (dots; list indexes as numbers) replaced by ``value``."""
    import copy

    body = copy.deepcopy(VALID[kind])
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return body


BUTTON = {"type": "reply", "reply": {"id": "b", "title": "B"}}
ROW = {"id": "r", "title": "Row"}
LIMITS = [
    ("text", "text.body", "x" * 4097, "text.body"),
    ("text", "text.body", "", "text.body"),
    ("image", "image.link", "http://cdn.example.com/a.jpg", "image.link"),
    ("image", "image.link", "https://user:pw@cdn.example.com/a.jpg", "image.link"),
    ("image", "image.caption", "c" * 1025, "image.caption"),
    ("document", "document.filename", "f" * 241, "document.filename"),
    ("audio", "audio.caption", "no captions on audio", "(body)"),
    ("sticker", "sticker.caption", "nor on stickers", "(body)"),
    ("image", "image.filename", "only documents.pdf", "(body)"),
    ("location", "location.latitude", 91, "location.latitude"),
    ("location", "location.longitude", -181, "location.longitude"),
    ("contacts", "contacts", [], "contacts"),
    ("contacts", "contacts", [VALID["contacts"]["contacts"][0]] * 6, "contacts"),
    ("contacts", "contacts.0.name", {"first_name": "no formatted name"}, "contacts.0.name.formatted_name"),
    ("buttons", "interactive.action.buttons", [BUTTON] * 4, "interactive.button.action.buttons"),
    ("buttons", "interactive.action.buttons", [], "interactive.button.action.buttons"),
    ("buttons", "interactive.action.buttons", [BUTTON, BUTTON], "interactive.button.action"),
    ("buttons", "interactive.action.buttons.0.reply.title", "t" * 21,
     "interactive.button.action.buttons.0.reply.title"),
    ("buttons", "interactive.action.buttons.0.reply.id", "i" * 257, "interactive.button.action.buttons.0.reply.id"),
    ("buttons", "interactive.body.text", "b" * 1025, "interactive.button.body.text"),
    ("buttons", "interactive.header.text", "h" * 61, "interactive.button.header.text"),
    ("buttons", "interactive.footer.text", "f" * 61, "interactive.button.footer.text"),
    ("list", "interactive.action.button", "b" * 21, "interactive.list.action.button"),
    ("list", "interactive.action.sections", [{"title": f"S{i}", "rows": [dict(ROW, id=f"r{i}")]} for i in range(11)],
     "interactive.list.action.sections"),
    ("list", "interactive.action.sections", [{"title": "A", "rows": [dict(ROW, id=f"a{i}") for i in range(6)]},
                                             {"title": "B", "rows": [dict(ROW, id=f"b{i}") for i in range(5)]}],
     "interactive.list.action"),
    ("list", "interactive.action.sections", [{"rows": [ROW]}, {"title": "B", "rows": [dict(ROW, id="r2")]}],
     "interactive.list.action"),
    ("list", "interactive.action.sections", [{"title": "A", "rows": [ROW, ROW]}], "interactive.list.action"),
    ("list", "interactive.action.sections.0.rows.0.title", "t" * 25, "interactive.list.action.sections.0.rows.0.title"),
    ("list", "interactive.action.sections.0.rows.0.id", "i" * 201, "interactive.list.action.sections.0.rows.0.id"),
    ("list", "interactive.action.sections.0.rows.0.description", "d" * 73,
     "interactive.list.action.sections.0.rows.0.description"),
    ("list", "interactive.action.sections.0.title", "s" * 25, "interactive.list.action.sections.0.title"),
    ("list", "interactive.header", {"type": "image", "image": {"link": "https://x.example.com/a.png"}},
     "interactive.list.header.type"),
    ("text", "image", {"link": "https://cdn.example.com/a.jpg"}, "(body)"),
]


@pytest.mark.parametrize("kind,path,value,field", LIMITS, ids=[f"{k}:{p}:{f}" for k, p, _, f in LIMITS])
def test_every_limit_is_a_422_naming_the_field_and_queues_nothing(inbox, line, conversation, kind, path, value,
                                                                   field):
    refused = inbox.reply(line, conversation.id, _with(kind, path, value), status=422).json
    fields = [f["field"] for f in refused["error"]["details"]["fields"]]
    assert field in fields, fields
    assert queued(inbox, line) == []


def test_a_reply_23_59_after_the_last_message_is_sent_and_24_01_after_is_refused(inbox, line):
    inbox.customer_writes(line, "open", sender="+12025550141", at=ago(hours=23, minutes=59))
    inbox.customer_writes(line, "closed", sender="+12025550142", at=ago(hours=24, minutes=1))
    by_preview = {i["last_message"]["preview"]: i for i in inbox.get(line)["items"]}
    assert by_preview["open"]["window"]["open"] is True and by_preview["closed"]["window"]["open"] is False

    inbox.reply(line, by_preview["open"]["id"], VALID["text"], status=202)
    refused = inbox.reply(line, by_preview["closed"]["id"], VALID["text"], status=422).json["error"]
    assert refused["code"] == "window_closed"
    assert "template" in refused["message"]
    assert refused["details"]["window_expired_at"]
    assert len(queued(inbox, line)) == 1


def test_a_conversation_the_customer_never_wrote_in_is_closed(inbox, line):
    contact = inbox.contact(line)
    opened = inbox.post(line, "", {"contact_id": str(contact.id), "phone_number_id": str(line.number.id)},
                        status=201).json["conversation"]
    refused = inbox.reply(line, opened["id"], VALID["text"], status=422).json["error"]
    assert refused["code"] == "window_closed" and "has not written" in refused["message"]


def test_a_template_from_the_conversation_reengages_outside_the_window(inbox, line):
    inbox.customer_writes(line, "long ago", at=ago(days=3))
    conversation_id = inbox.conversation(line).id
    answer = inbox.post(line, f"/{conversation_id}/templates",
                        {"template": {"name": "order_update", "language": "en_US"},
                         "parameters": {"body": ["Ann", "A-1"]}}, status=202).json
    [message] = queued(inbox, line)
    assert message.template_name == "order_update" and message.price_micros  # priced as any template
    assert answer["message"]["template"] == "order_update"
    assert answer["message"]["content"]["template"]["name"] == "order_update"
    assert answer["conversation"]["last_message"]["preview"] == "[template order_update]"


def test_a_reply_to_an_opted_out_contact_is_a_409(inbox, line, conversation):
    inbox.customer_writes(line, "STOP")
    refused = inbox.reply(line, conversation.id, VALID["text"], status=409).json["error"]
    assert refused["code"] == "contact_opted_out"
    assert queued(inbox, line) == []


def test_a_number_that_is_not_connected_cannot_reply(inbox, line, conversation):
    with tenancy.unscoped(inbox.db):
        line.number.status = "FLAGGED"
        inbox.db.add(line.number)
        inbox.db.commit()
    refused = inbox.reply(line, conversation.id, VALID["text"], status=409).json["error"]
    assert refused["code"] == "phone_number_unavailable"


def test_the_same_idempotency_key_answers_with_the_same_reply(inbox, line, conversation):
    first = inbox.reply(line, conversation.id, VALID["text"], key="reply-1")
    again = inbox.reply(line, conversation.id, VALID["text"], key="reply-1")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["message"]["id"] == first.json["message"]["id"]
    assert len(queued(inbox, line)) == 1
    refused = inbox.reply(line, conversation.id, VALID["image"], key="reply-1", status=422).json["error"]
    assert refused["code"] == "idempotency_key_reused"


def test_a_contact_known_only_by_its_bsuid_is_addressed_by_recipient(inbox, line, conversation):
    from kloyst_plugins.contacts.models import Contact

    with tenancy.unscoped(inbox.db):
        contact = inbox.db.get(Contact, conversation.contact_id)
        contact.bsuid_hash = inbox.hasher(line.vendor_id, "US.13491208655302741918")
        contact.bsuid_enc = inbox.cipher.encrypt("US.13491208655302741918", vendor_id=line.vendor_id, field="bsuid")
        contact.mobile_hash = contact.mobile_enc = None
        inbox.db.commit()
    inbox.reply(line, conversation.id, VALID["text"])
    [message] = queued(inbox, line)
    sent = payload(inbox, message)
    assert "to" not in sent and sent["recipient"] == "US.13491208655302741918"
    assert message.recipient_hash == contact.bsuid_hash


def uploaded(inbox, line, *, kind: str = "image", direction: str = "outbound", status: str = "stored",
             number=None, age_days: int = 0):
    """A medium as ``POST /v1/media`` leaves it (or, with ``direction="inbound"``, as a customer's is fetched)."""
    import datetime as dt

    from kloyst_plugins.media.models import Media

    row = Media(vendor_id=line.vendor_id, direction=direction, kind=kind, status=status,
                phone_number_id=(number or line.number).id, meta_media_id=f"meta-media-{uuid.uuid4().hex[:12]}",
                mime_type="image/jpeg", size_bytes=1000, filename="a.jpg",
                created_at=ago(days=age_days) if age_days else None)
    if age_days:
        row.created_at = ago(days=age_days) - dt.timedelta(minutes=1)
    return inbox._save(row)


def test_an_uploaded_medium_is_sent_by_the_id_meta_gave_it(inbox, line, conversation):
    media = uploaded(inbox, line)
    inbox.reply(line, conversation.id, {"type": "image", "image": {"id": str(media.id), "caption": "Here"}})
    [message] = queued(inbox, line)
    assert payload(inbox, message)["image"] == {"id": media.meta_media_id, "caption": "Here"}


@pytest.mark.parametrize("problem,code", [("unknown", "media_not_found"), ("inbound", "media_unusable"),
                                          ("pending", "media_unusable"), ("video", "media_unusable"),
                                          ("other number", "media_unusable"), ("31 days old", "media_unusable")])
def test_an_uploaded_medium_that_cannot_be_sent_is_a_422_naming_the_field(inbox, line, conversation, problem, code):
    if problem == "unknown":
        media_id = uuid.uuid4()
    else:
        other = None
        if problem == "other number":
            other = inbox._save(PhoneNumber(vendor_id=line.vendor_id, waba_id=line.waba.id,
                                            meta_phone_number_id=str(uuid.uuid4().int)[:15],
                                            display_phone_number="+1 555 010 0001", status="CONNECTED"))
        media_id = uploaded(inbox, line, direction="inbound" if problem == "inbound" else "outbound",
                            status="pending" if problem == "pending" else "stored",
                            kind="video" if problem == "video" else "image", number=other,
                            age_days=31 if problem == "31 days old" else 0).id
    refused = inbox.reply(line, conversation.id, {"type": "image", "image": {"id": str(media_id)}}, status=422).json
    assert refused["error"]["code"] == code
    assert [f["field"] for f in refused["error"]["details"]["fields"]] == ["image.id"]
    assert queued(inbox, line) == []


def test_a_customers_media_shows_kloysts_copy_in_the_thread(inbox, line):
    """The media plugin records an inbound medium on MessageReceived (and fetches it from Meta in a task)."""
    from kloyst_plugins.media.models import Media

    inbox.customer_writes(line, {"type": "image", "image": {"id": "meta-in-1", "mime_type": "image/jpeg"}})
    conversation = inbox.conversation(line)
    with tenancy.unscoped(inbox.db):
        [stored] = inbox.db.scalars(select(Media).where(Media.vendor_id == line.vendor_id)).all()
    [item] = inbox.get(line, f"/{conversation.id}/messages")["items"]
    assert item["content"]["image"]["id"] == "meta-in-1"
    assert item["media"]["id"] == str(stored.id) and item["media"]["kind"] == "image"


def test_a_reply_is_a_message_like_any_other_in_the_messages_api(inbox, line, conversation):
    sent = inbox.reply(line, conversation.id, VALID["text"]).json["message"]
    shown = inbox.testapp.get(f"/v1/messages/{sent['id']}", headers=line.headers).json["message"]
    assert shown["to"] == CUSTOMER and shown["status"] == "QUEUED"
    assert shown["contact_id"] == str(conversation.contact_id)
    assert shown["template"] == {"id": None, "name": None, "language": None, "category": "service"}


def test_an_uploaded_medium_in_a_buttons_header_is_sent_by_metas_id_too(inbox, line, conversation):
    media = uploaded(inbox, line)
    body = _with("buttons", "interactive.header", {"type": "image", "image": {"id": str(media.id)}})
    inbox.reply(line, conversation.id, body)
    [message] = queued(inbox, line)
    assert payload(inbox, message)["interactive"]["header"] == {"type": "image", "image": {"id": media.meta_media_id}}
    refused = inbox.reply(line, conversation.id, _with("buttons", "interactive.header",
                                                       {"type": "image", "image": {"id": str(uuid.uuid4())}}),
                          status=422).json["error"]
    assert refused["details"]["fields"][0]["field"] == "interactive.header.image.id"
