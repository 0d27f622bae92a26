"""``kloyst.webhooks.unprocessed_changes``: what Meta reported that no drainer has finished applying.

The messages plugin asks it before sending a message again, so a status Meta already sent is
never ignored: it must list stored deliveries whatever their claim, and only those.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from webhooks_support import Line, envelope, meta_id, status, statuses

from kloyst.db import utcnow
from kloyst.webhooks import deliveries as delivery_rows
from kloyst.webhooks import unprocessed_changes
from kloyst.webhooks.drainer import LEASE_SECONDS
from kloyst_plugins.waba.models import PhoneNumber

T0 = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.timezone.utc)


def a_line() -> Line:
    return Line(uuid.uuid4(), PhoneNumber(meta_phone_number_id=meta_id()), meta_id())


def store(db, body: bytes, received_at: dt.datetime, *, next_attempt_at: dt.datetime | None = None) -> int:
    [delivery] = delivery_rows.store(db, [(body, received_at)], next_attempt_at=next_attempt_at or utcnow())
    db.commit()
    return delivery.id


def wamids(changes) -> list[str]:
    return [item["id"] for change in changes for item in change.value.get("statuses", ())]


def test_every_unprocessed_delivery_is_listed_whatever_its_claim_and_processed_ones_are_not(db):
    line = a_line()
    due = store(db, statuses(line, status("wamid.due", "sent")), T0)
    store(db, statuses(line, status("wamid.claimed", "delivered")), T0,
          next_attempt_at=utcnow() + dt.timedelta(seconds=LEASE_SECONDS))  # being applied by a drainer right now
    waiting = store(db, statuses(line, status("wamid.retrying", "read")), T0)
    delivery_rows.mark_failed(db, delivery_rows.Delivery(waiting, b"", T0), "RuntimeError: hiccup", retry_in=60)
    delivery_rows.mark_processed(db, [store(db, statuses(line, status("wamid.applied", "read")), T0)])
    db.commit()
    assert sorted(wamids(unprocessed_changes(db, received_since=T0))) == ["wamid.claimed", "wamid.due",
                                                                         "wamid.retrying"]
    delivery_rows.mark_processed(db, [due])
    db.commit()
    assert "wamid.due" not in wamids(unprocessed_changes(db, received_since=T0))


def test_deliveries_received_before_the_bound_are_left_out_and_one_received_at_it_is_in(db):
    line = a_line()
    store(db, statuses(line, status("wamid.before", "sent")), T0 - dt.timedelta(microseconds=1))
    store(db, statuses(line, status("wamid.at", "sent")), T0)
    store(db, statuses(line, status("wamid.after", "sent")), T0 + dt.timedelta(minutes=1))
    assert wamids(unprocessed_changes(db, received_since=T0)) == ["wamid.after", "wamid.at"]


def test_newest_deliveries_come_first_each_with_its_changes_in_metas_order_and_with_where_they_came_from(db):
    line = a_line()
    older = store(db, statuses(line, status("wamid.1", "sent"), status("wamid.2", "sent")), T0)
    newer = store(db, statuses(line, status("wamid.3", "read")), T0 + dt.timedelta(seconds=5))
    changes = unprocessed_changes(db, received_since=T0)
    assert [(change.delivery_id, wamids([change])) for change in changes] == [
        (newer, ["wamid.3"]), (older, ["wamid.1", "wamid.2"])]
    assert {(c.field, c.meta_waba_id, c.meta_phone_number_id) for c in changes} == {
        ("messages", line.meta_waba_id, line.meta_phone_number_id)}
    assert changes[0].received_at == T0 + dt.timedelta(seconds=5)


def test_the_limit_counts_deliveries_not_changes_and_keeps_the_newest(db):
    line = a_line()
    for second in range(3):
        store(db, statuses(line, status(f"wamid.{second}a", "sent"), status(f"wamid.{second}b", "sent")),
              T0 + dt.timedelta(seconds=second))
    assert wamids(unprocessed_changes(db, received_since=T0, limit=2)) == ["wamid.2a", "wamid.2b", "wamid.1a",
                                                                          "wamid.1b"]


@pytest.mark.parametrize("malformed", [b"not json", b'{"object": "whatsapp_business_account"}'])
def test_bodies_that_are_not_a_meta_envelope_are_skipped(db, malformed):
    line = a_line()
    store(db, malformed, T0 + dt.timedelta(seconds=1))
    store(db, statuses(line, status("wamid.fine", "sent")), T0)
    assert wamids(unprocessed_changes(db, received_since=T0)) == ["wamid.fine"]


def test_every_vendors_changes_are_returned_and_every_field_the_caller_filters(db):
    ours, theirs = a_line(), a_line()
    store(db, statuses(ours, status("wamid.ours", "sent")), T0)
    store(db, statuses(theirs, status("wamid.theirs", "sent")), T0 + dt.timedelta(seconds=1))
    store(db, envelope(ours, {"event": "FLAGGED"}, field="phone_number_quality_update"), T0 + dt.timedelta(seconds=2))
    changes = unprocessed_changes(db, received_since=T0)
    assert [(change.field, change.meta_phone_number_id) for change in changes] == [
        ("phone_number_quality_update", ours.meta_phone_number_id), ("messages", theirs.meta_phone_number_id),
        ("messages", ours.meta_phone_number_id)]


def test_it_reads_through_a_plain_connection_as_well_as_a_session(db):
    store(db, statuses(a_line(), status("wamid.conn", "sent")), T0)
    assert wamids(unprocessed_changes(db.connection(), received_since=T0)) == ["wamid.conn"]
