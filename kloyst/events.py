"""Domain events: what happened in a vendor, told to the vendor's enabled plugins after commit.

An event is written to the outbox in the transaction that caused it (so it exists exactly
when the change does) under the topic ``vendor.event``; the worker then calls the tenant
hook ``kloyst_vendor_event`` on the plugins that vendor has enabled. Names are past
tense: ``UserInvited``, ``PluginEnabled``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from kloyst.outbox import Outbox

TOPIC = "vendor.event"


@dataclass(frozen=True)
class DomainEvent:
    id: int
    name: str
    vendor_id: uuid.UUID
    payload: dict[str, Any] = field(default_factory=dict)


def record(outbox: Outbox, vendor_id: uuid.UUID, name: str, **payload: Any) -> None:
    outbox.add(TOPIC, {"name": name, "payload": payload}, vendor_id=vendor_id)


def deliver(ctx, outbox_event) -> None:
    """Outbox handler for ``vendor.event``: call the tenant hook on the vendor's enabled plugins only."""
    from kloyst.plugins.enablement import enabled_plugins

    event = DomainEvent(id=outbox_event.id, name=outbox_event.payload["name"], vendor_id=outbox_event.vendor_id,
                        payload=outbox_event.payload.get("payload", {}))
    pm = ctx.plugin_manager
    pm.for_plugins("kloyst_vendor_event", enabled_plugins(ctx.db, pm, event.vendor_id))(event=event, ctx=ctx)
