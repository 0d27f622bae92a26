"""The messages HTTP API: ``/v1/messages`` and ``/v1/dead-letters``.

Enablement, tenancy and authentication are the core's (see the contacts views): ``model=``
loads ``{id}`` through tenant scoping, so another vendor's message or dead letter is a 404,
and members may send, read and requeue. The rules live in :mod:`.services`; views translate
HTTP, including the ``Idempotency-Key`` header (a replayed answer carries
``Idempotent-Replayed: true``, as Stripe's does).

Recipients' numbers are returned in full, as the contacts API returns them to the same
members: the vendor owns that data, and a masked number could not be checked against a
complaint. They are read from the sealed content, never stored in the clear.
"""

from __future__ import annotations

from sqlalchemy import select

from kloyst.api import idempotency_key, openapi, paginate
from kloyst_plugins.messages.models import DeadLetter, MessageLog
from kloyst_plugins.messages.schemas import (DeadLetterAnswer, DeadLetterListQuery, DeadLetterPage, MessageAnswer,
                                             MessageCreate, MessageListQuery, MessagePage)
from kloyst_plugins.messages.services import (Idempotency, message_json, MessageService, REPLAYED_HEADER, TemplateSend,
                                              request_hash)


def dead_letter_json(letter: DeadLetter, message: MessageLog | None, service: MessageService) -> dict:
    return {"id": letter.id, "message_id": letter.message_id, "error_code": letter.error_code,
            "error_subcode": letter.error_subcode, "error_kind": letter.error_kind, "reason": letter.reason,
            "details": letter.details, "created_at": letter.created_at, "requeued_at": letter.requeued_at,
            "message": message_json(message, service) if message is not None else None}


def _template_send(body: MessageCreate) -> TemplateSend:
    given = body.parameters
    return TemplateSend(phone_number_id=body.phone_number_id, template_name=body.template.name,
                        template_language=body.template.language, to=body.to, contact_id=body.contact_id,
                        body=given.body if given else None, header=given.header if given else None,
                        buttons=tuple(given.buttons) if given else (), variables=body.variables,
                        use_parameters=given is not None)


def send_message(request):
    key = idempotency_key(request.headers)
    body = request.validated()
    service = MessageService.for_request(request)
    idempotency = Idempotency(key, request_hash(request.json_data)) if key is not None else None
    queued = service.queue(_template_send(body), idempotency=idempotency)
    request.response.status_int = 202
    if queued.replayed:
        request.response.headers[REPLAYED_HEADER] = "true"
    return {"message": message_json(queued.message, service)}


def list_messages(request):
    query = request.validated_query()
    conditions = [column == value for column, value in (
        (MessageLog.status, query.status.value if query.status else None),
        (MessageLog.phone_number_id, query.phone_number_id),
        (MessageLog.contact_id, query.contact_id),
        (MessageLog.campaign_id, query.campaign_id)) if value is not None]
    page = paginate(request.db, select(MessageLog).where(*conditions), MessageLog, query)
    service = MessageService.for_request(request)
    return {"items": [message_json(m, service) for m in page.items], "next_cursor": page.next_cursor}


def get_message(request):
    return {"message": message_json(request.context, MessageService.for_request(request))}


def list_dead_letters(request):
    query = request.validated_query()
    conditions = []
    if query.requeued is not None:
        conditions.append(DeadLetter.requeued_at.is_not(None) if query.requeued else DeadLetter.requeued_at.is_(None))
    page = paginate(request.db, select(DeadLetter).where(*conditions), DeadLetter, query)
    ids = {letter.message_id for letter in page.items}
    messages = {m.id: m for m in request.db.scalars(select(MessageLog).where(MessageLog.id.in_(ids)))} if ids else {}
    service = MessageService.for_request(request)
    return {"items": [dead_letter_json(letter, messages.get(letter.message_id), service) for letter in page.items],
            "next_cursor": page.next_cursor}


def get_dead_letter(request):
    letter = request.context
    return {"dead_letter": dead_letter_json(letter, request.db.get(MessageLog, letter.message_id),
                                            MessageService.for_request(request))}


def requeue_dead_letter(request):
    service = MessageService.for_request(request)
    message = service.requeue(request.context)
    return {"dead_letter": dead_letter_json(request.context, message, service)}


def includeme(config) -> None:
    config.add_route("messages.collection", "/messages")
    config.add_view(list_messages, route_name="messages.collection", request_method="GET", renderer="json",
                    query_schema=MessageListQuery, response_schema=MessagePage)
    config.add_view(send_message, route_name="messages.collection", request_method="POST", renderer="json",
                    body_schema=MessageCreate, response_schema=MessageAnswer, status=202,
                    openapi=openapi.idempotency())
    config.add_route("messages.item", "/messages/{id}", model=MessageLog)
    config.add_view(get_message, route_name="messages.item", request_method="GET", renderer="json",
                    response_schema=MessageAnswer)
    config.add_route("messages.dead_letters", "/dead-letters")
    config.add_view(list_dead_letters, route_name="messages.dead_letters", request_method="GET", renderer="json",
                    query_schema=DeadLetterListQuery, response_schema=DeadLetterPage)
    config.add_route("messages.dead_letters.item", "/dead-letters/{id}", model=DeadLetter)
    config.add_view(get_dead_letter, route_name="messages.dead_letters.item", request_method="GET", renderer="json",
                    response_schema=DeadLetterAnswer)
    config.add_route("messages.dead_letters.item.requeue", "/dead-letters/{id}/requeue", model=DeadLetter)
    config.add_view(requeue_dead_letter, route_name="messages.dead_letters.item.requeue", request_method="POST",
                    renderer="json", response_schema=DeadLetterAnswer)
