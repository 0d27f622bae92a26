"""A change naming a phone number id no vendor holds is dropped and counted, never handed to the WABA's owner.

Issue 15: a status webhook for an unknown phone number id of a vendor's WABA was applied as that
vendor's. A number Kloyst has not synced has sent nothing through Kloyst, so no status of it can be
the vendor's; statuses name messages by wamid, and a forged or misrouted one must not move them.
"""

import uuid

from sqlalchemy import func, select
from webhooks_support import Builder, Line, deliveries, meta_id, status, statuses

from kloyst import metrics as kmetrics
from kloyst.db import tenancy, utcnow
from kloyst.webhooks import deliveries as delivery_rows
from kloyst.webhooks.drainer import drain_once
from kloyst_plugins.messages.models import MessageStatus, MessageStatusEvent
from kloyst_plugins.waba.models import PhoneNumber

DROPPED = "kloyst_webhook_changes_dropped_total"


def _dropped(registry, reason: str) -> float:
    return kmetrics.of(registry).value(DROPPED, reason=reason)


def _status_events(db) -> int:
    with tenancy.unscoped(db):
        return db.scalar(select(func.count()).select_from(MessageStatusEvent))


def test_a_status_for_an_unknown_number_of_a_vendors_waba_is_dropped_and_counted(build, line, deliver, registry, db):
    message = build.message(line)
    unknown = Line(line.vendor_id, PhoneNumber(meta_phone_number_id=meta_id()), line.meta_waba_id)
    before = _dropped(registry, "unknown_phone_number")
    deliver(statuses(unknown, status(message.wamid, "read"), status(message.wamid, "delivered")))
    assert build.reload(message).status == MessageStatus.SENT.value
    assert _status_events(db) == 0
    assert _dropped(registry, "unknown_phone_number") - before == 1  # one change, however many statuses it holds
    [delivery] = deliveries(db)
    assert delivery.processed_at is not None and delivery.error is None  # dropped on purpose, not retried


def test_the_same_status_through_the_vendors_own_number_is_applied(build, line, deliver, registry, db):
    message = build.message(line)
    before = _dropped(registry, "unknown_phone_number")
    deliver(statuses(line, status(message.wamid, "read")))
    assert build.reload(message).status == MessageStatus.READ.value
    assert _dropped(registry, "unknown_phone_number") == before


def test_a_change_of_a_waba_nobody_owns_is_counted_as_such(deliver, registry, db):
    stranger = Line(uuid.uuid4(), PhoneNumber(meta_phone_number_id=None), meta_id())
    before = _dropped(registry, "unknown_waba")
    deliver(statuses(stranger, status("wamid.stranger", "read")))
    assert _dropped(registry, "unknown_waba") - before == 1
    assert _status_events(db) == 0


def test_on_the_embedded_default_a_status_for_an_unknown_number_is_dropped_and_counted_too(embedded_config):
    registry = embedded_config.registry
    with registry["kloyst.session_factory"]() as db:
        tenancy.set_scope(db, tenancy.ALL_VENDORS)
        build = Builder(db, registry)
        line = build.line()
        message = build.message(line)
        unknown = Line(line.vendor_id, PhoneNumber(meta_phone_number_id=meta_id()), line.meta_waba_id)
        delivery_rows.store(db, [(statuses(unknown, status(message.wamid, "read")), utcnow())],
                            next_attempt_at=utcnow())
        db.commit()
        drain_once(registry)
        assert build.reload(message).status == MessageStatus.SENT.value
        assert _status_events(db) == 0
        [delivery] = deliveries(db)
        assert delivery.processed_at is not None and delivery.error is None
    assert _dropped(registry, "unknown_phone_number") == 1
