"""The rules of endpoints and deliveries: what a URL and a subscription may be, rotation, redelivery.

Views translate HTTP; this module decides. Each refusal is a 422 that names the field and says
what to fix (an unsafe URL says which address it resolved to and why that is refused).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import func, select, update

from kloyst.api import Conflict, events, NotFound, Unprocessable, utcnow
from kloyst_plugins.vendor_webhooks.addresses import AddressPolicy, check_url, UnsafeUrl
from kloyst_plugins.vendor_webhooks.feed import ALL_TYPES
from kloyst_plugins.vendor_webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from kloyst_plugins.vendor_webhooks.sealing import seal_secret
from kloyst_plugins.vendor_webhooks.signatures import new_secret


def checked_url(url: str, settings) -> str:
    try:
        check_url(url, AddressPolicy.from_settings(settings))
    except UnsafeUrl as exc:
        raise Unprocessable(str(exc), code="unsafe_url", field="url") from None
    return url


def checked_types(names: list[str], field: str = "event_types") -> list[str]:
    """The event types, each a catalogue name (or ``*``), without repeats, in the order given."""
    known = set(events.CATALOGUE)
    unknown = [n for n in names if n != ALL_TYPES and n not in known]
    if unknown:
        raise Unprocessable(f"unknown event types: {', '.join(sorted(set(unknown)))[:300]}; known types are "
                            f"{', '.join(sorted(known))} (docs/events.md), or \"*\" for all",
                            code="unknown_event_type", field=field)
    return list(dict.fromkeys(names))


class EndpointService:
    def __init__(self, db, *, vendor_id: uuid.UUID, cipher, settings) -> None:
        self.db, self.vendor_id, self.cipher, self.settings = db, vendor_id, cipher, settings

    @classmethod
    def for_request(cls, request) -> EndpointService:
        return cls(request.db, vendor_id=request.vendor_id, cipher=request.registry["kloyst.cipher"],
                   settings=request.registry.settings)

    def create(self, *, url: str, event_types: list[str], description: str, enabled: bool
               ) -> tuple[WebhookEndpoint, str]:
        limit = self.settings["vendor_webhooks.max_endpoints"]
        count = self.db.scalar(select(func.count()).select_from(WebhookEndpoint)
                               .where(WebhookEndpoint.vendor_id == self.vendor_id))
        if count >= limit:
            raise Conflict(f"a vendor may register {limit} webhook endpoints; delete one first",
                           code="too_many_endpoints")
        secret = new_secret()
        endpoint = WebhookEndpoint(vendor_id=self.vendor_id, url=checked_url(url, self.settings),
                                   event_types=checked_types(event_types), description=description, enabled=enabled,
                                   secret_enc=seal_secret(self.cipher, self.vendor_id, secret),
                                   enc_kid=self.cipher.active_kid)
        self.db.add(endpoint)
        self.db.flush()
        return endpoint, secret

    def update(self, endpoint: WebhookEndpoint, fields: dict) -> WebhookEndpoint:
        if fields.get("url") is not None:
            endpoint.url = checked_url(fields["url"], self.settings)
        if fields.get("event_types") is not None:
            endpoint.event_types = checked_types(fields["event_types"])
        if fields.get("description") is not None:
            endpoint.description = fields["description"]
        if fields.get("enabled") is not None:
            endpoint.enabled = fields["enabled"]
            if endpoint.enabled:  # turned on again: a clean start, not the old circuit's pause
                endpoint.consecutive_failures, endpoint.paused_until = 0, None
        self.db.flush()
        return endpoint

    def rotate_secret(self, endpoint: WebhookEndpoint) -> str:
        """A new secret; the current one keeps signing too for ``vendor_webhooks.secret_overlap_seconds``."""
        secret = new_secret()
        overlap = float(self.settings["vendor_webhooks.secret_overlap_seconds"])
        endpoint.previous_secret_enc = endpoint.secret_enc if overlap > 0 else None
        endpoint.previous_secret_expires_at = utcnow() + dt.timedelta(seconds=overlap) if overlap > 0 else None
        endpoint.secret_enc = seal_secret(self.cipher, self.vendor_id, secret)
        endpoint.enc_kid = self.cipher.active_kid
        self.db.flush()
        return secret

    def redeliver(self, delivery: WebhookDelivery) -> WebhookDelivery:
        """Queue one delivery again now, with a new retry window (a delivery being attempted: 409)."""
        if delivery.status == DeliveryStatus.DELIVERING.value:
            raise Conflict("this delivery is being attempted right now; look again in a few seconds",
                           code="delivery_in_progress")
        now = utcnow()
        delivery.status, delivery.next_attempt_at, delivery.window_started_at = DeliveryStatus.PENDING.value, now, now
        self.db.flush()
        return delivery

    def redeliver_dead(self, endpoint: WebhookEndpoint) -> int:
        """Queue every DEAD delivery of the endpoint again, each with a new retry window."""
        now = utcnow()
        result = self.db.execute(update(WebhookDelivery)
                                 .where(WebhookDelivery.endpoint_id == endpoint.id,
                                        WebhookDelivery.status == DeliveryStatus.DEAD.value)
                                 .values(status=DeliveryStatus.PENDING.value, next_attempt_at=now,
                                         window_started_at=now, updated_at=now)
                                 .execution_options(synchronize_session=False))
        if endpoint.paused_until is not None:  # the vendor says it works again: try at once
            endpoint.paused_until = None
        self.db.flush()
        return result.rowcount

    def get(self, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        endpoint = self.db.get(WebhookEndpoint, endpoint_id)
        if endpoint is None or endpoint.vendor_id != self.vendor_id:
            raise NotFound("no such webhook endpoint")
        return endpoint
