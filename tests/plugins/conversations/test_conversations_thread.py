"""A thread: both directions in order, content decrypted for the vendor, statuses and errors, cursor pages."""

from __future__ import annotations

import uuid

from conversations_support import ago, CUSTOMER
from sqlalchemy import select

from kloyst.db import tenancy, utcnow
from kloyst_plugins.messages.content import seal_content
from kloyst_plugins.messages.models import STATUS_RANK, MessageLog, MessageStatus


def sent_by_meta(inbox, message_id) -> str:
    """The sender's part, done by hand: Meta accepted the message and gave it a wamid."""
    wamid = f"wamid.out.{uuid.uuid4().hex}"
    with tenancy.unscoped(inbox.db):
        message = inbox.db.get(MessageLog, uuid.UUID(str(message_id)))
        message.status, message.status_rank = "SENT", STATUS_RANK[MessageStatus.SENT]
        message.wamid, message.sent_at = wamid, utcnow()
        inbox.db.commit()
    return wamid


def campaign_message(inbox, line, contact_id, *, template: str = "order_update") -> MessageLog:
    """A message as a campaign's fan-out writes it: it names the contact, and no conversation."""
    message_id = uuid.uuid4()
    content_enc, kid = seal_content(inbox.cipher, line.vendor_id, {
        "messaging_product": "whatsapp", "to": CUSTOMER, "type": "template",
        "template": {"name": template, "language": {"code": "en_US"}}, "biz_opaque_callback_data": str(message_id)})
    message = MessageLog(id=message_id, vendor_id=line.vendor_id, phone_number_id=line.number.id,
                         contact_id=contact_id, campaign_id=uuid.uuid4(), template_name=template,
                         template_language="en_US", category="MARKETING",
                         recipient_hash=inbox.hasher(line.vendor_id, CUSTOMER), country="US",
                         content_enc=content_enc, enc_kid=kid, status="QUEUED", status_rank=0)
    with tenancy.unscoped(inbox.db):
        inbox.db.add(message)
        inbox.db.commit()
    return message


def test_a_thread_holds_both_directions_in_order_decrypted(inbox, line):
    inbox.customer_writes(line, "Where is my order?", at=ago(minutes=10))
    conversation = inbox.conversation(line)
    campaign = campaign_message(inbox, line, conversation.contact_id)
    reply = inbox.reply(line, conversation.id, {"type": "text", "text": {"body": "It ships today."}}).json["message"]
    # Meta's timestamps are whole seconds: the customer answers a second later.
    inbox.customer_writes(line, {"type": "location", "location": {"latitude": 1.0, "longitude": 2.0}},
                          at=ago(seconds=-1))

    thread = inbox.get(line, f"/{conversation.id}/messages")
    kinds = [(m["direction"], m["type"]) for m in thread["items"]]
    assert kinds == [("inbound", "location"), ("outbound", "text"), ("outbound", "template"), ("inbound", "text")]
    newest, our_reply, from_campaign, first = thread["items"]
    assert first["content"] == {"type": "text", "text": {"body": "Where is my order?"}}
    assert first["status"] is None and first["wamid"].startswith("wamid.in.")
    assert newest["content"]["location"] == {"latitude": 1.0, "longitude": 2.0}
    assert our_reply["id"] == reply["id"]
    assert our_reply["content"]["text"] == {"body": "It ships today.", "preview_url": False}
    assert our_reply["status"] == "QUEUED" and "to" not in our_reply["content"]
    assert from_campaign["id"] == str(campaign.id) and from_campaign["template"] == "order_update"
    assert from_campaign["campaign_id"] == str(campaign.campaign_id)
    assert from_campaign["content"]["template"]["name"] == "order_update"

    oldest_first = inbox.get(line, f"/{conversation.id}/messages", direction="oldest_first")["items"]
    assert [m["id"] for m in oldest_first] == [m["id"] for m in reversed(thread["items"])]


def test_thread_pages_by_cursor_in_both_directions(inbox, line):
    for index in range(4):
        inbox.customer_writes(line, f"in {index}", at=ago(minutes=20 - 2 * index))
    conversation = inbox.conversation(line)
    for index in range(3):
        inbox.reply(line, conversation.id, {"type": "text", "text": {"body": f"out {index}"}})

    def bodies(direction: str) -> list[str]:
        seen, cursor = [], None
        while True:
            page = inbox.get(line, f"/{conversation.id}/messages", limit=2, direction=direction,
                             **({"cursor": cursor} if cursor else {}))
            assert len(page["items"]) <= 2
            seen += [m["content"]["text"]["body"] for m in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    newest_first = bodies("newest_first")
    assert newest_first == ["out 2", "out 1", "out 0", "in 3", "in 2", "in 1", "in 0"]
    assert bodies("oldest_first") == list(reversed(newest_first))


def test_statuses_update_the_thread_and_a_number_not_on_whatsapp_says_so(inbox, line):
    inbox.customer_writes(line, "hello")
    conversation = inbox.conversation(line)
    first = inbox.reply(line, conversation.id, {"type": "text", "text": {"body": "one"}}).json["message"]["id"]
    second = inbox.reply(line, conversation.id, {"type": "text", "text": {"body": "two"}}).json["message"]["id"]
    delivered, failed = sent_by_meta(inbox, first), sent_by_meta(inbox, second)
    inbox.status(line, delivered, "delivered")
    inbox.status(line, delivered, "read")
    inbox.status(line, failed, "failed", errors=[{"code": 131026, "title": "Message undeliverable",
                                                  "message": "Message undeliverable"}])

    items = {m["id"]: m for m in inbox.get(line, f"/{conversation.id}/messages")["items"]}
    assert items[first]["status"] == "READ" and items[first]["delivered_at"] and items[first]["read_at"]
    assert items[first]["error"] is None
    assert items[second]["status"] == "FAILED"
    error = items[second]["error"]
    assert error["code"] == 131026
    assert "not a WhatsApp user" in error["title"]


def test_another_contacts_messages_never_show(inbox, line):
    inbox.customer_writes(line, "mine", sender="+12025550161")
    inbox.customer_writes(line, "theirs", sender="+12025550162")
    for item in inbox.get(line)["items"]:
        thread = inbox.get(line, f"/{item['id']}/messages")["items"]
        assert [m["content"]["text"]["body"] for m in thread] == [item["last_message"]["preview"]]


def test_reading_a_thread_decrypts_with_the_vendors_key_only(inbox, line):
    inbox.customer_writes(line, "secret words")
    with tenancy.unscoped(inbox.db):
        from kloyst_plugins.messages.models import InboundMessage

        stored = inbox.db.scalars(select(InboundMessage).where(InboundMessage.vendor_id == line.vendor_id)).one()
    assert b"secret words" not in stored.content_enc
    thread = inbox.get(line, f"/{inbox.conversation(line).id}/messages")["items"]
    assert thread[0]["content"]["text"]["body"] == "secret words"
