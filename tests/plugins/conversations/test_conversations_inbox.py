"""The inbox: conversations appear from customers' messages, list with filters and cursors, read, assign, label."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from conversations_support import CUSTOMER, ago
from sqlalchemy import func, select

from kloyst.db import tenancy, utcnow
from kloyst.events import MessageReceived
from kloyst.outbox import OutboxEvent
from kloyst_plugins.conversations.models import Conversation
from kloyst_plugins.messages.models import InboundMessage


def test_a_customers_message_opens_a_conversation_with_its_window_and_unread_count(inbox, line):
    wamid = inbox.customer_writes(line, "Hello, where is my order?", at=ago(minutes=5))

    [item] = inbox.get(line)["items"]
    conversation = inbox.conversation(line)
    assert item["id"] == str(conversation.id)
    assert item["phone_number_id"] == str(line.number.id)
    assert item["unread_count"] == 1
    assert item["window"]["open"] is True
    assert item["last_message"]["direction"] == "inbound"
    assert item["last_message"]["preview"] == "Hello, where is my order?"
    assert item["last_message"]["type"] == "text"
    assert item["assignee_user_id"] is None and item["labels"] == []
    with tenancy.unscoped(inbox.db):
        inbound = inbox.db.scalars(select(InboundMessage).where(InboundMessage.wamid == wamid)).one()
    assert item["contact_id"] == str(inbound.contact_id)
    expires = dt.datetime.fromisoformat(item["window"]["expires_at"].replace("Z", "+00:00"))
    assert expires == inbound.sent_at + dt.timedelta(hours=24)


def test_a_redelivered_event_changes_nothing(inbox, line):
    registry = inbox.registry
    inbox.customer_writes(line, "one")
    inbox.customer_writes(line, "two")
    conversation = inbox.conversation(line)
    before = (conversation.unread_count, conversation.last_message_id, conversation.last_inbound_at)
    with tenancy.unscoped(inbox.db):
        events = list(inbox.db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == line.vendor_id,
                                                                 OutboxEvent.topic == "vendor.event")))
    events = [e for e in events if e.payload["name"] == "MessageReceived"]
    assert len(events) == 2
    from kloyst.events import deliver
    from kloyst.outbox.context import TaskContext
    from kloyst.db import session_scope

    for event in reversed(events):  # again, and out of order
        with session_scope(registry["kloyst.session_factory"], vendor_id=line.vendor_id) as db:
            deliver(TaskContext(registry, db, None, line.vendor_id), event)
    conversation = inbox.conversation(line)
    assert (conversation.unread_count, conversation.last_message_id, conversation.last_inbound_at) == before
    assert before[0] == 2


def test_campaign_and_api_messages_open_no_conversation(inbox, line):
    testapp = inbox.testapp
    inbox.contact(line)
    testapp.post_json("/v1/messages", {"phone_number_id": str(line.number.id), "to": CUSTOMER,
                                       "template": {"name": "order_update", "language": "en_US"},
                                       "parameters": {"body": ["Ann", "A-1"]}}, headers=line.headers, status=202)
    inbox.run_outbox()
    assert inbox.conversations(line) == []
    assert inbox.get(line)["items"] == []


def test_listing_pages_by_cursor_newest_first(inbox, line):
    for index in range(5):
        inbox.customer_writes(line, f"hi {index}", sender=f"+1202555017{index}", at=ago(minutes=10 - index))
    first = inbox.get(line, limit=2)
    second = inbox.get(line, limit=2, cursor=first["next_cursor"])
    third = inbox.get(line, limit=2, cursor=second["next_cursor"])
    previews = [i["last_message"]["preview"] for page in (first, second, third) for i in page["items"]]
    assert previews == ["hi 4", "hi 3", "hi 2", "hi 1", "hi 0"]
    assert third["next_cursor"] is None


def test_a_cursor_that_is_not_one_is_a_422(inbox, line):
    answer = inbox.get(line, cursor="not-a-cursor", status=422)
    assert answer["error"]["code"] == "invalid_cursor"


def test_filters_unread_open_window_assignee_and_label(inbox, line):
    inbox.customer_writes(line, "old", sender="+12025550101", at=ago(hours=30))
    inbox.customer_writes(line, "recent", sender="+12025550102", at=ago(hours=1))
    inbox.customer_writes(line, "read", sender="+12025550103", at=ago(minutes=30))
    by_preview = {i["last_message"]["preview"]: i["id"] for i in inbox.get(line)["items"]}
    inbox.post(line, f"/{by_preview['read']}/read")
    colleague = inbox.accounts.user(line.account.vendor)
    inbox.db.commit()
    inbox.testapp.put_json(f"/v1/conversations/{by_preview['recent']}/assignee", {"user_id": str(colleague.user.id)},
                           headers=line.headers)
    inbox.testapp.put_json(f"/v1/conversations/{by_preview['old']}/assignee", {"user_id": str(line.account.user.id)},
                           headers=line.headers)
    inbox.post(line, f"/{by_preview['old']}/labels", {"add": ["vip", "billing"]})

    def previews(**params) -> list[str]:
        return sorted(i["last_message"]["preview"] for i in inbox.get(line, **params)["items"])

    assert previews(unread="true") == ["old", "recent"]
    assert previews(unread="false") == ["read"]
    assert previews(window_open="true") == ["read", "recent"]
    assert previews(window_open="false") == ["old"]
    assert previews(assigned_to_me="true") == ["old"]
    assert previews(assignee=str(colleague.user.id)) == ["recent"]
    assert previews(assignee="none") == ["read"]
    assert previews(label="vip") == ["old"]
    assert previews(label="nobody") == []
    assert previews(unread="true", window_open="true") == ["recent"]
    # the colleague's own "assigned to me"
    mine = inbox.testapp.get("/v1/conversations", params={"assigned_to_me": "true"}, headers=colleague.headers).json
    assert [i["last_message"]["preview"] for i in mine["items"]] == ["recent"]


def test_mark_as_read_zeroes_the_count_and_sends_metas_read_receipt_after_commit(inbox, line, meta_sandbox,
                                                                                  recorded_tasks):
    inbox.customer_writes(line, "first", at=ago(minutes=3))
    latest = inbox.customer_writes(line, "second", at=ago(minutes=2))
    conversation = inbox.conversation(line)
    assert conversation.unread_count == 2

    answer = inbox.post(line, f"/{conversation.id}/read").json["conversation"]
    assert answer["unread_count"] == 0
    # Not inside the request: a task, sent after the commit, run by a worker.
    assert recorded_tasks == [("conversations.send_read_receipt", {
        "vendor_id": line.vendor_id, "conversation_id": conversation.id, "wamid": latest})]
    assert list(meta_sandbox.state.reads) == []
    inbox.run_outbox()
    assert [(r["phone_number_id"], r["message_id"]) for r in meta_sandbox.state.reads] == [
        (line.number.meta_phone_number_id, latest)]

    inbox.customer_writes(line, "third")
    assert inbox.conversation(line).unread_count == 1


def test_a_read_receipt_meta_refuses_for_good_is_not_retried(inbox, line, monkeypatch):
    registry = inbox.registry
    from kloyst.meta import MetaError

    inbox.customer_writes(line, "hello")
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise MetaError("Invalid parameter", code=100, http_status=400)

    monkeypatch.setattr(registry["kloyst.meta"], "mark_read", refuse)
    inbox.post(line, f"/{inbox.conversation(line).id}/read")
    inbox.run_outbox()
    inbox.run_outbox()
    assert len(calls) == 1


def test_assign_to_a_vendor_user_unassign_and_refuse_others(inbox, line):
    inbox.customer_writes(line)
    conversation_id = inbox.conversation(line).id
    colleague = inbox.accounts.user(line.account.vendor)
    stranger = inbox.accounts.vendor("Someone Else")
    inbox.db.commit()
    path = f"/v1/conversations/{conversation_id}/assignee"

    answer = inbox.testapp.put_json(path, {"user_id": str(colleague.user.id)}, headers=line.headers).json
    assert answer["conversation"]["assignee_user_id"] == str(colleague.user.id)
    refused = inbox.testapp.put_json(path, {"user_id": str(stranger.user.id)}, headers=line.headers, status=422).json
    assert refused["error"]["code"] == "user_not_found" and "user_id" in refused["error"]["message"]
    refused = inbox.testapp.put_json(path, {"user_id": str(uuid.uuid4())}, headers=line.headers, status=422).json
    assert refused["error"]["code"] == "user_not_found"
    assert inbox.conversation(line).assignee_user_id == colleague.user.id
    answer = inbox.testapp.put_json(path, {"user_id": None}, headers=line.headers).json
    assert answer["conversation"]["assignee_user_id"] is None


def test_labels_are_added_and_removed_once_each(inbox, line):
    inbox.customer_writes(line)
    conversation_id = inbox.conversation(line).id
    answer = inbox.post(line, f"/{conversation_id}/labels", {"add": ["vip", "billing", "vip"]}).json
    assert answer["conversation"]["labels"] == ["vip", "billing"]
    answer = inbox.post(line, f"/{conversation_id}/labels", {"add": ["urgent"], "remove": ["vip"]}).json
    assert answer["conversation"]["labels"] == ["billing", "urgent"]
    refused = inbox.post(line, f"/{conversation_id}/labels", {"add": [f"l{i}" for i in range(19)]}, status=422).json
    assert refused["error"]["code"] == "too_many_labels"
    refused = inbox.post(line, f"/{conversation_id}/labels", {"add": ["x" * 65]}, status=422).json
    assert refused["error"]["details"]["fields"][0]["field"] == "add.0"


def test_another_vendors_conversation_is_a_404_on_every_route(inbox, line):
    inbox.customer_writes(line)
    conversation_id = inbox.conversation(line).id
    other = inbox.line("Other Co")
    for method, path, body in (("get", "", None), ("get", "/messages", None), ("post", "/messages",
                               {"type": "text", "text": {"body": "hi"}}), ("post", "/read", {}),
                               ("post", "/labels", {"add": ["x"]}), ("put", "/assignee", {"user_id": None}),
                               ("post", "/templates", {"template": {"name": "order_update", "language": "en_US"}})):
        url = f"/v1/conversations/{conversation_id}{path}"
        if method == "get":
            inbox.testapp.get(url, headers=other.headers, status=404)
        else:
            getattr(inbox.testapp, f"{method}_json")(url, body, headers=other.headers, status=404)
    assert inbox.get(other)["items"] == []
    refused = inbox.post(other, "", {"contact_id": str(inbox.conversation(line).contact_id),
                                     "phone_number_id": str(other.number.id)}, status=404).json
    assert refused["error"]["code"] == "contact_not_found"


def test_opening_a_conversation_by_hand_finds_the_one_a_customer_started(inbox, line):
    contact = inbox.contact(line)
    created = inbox.post(line, "", {"contact_id": str(contact.id), "phone_number_id": str(line.number.id)},
                         status=201).json["conversation"]
    assert created["window"]["open"] is False and created["last_message"] is None
    inbox.customer_writes(line, "hi")
    again = inbox.post(line, "", {"contact_id": str(contact.id), "phone_number_id": str(line.number.id)},
                       status=200).json["conversation"]
    assert again["id"] == created["id"] and again["window"]["open"] is True and again["unread_count"] == 1
    with tenancy.unscoped(inbox.db):
        assert inbox.db.scalar(select(func.count()).select_from(Conversation)
                               .where(Conversation.vendor_id == line.vendor_id)) == 1


@pytest.mark.parametrize("message,preview", [
    ({"type": "image", "image": {"id": "m1", "mime_type": "image/jpeg", "caption": "my receipt"}},
     "[image] my receipt"),
    ({"type": "location", "location": {"latitude": 1.5, "longitude": 2.5, "name": "Home"}}, "[location] Home"),
    ({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "y", "title": "Yes"}}},
     "Yes"),
])
def test_previews_say_what_a_non_text_message_is(inbox, line, message, preview):
    inbox.customer_writes(line, message)
    assert inbox.get(line)["items"][0]["last_message"]["preview"] == preview


def test_the_event_without_a_contact_is_ignored(inbox, line):
    registry = inbox.registry
    from kloyst.db import session_scope
    from kloyst_plugins.conversations import plugin

    class Event:
        vendor_id = line.vendor_id
        data = MessageReceived(inbound_id=uuid.uuid4(), wamid="w", phone_number_id=line.number.id, contact_id=None,
                               type="text", sent_at=utcnow(), opt_out=False)

    class Ctx:
        db = None

    with session_scope(registry["kloyst.session_factory"], vendor_id=line.vendor_id) as db:
        Ctx.db = db
        Ctx.registry = registry
        plugin.kloyst_vendor_event(Event(), Ctx())
    assert inbox.conversations(line) == []
