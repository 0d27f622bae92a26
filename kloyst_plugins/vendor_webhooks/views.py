"""The vendor webhooks HTTP API: ``/v1/webhook-endpoints``, ``/v1/webhook-deliveries``, ``/v1/events``.

Enablement, tenancy and authentication are the core's: ``model=`` loads ``{id}`` through tenant
scoping, so another vendor's endpoint or delivery is a 404. The rules are in :mod:`.services`.
The feed (``GET /v1/events``) reads the vendor's ``vendor_event`` rows after the cursor by the
``(vendor_id, seq)`` key: an empty poll is one index look-up.
"""

from __future__ import annotations

import base64
import binascii

from sqlalchemy import func, select

from kloyst.api import Gone, no_content, Page, paginate, Unprocessable
from kloyst_plugins.vendor_webhooks.bodies import event_id, events_json, FeedRow
from kloyst_plugins.vendor_webhooks.models import VendorEvent, VendorEventCounter, WebhookDelivery, WebhookEndpoint
from kloyst_plugins.vendor_webhooks.schemas import (DeliveryAnswer, DeliveryListQuery, DeliveryPage, EndpointAnswer,
                                                    EndpointCreate, EndpointPage, EndpointUpdate, EndpointWithSecret,
                                                    EventFeed, EventFeedQuery, Redelivered)
from kloyst_plugins.vendor_webhooks.services import checked_types, EndpointService


def endpoint_json(endpoint: WebhookEndpoint) -> dict:
    return {"id": endpoint.id, "url": endpoint.url, "event_types": list(endpoint.event_types),
            "description": endpoint.description, "enabled": endpoint.enabled,
            "consecutive_failures": endpoint.consecutive_failures, "paused_until": endpoint.paused_until,
            "previous_secret_expires_at": endpoint.previous_secret_expires_at,
            "created_at": endpoint.created_at, "updated_at": endpoint.updated_at}


def delivery_json(delivery: WebhookDelivery, event_type: str) -> dict:
    return {"id": delivery.id, "endpoint_id": delivery.endpoint_id, "event_id": event_id(delivery.event_row_id),
            "event_type": event_type, "status": delivery.status, "attempts": delivery.attempts,
            "last_status_code": delivery.last_status_code, "last_error": delivery.last_error,
            "last_attempt_at": delivery.last_attempt_at, "next_attempt_at": delivery.next_attempt_at,
            "delivered_at": delivery.delivered_at, "created_at": delivery.created_at}


def _types_of(db, deliveries) -> dict[int, str]:
    ids = {d.event_row_id for d in deliveries}
    if not ids:
        return {}
    return dict(db.execute(select(VendorEvent.id, VendorEvent.type).where(VendorEvent.id.in_(ids))).all())


def list_endpoints(request):
    page = paginate(request.db, select(WebhookEndpoint), WebhookEndpoint, request.validated_query())
    return {"items": [endpoint_json(e) for e in page.items], "next_cursor": page.next_cursor}


def create_endpoint(request):
    body = request.validated()
    endpoint, secret = EndpointService.for_request(request).create(
        url=body.url, event_types=body.event_types, description=body.description, enabled=body.enabled)
    request.response.status_int = 201
    return {"endpoint": endpoint_json(endpoint), "secret": secret}


def get_endpoint(request):
    return {"endpoint": endpoint_json(request.context)}


def patch_endpoint(request):
    body = request.validated()
    fields = {name: getattr(body, name) for name in body.model_fields_set}
    return {"endpoint": endpoint_json(EndpointService.for_request(request).update(request.context, fields))}


def delete_endpoint(request):
    request.db.delete(request.context)  # its deliveries go with it (ON DELETE CASCADE)
    request.db.flush()
    return no_content(request)


def rotate_secret(request):
    secret = EndpointService.for_request(request).rotate_secret(request.context)
    return {"endpoint": endpoint_json(request.context), "secret": secret}


def list_deliveries(request):
    query = request.validated_query()
    conditions = [WebhookDelivery.endpoint_id == request.context.id]
    if query.status is not None:
        conditions.append(WebhookDelivery.status == query.status.value)
    page = paginate(request.db, select(WebhookDelivery).where(*conditions), WebhookDelivery,
                    Page(cursor=query.cursor, limit=query.limit))
    types = _types_of(request.db, page.items)
    return {"items": [delivery_json(d, types.get(d.event_row_id, "")) for d in page.items],
            "next_cursor": page.next_cursor}


def redeliver_dead(request):
    return {"redelivered": EndpointService.for_request(request).redeliver_dead(request.context)}


def get_delivery(request):
    delivery = request.context
    return {"delivery": delivery_json(delivery, _types_of(request.db, [delivery]).get(delivery.event_row_id, ""))}


def redeliver(request):
    delivery = EndpointService.for_request(request).redeliver(request.context)
    return {"delivery": delivery_json(delivery, _types_of(request.db, [delivery]).get(delivery.event_row_id, ""))}


# -- the event feed ---------------------------------------------------------------------------------------

_CURSOR_PREFIX = "s:"


def encode_feed_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_feed_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(text)
        seq = int(text[len(_CURSOR_PREFIX):])
        if seq < 0:
            raise ValueError(text)
        return seq
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise Unprocessable("the cursor is not valid; use next_cursor from the previous poll", code="invalid_cursor",
                            field="after") from None


def event_feed(request):
    query = request.validated_query()
    after = decode_feed_cursor(query.after) if query.after else 0
    statement = select(VendorEvent).where(VendorEvent.seq > after)
    types = checked_types([t.strip() for t in query.types.split(",") if t.strip()], "types") if query.types else None
    if types is not None and "*" not in types:
        # Read before the rows: every event numbered up to here has committed, matching or not, so an empty page
        # moves the cursor past them and the next poll does not look at them again.
        latest = request.db.scalar(select(VendorEventCounter.last_seq)) or 0
        statement = statement.where(VendorEvent.type.in_(types))
    else:
        latest = 0
    rows = request.db.scalars(statement.order_by(VendorEvent.seq).limit(query.limit)).all()
    if after and (not rows or rows[0].seq > after + 1):
        _check_not_pruned(request, after)
    feed = [FeedRow(r.id, r.vendor_id, r.type, r.occurred_at, r.payload) for r in rows]
    last = rows[-1].seq if rows else after
    if len(rows) < query.limit:
        last = max(last, latest)
    return {"items": events_json(request.db, request.registry["kloyst.cipher"], feed),
            "next_cursor": encode_feed_cursor(last)}


def _check_not_pruned(request, after: int) -> None:
    """410 when events after the cursor were pruned (``vendor_webhooks.retention_days``): the poller missed them.

    Only asked when the page does not start right after the cursor (a filtered page, an empty one, or a gap),
    so a poller that keeps up pays nothing for it; then it is one look-up on ``(vendor_id, seq)``.
    """
    oldest = request.db.scalar(select(func.min(VendorEvent.seq)))
    latest = request.db.scalar(select(VendorEventCounter.last_seq)) or 0
    missing = oldest - 1 if oldest is not None else latest  # the newest seq that is gone
    if missing > after:
        days = request.registry.settings["vendor_webhooks.retention_days"]
        raise Gone(f"events after this cursor were pruned (the feed keeps {days} days): poll again without "
                   f"`after` to start from the oldest event kept", code="cursor_expired", details={"field": "after"})


# Where a vendor's events (customers' messages among them) are sent is the admins' decision; members read.
ADMIN = "vendor.admin"


def includeme(config) -> None:
    config.add_route("vendor_webhooks.endpoints", "/webhook-endpoints")
    config.add_view(list_endpoints, route_name="vendor_webhooks.endpoints", request_method="GET", renderer="json",
                    query_schema=Page, response_schema=EndpointPage)
    config.add_view(create_endpoint, route_name="vendor_webhooks.endpoints", request_method="POST", renderer="json",
                    body_schema=EndpointCreate, response_schema=EndpointWithSecret, status=201,
                    permission=ADMIN)
    config.add_route("vendor_webhooks.endpoints.item", "/webhook-endpoints/{id}", model=WebhookEndpoint)
    config.add_view(get_endpoint, route_name="vendor_webhooks.endpoints.item", request_method="GET", renderer="json",
                    response_schema=EndpointAnswer)
    config.add_view(patch_endpoint, route_name="vendor_webhooks.endpoints.item", request_method="PATCH",
                    renderer="json", body_schema=EndpointUpdate, response_schema=EndpointAnswer, permission=ADMIN)
    config.add_view(delete_endpoint, route_name="vendor_webhooks.endpoints.item", request_method="DELETE",
                    renderer="json", status=204, permission=ADMIN)
    config.add_route("vendor_webhooks.endpoints.item.rotate_secret", "/webhook-endpoints/{id}/rotate-secret",
                     model=WebhookEndpoint)
    config.add_view(rotate_secret, route_name="vendor_webhooks.endpoints.item.rotate_secret", request_method="POST",
                    renderer="json", response_schema=EndpointWithSecret, permission=ADMIN)
    config.add_route("vendor_webhooks.endpoints.item.deliveries", "/webhook-endpoints/{id}/deliveries",
                     model=WebhookEndpoint)
    config.add_view(list_deliveries, route_name="vendor_webhooks.endpoints.item.deliveries", request_method="GET",
                    renderer="json", query_schema=DeliveryListQuery, response_schema=DeliveryPage)
    config.add_route("vendor_webhooks.endpoints.item.redeliver", "/webhook-endpoints/{id}/redeliver",
                     model=WebhookEndpoint)
    config.add_view(redeliver_dead, route_name="vendor_webhooks.endpoints.item.redeliver", request_method="POST",
                    renderer="json", response_schema=Redelivered, permission=ADMIN)
    config.add_route("vendor_webhooks.deliveries.item", "/webhook-deliveries/{id}", model=WebhookDelivery)
    config.add_view(get_delivery, route_name="vendor_webhooks.deliveries.item", request_method="GET", renderer="json",
                    response_schema=DeliveryAnswer)
    config.add_route("vendor_webhooks.deliveries.item.redeliver", "/webhook-deliveries/{id}/redeliver",
                     model=WebhookDelivery)
    config.add_view(redeliver, route_name="vendor_webhooks.deliveries.item.redeliver", request_method="POST",
                    renderer="json", response_schema=DeliveryAnswer, permission=ADMIN)
    config.add_route("vendor_webhooks.events", "/events")
    config.add_view(event_feed, route_name="vendor_webhooks.events", request_method="GET", renderer="json",
                    query_schema=EventFeedQuery, response_schema=EventFeed)
