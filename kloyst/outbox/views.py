"""Platform-admin operations: outbox backlog, queue depth, dead letters and requeue."""

from __future__ import annotations

import uuid

from pydantic import Field

from kloyst.db import tenancy
from kloyst.errors import NotFound, Unprocessable
from kloyst.http.validation import Schema
from kloyst.outbox import services
from kloyst.outbox.schemas import Backlog, DeadEventPage, QueueDepth, Requeued

ADMIN = {"permission": "platform.admin", "renderer": "json"}


class DeadLetterQuery(Schema):
    vendor_id: uuid.UUID | None = None
    cursor: int | None = Field(default=None, ge=1)
    limit: int = Field(default=50, ge=1, le=200)


class RequeueBody(Schema):
    ids: list[int] | None = Field(default=None, max_length=10_000)
    vendor_id: uuid.UUID | None = None
    all: bool = False


def outbox_backlog(request):
    with tenancy.unscoped(request.db):
        rows = services.backlog(request.db)
    oldest = max((r.oldest_pending_age_seconds for r in rows if r.oldest_pending_age_seconds is not None),
                 default=None)
    return {
        "vendors": [r.as_json() for r in rows],
        "totals": {key: sum(getattr(r, key) for r in rows) for key in ("pending", "in_flight", "dead")},
        "oldest_pending_age_seconds": oldest,
    }


def queue_depth(request):
    queue = request.registry["kloyst.queue"]
    return {"backend": request.registry.settings["kloyst.queue.backend"], "depth": queue.depth()}


def list_dead_letters(request):
    query = request.validated_query()
    with tenancy.unscoped(request.db):
        events = services.dead_letters(request.db, vendor_id=query.vendor_id, before_id=query.cursor,
                                       limit=query.limit + 1)
    more = len(events) > query.limit
    events = events[: query.limit]
    return {"items": [services.dead_letter_json(e) for e in events],
            "next_cursor": events[-1].id if more else None}


def requeue_one(request):
    try:
        event_id = int(request.matchdict["id"])
    except ValueError:
        raise NotFound("no dead-letter event with that id") from None
    with tenancy.unscoped(request.db):
        count = services.requeue(request.db, ids=[event_id])
    if count == 0:
        raise NotFound("no dead-letter event with that id")
    return {"requeued": count}


def requeue_many(request):
    body = request.validated()
    if not body.ids and body.vendor_id is None and not body.all:
        raise Unprocessable("say which dead events to requeue: ids, vendor_id, or all: true")
    with tenancy.unscoped(request.db):
        count = services.requeue(request.db, ids=body.ids, vendor_id=body.vendor_id, all_dead=body.all)
    return {"requeued": count}


def includeme(config) -> None:
    config.add_route("admin.outbox", "/admin/outbox")
    config.add_view(outbox_backlog, route_name="admin.outbox", request_method="GET", **ADMIN, response_schema=Backlog)
    config.add_route("admin.queue", "/admin/queue")
    config.add_view(queue_depth, route_name="admin.queue", request_method="GET", **ADMIN, response_schema=QueueDepth)
    config.add_route("admin.outbox.dead", "/admin/outbox/dead")
    config.add_view(list_dead_letters, route_name="admin.outbox.dead", request_method="GET", **ADMIN,
                    query_schema=DeadLetterQuery, response_schema=DeadEventPage)
    config.add_route("admin.outbox.dead.requeue", "/admin/outbox/dead/requeue")
    config.add_view(requeue_many, route_name="admin.outbox.dead.requeue", request_method="POST", **ADMIN,
                    body_schema=RequeueBody, response_schema=Requeued)
    config.add_route("admin.outbox.dead.item.requeue", "/admin/outbox/dead/{id}/requeue")
    config.add_view(requeue_one, route_name="admin.outbox.dead.item.requeue", request_method="POST", **ADMIN,
                    response_schema=Requeued)
