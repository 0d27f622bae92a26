"""The conversations HTTP API, under ``/v1/conversations``.

Enablement, tenancy and authentication are the core's: ``model=Conversation`` loads ``{id}``
through tenant scoping, so another vendor's conversation is a 404, and members read, reply,
assign and label. Views translate HTTP; the rules live in :mod:`.services` (actions) and
:mod:`.inbox` (reading). Replies and templates take an ``Idempotency-Key`` like ``/v1/messages``
(a replayed answer carries ``Idempotent-Replayed: true``).
"""

from __future__ import annotations

from kloyst.api import idempotency_key, openapi, utcnow
from kloyst_plugins.conversations import inbox
from kloyst_plugins.conversations.models import Conversation
from kloyst_plugins.conversations.schemas import (AssigneeSet, ConversationAnswer, ConversationListQuery,
                                                  ConversationOpen, ConversationPage, LabelsChange, MAX_LABELS,
                                                  ReplyCreate, SentAnswer, TemplateCreate, ThreadPage, ThreadQuery)
from kloyst_plugins.conversations.services import ConversationService
from kloyst_plugins.conversations.tasks import SEND_READ_RECEIPT
from kloyst_plugins.messages.api import Idempotency, REPLAYED_HEADER, request_hash, ThreadItem


def _answer(request, conversation: Conversation) -> dict:
    [shown] = inbox.conversations_json(request.db, request.registry["kloyst.cipher"], [conversation], utcnow())
    return {"conversation": shown}


def list_conversations(request):
    query = request.validated_query()
    now = utcnow()
    rows, next_cursor = inbox.list_conversations(request.db, query, user_id=request.identity.user_id, now=now)
    return {"items": inbox.conversations_json(request.db, request.registry["kloyst.cipher"], rows, now),
            "next_cursor": next_cursor}


def open_conversation(request):
    body = request.validated()
    conversation, created = ConversationService.for_request(request).open_for(body.contact_id, body.phone_number_id)
    request.response.status_int = 201 if created else 200
    return _answer(request, conversation)


def get_conversation(request):
    return _answer(request, request.context)


def get_thread(request):
    query = request.validated_query()
    items, next_cursor = inbox.thread(request.db, request.registry["kloyst.cipher"], request.context,
                                      cursor=query.cursor, limit=query.limit,
                                      newest_first=query.direction == "newest_first")
    return {"items": items, "next_cursor": next_cursor}


def _sent(request, send) -> dict:
    key = idempotency_key(request.headers)
    idempotency = Idempotency(key, request_hash(request.json_data)) if key is not None else None
    queued = send(ConversationService.for_request(request), request.context, request.validated(), idempotency)
    request.response.status_int = 202
    if queued.replayed:
        request.response.headers[REPLAYED_HEADER] = "true"
    message = queued.message
    shown = inbox.thread_item_json(request.registry["kloyst.cipher"],
                                   ThreadItem("outbound", message.created_at, message.id, message))
    return {"message": shown, **_answer(request, request.context)}


def send_reply(request):
    return _sent(request, lambda service, conversation, body, idempotency: service.reply(
        conversation, body, idempotency=idempotency))


def send_template(request):
    return _sent(request, lambda service, conversation, body, idempotency: service.send_template(
        conversation, body, idempotency=idempotency))


def mark_read(request):
    conversation = request.context
    wamid = ConversationService.for_request(request).mark_read(conversation)
    if wamid is not None:
        request.enqueue(SEND_READ_RECEIPT, vendor_id=conversation.vendor_id, conversation_id=conversation.id,
                        wamid=wamid)
    return _answer(request, conversation)


def set_assignee(request):
    body = request.validated()
    ConversationService.for_request(request).assign(request.context, body.user_id)
    return _answer(request, request.context)


def change_labels(request):
    body = request.validated()
    ConversationService.for_request(request).change_labels(request.context, body.add, body.remove, limit=MAX_LABELS)
    return _answer(request, request.context)


def includeme(config) -> None:
    config.add_route("conversations.collection", "/conversations")
    config.add_view(list_conversations, route_name="conversations.collection", request_method="GET", renderer="json",
                    query_schema=ConversationListQuery, response_schema=ConversationPage)
    config.add_view(open_conversation, route_name="conversations.collection", request_method="POST",
                    renderer="json", body_schema=ConversationOpen, response_schema=ConversationAnswer, status=201)
    config.add_route("conversations.item", "/conversations/{id}", model=Conversation)
    config.add_view(get_conversation, route_name="conversations.item", request_method="GET", renderer="json",
                    response_schema=ConversationAnswer)
    config.add_route("conversations.item.messages", "/conversations/{id}/messages", model=Conversation)
    config.add_view(get_thread, route_name="conversations.item.messages", request_method="GET", renderer="json",
                    query_schema=ThreadQuery, response_schema=ThreadPage)
    config.add_view(send_reply, route_name="conversations.item.messages", request_method="POST", renderer="json",
                    body_schema=ReplyCreate, response_schema=SentAnswer, status=202, openapi=openapi.idempotency())
    config.add_route("conversations.item.templates", "/conversations/{id}/templates", model=Conversation)
    config.add_view(send_template, route_name="conversations.item.templates", request_method="POST",
                    renderer="json", body_schema=TemplateCreate, response_schema=SentAnswer, status=202,
                    openapi=openapi.idempotency())
    config.add_route("conversations.item.read", "/conversations/{id}/read", model=Conversation)
    config.add_view(mark_read, route_name="conversations.item.read", request_method="POST", renderer="json",
                    response_schema=ConversationAnswer)
    config.add_route("conversations.item.assignee", "/conversations/{id}/assignee", model=Conversation)
    config.add_view(set_assignee, route_name="conversations.item.assignee", request_method="PUT", renderer="json",
                    body_schema=AssigneeSet, response_schema=ConversationAnswer)
    config.add_route("conversations.item.labels", "/conversations/{id}/labels", model=Conversation)
    config.add_view(change_labels, route_name="conversations.item.labels", request_method="POST", renderer="json",
                    body_schema=LabelsChange, response_schema=ConversationAnswer)
