"""Inbound media: a customer's MessageReceived with a media id → fetched from Meta (the sandbox, over real HTTP),
scanned by a real clamd, stored encrypted, served; and the clear end states when that cannot be done.

The event is recorded on the outbox as the messages plugin records it, and delivered by the
outbox like any other (``run_outbox``); so are the fetch task and its retries.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from media_support import media_vendor, sample, TOKEN
from sqlalchemy import select, update

from kloyst import events
from kloyst.meta import MetaClient
from kloyst.outbox import Outbox
from kloyst.outbox.models import OutboxEvent
from kloyst.db import tenancy, utcnow
from kloyst.sandbox.media import new_media
from kloyst.testing.clamd import EICAR
from kloyst.testing.processes import free_port
from kloyst_plugins.media import api, tasks
from kloyst_plugins.media.limits import MEDIA_LIMITS, MediaLimit
from kloyst_plugins.media.models import Media


def customer_sends(meta_sandbox, content: bytes, mime_type: str, filename: str | None = None) -> str:
    """Put a file at the sandbox as a customer's media; its media id, as the webhook would carry it."""
    state = meta_sandbox.state
    media = new_media(state.new_id(), content, mime_type, filename)
    with state.lock:
        state.media.add(media, state.behaviour.media_ttl_seconds)
    return media.id


def message_received(db, vendor, media_id: str, kind: str = "image") -> uuid.UUID:
    """Record MessageReceived for a new inbound message carrying ``media_id``; the inbound id."""
    inbound_id = uuid.uuid4()
    with tenancy.unscoped(db):
        events.record_event(Outbox(db), vendor.vendor_id, events.MessageReceived(
            inbound_id=inbound_id, wamid=f"wamid.{uuid.uuid4().hex}", phone_number_id=vendor.number.id,
            contact_id=None, type=kind, sent_at=utcnow(), opt_out=False, media_id=media_id))
        db.commit()
    return inbound_id


def media_of(db, inbound_id) -> Media:
    db.expire_all()
    with tenancy.unscoped(db):
        return db.scalars(select(Media).where(Media.inbound_id == inbound_id)).one()


def retries_due_now(db) -> None:
    """Bring the delayed retries forward (the backoff is the outbox's, tested there)."""
    with tenancy.unscoped(db):
        db.execute(update(OutboxEvent).where(OutboxEvent.delivered_at.is_(None))
                   .values(available_at=utcnow() - dt.timedelta(seconds=1)))
        db.commit()


def test_an_inbound_image_is_fetched_scanned_stored_encrypted_and_served(testapp, db, vendor, meta_sandbox,
                                                                        run_outbox):
    meta_sandbox.state.behaviour.update({"access_token": TOKEN})  # only the number's token downloads it
    photo = sample("image/jpeg", 70_000)
    inbound_id = message_received(db, vendor, customer_sends(meta_sandbox, photo, "image/jpeg"))
    run_outbox()

    media = media_of(db, inbound_id)
    assert (media.status, media.kind, media.mime_type, media.size_bytes) == ("stored", "image", "image/jpeg", 70_000)
    assert media.scan_result == "clean" and media.direction == "inbound"
    served = testapp.get(f"/v1/media/{media.id}/content", headers=vendor.headers)
    assert served.body == photo and served.content_type == "image/jpeg"
    listed = testapp.get("/v1/media", params={"inbound_id": str(inbound_id)}, headers=vendor.headers).json
    assert [m["id"] for m in listed["items"]] == [str(media.id)]


def test_a_voice_note_keeps_metas_type_without_its_codec_parameter(db, vendor, meta_sandbox, run_outbox):
    inbound_id = message_received(db, vendor, customer_sends(meta_sandbox, sample("audio/ogg", 3_000),
                                                             "audio/ogg"), kind="audio")
    run_outbox()
    assert tasks._mime("audio/ogg; codecs=opus") == "audio/ogg"
    assert media_of(db, inbound_id).mime_type == "audio/ogg"


def test_a_replayed_message_received_does_not_fetch_twice(db, vendor, meta_sandbox, run_outbox, monkeypatch,
                                                         registry):
    media_id = customer_sends(meta_sandbox, sample("application/pdf", 2_000), "application/pdf")
    inbound_id = message_received(db, vendor, media_id, kind="document")
    with tenancy.unscoped(db):
        (event,) = db.scalars(select(OutboxEvent).where(OutboxEvent.topic == events.TOPIC,
                                                        OutboxEvent.vendor_id == vendor.vendor_id))
        payload = dict(event.payload)
    fetches = []
    real = registry["kloyst.meta"]

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def media_info(self, *args, **kwargs):
            fetches.append(args[0])
            return real.media_info(*args, **kwargs)

    monkeypatch.setitem(registry, "kloyst.meta", Counting())
    run_outbox()
    # The same event delivered again (at least once): a new outbox row with the same payload.
    with tenancy.unscoped(db):
        Outbox(db).add(events.TOPIC, payload, vendor_id=vendor.vendor_id)
        db.commit()
    run_outbox()
    assert fetches == [media_id]
    assert media_of(db, inbound_id).status == "stored"
    assert api.media_for_inbound(db, vendor.vendor_id, [inbound_id])[inbound_id].status == "stored"


def test_an_infected_inbound_media_is_quarantined_and_never_served(testapp, db, vendor, meta_sandbox, run_outbox,
                                                                   media_settings):
    inbound_id = message_received(db, vendor, customer_sends(meta_sandbox, b"%PDF-1.4\n" + EICAR,
                                                             "application/pdf"), kind="document")
    run_outbox()
    media = media_of(db, inbound_id)
    assert media.status == "quarantined" and "Eicar" in media.scan_result
    error = testapp.get(f"/v1/media/{media.id}/content", headers=vendor.headers, status=410).json["error"]
    assert error["code"] == "media_quarantined"
    assert not [p for p in Path(media_settings["media.storage_dir"]).rglob("*") if p.is_file()]


def test_media_meta_no_longer_has_is_expired(testapp, db, vendor, meta_sandbox, run_outbox):
    media_id = customer_sends(meta_sandbox, sample("image/png", 500), "image/png")
    meta_sandbox.state.behaviour.update({"media_ttl_seconds": 0})  # Meta forgot it
    inbound_id = message_received(db, vendor, media_id)
    run_outbox()
    media = media_of(db, inbound_id)
    assert media.status == "expired" and "no longer has" in media.error
    error = testapp.get(f"/v1/media/{media.id}/content", headers=vendor.headers, status=410).json["error"]
    assert error["code"] == "media_expired"


def test_a_transient_meta_failure_is_retried_and_then_stored(testapp, db, vendor, meta_sandbox, run_outbox,
                                                             monkeypatch, registry):
    photo = sample("image/png", 1_000)
    inbound_id = message_received(db, vendor, customer_sends(meta_sandbox, photo, "image/png"))
    real = registry["kloyst.meta"]
    # Meta unreachable: a real connection refused, classified transient like a 5xx.
    monkeypatch.setitem(registry, "kloyst.meta", MetaClient(f"http://127.0.0.1:{free_port()}", "v23.0",
                                                            timeout=2.0))
    run_outbox()
    media = media_of(db, inbound_id)
    assert (media.status, media.attempts) == ("pending", 1) and "network" in media.error
    pending = testapp.get(f"/v1/media/{media.id}/content", headers=vendor.headers, status=409).json["error"]
    assert pending["code"] == "media_pending"

    monkeypatch.setitem(registry, "kloyst.meta", real)
    retries_due_now(db)
    run_outbox()
    media = media_of(db, inbound_id)
    assert (media.status, media.attempts, media.error) == ("stored", 2, None)
    assert testapp.get(f"/v1/media/{media.id}/content", headers=vendor.headers).body == photo


def test_transient_failures_end_in_failed_with_the_reason_after_the_last_attempt(db, vendor, meta_sandbox,
                                                                                 run_outbox, monkeypatch, registry):
    monkeypatch.setattr(tasks, "MAX_ATTEMPTS", 3)
    inbound_id = message_received(db, vendor, customer_sends(meta_sandbox, sample("image/png"), "image/png"))
    monkeypatch.setitem(registry, "kloyst.meta", MetaClient(f"http://127.0.0.1:{free_port()}", "v23.0",
                                                            timeout=2.0))
    for _ in range(3):
        retries_due_now(db)
        run_outbox()
    media = media_of(db, inbound_id)
    assert (media.status, media.attempts) == ("failed", 3)
    assert media.error.startswith("gave up after 3 attempts")


def test_while_the_scanner_is_down_the_media_waits_and_is_stored_once_it_answers(db, vendor, meta_sandbox,
                                                                                 run_outbox, monkeypatch, registry,
                                                                                 media_clamd):
    inbound_id = message_received(db, vendor, customer_sends(meta_sandbox, sample("image/png"), "image/png"))
    monkeypatch.setitem(registry.settings, "media.clamd_address", f"tcp://127.0.0.1:{free_port()}")
    run_outbox()
    media = media_of(db, inbound_id)
    assert (media.status, media.attempts, media.scan_result) == ("pending", 0, tasks.WAITING_FOR_SCANNER)
    monkeypatch.setitem(registry.settings, "media.clamd_address", media_clamd.address)
    retries_due_now(db)
    run_outbox()
    assert media_of(db, inbound_id).status == "stored"


def test_a_message_without_media_records_nothing(db, vendor, run_outbox):
    with tenancy.unscoped(db):
        events.record_event(Outbox(db), vendor.vendor_id, events.MessageReceived(
            inbound_id=uuid.uuid4(), wamid="wamid.text", phone_number_id=vendor.number.id, contact_id=None,
            type="text", sent_at=utcnow(), opt_out=False))
        db.commit()
    run_outbox()
    with tenancy.unscoped(db):
        assert db.query(Media).count() == 0


def test_inbound_media_of_one_vendor_is_404_to_another(testapp, db, registry, vendor, meta_sandbox, run_outbox):
    inbound_id = message_received(db, vendor, customer_sends(meta_sandbox, sample("image/png"), "image/png"))
    run_outbox()
    media = media_of(db, inbound_id)
    other = media_vendor(db, registry, meta_sandbox, "Other Co")
    testapp.get(f"/v1/media/{media.id}", headers=other.headers, status=404)
    testapp.get(f"/v1/media/{media.id}/content", headers=other.headers, status=404)
    assert api.find_media(db, other.vendor_id, media.id) is None
    assert api.find_media(db, vendor.vendor_id, media.id).status == "stored"
    assert api.media_for_inbound(db, other.vendor_id, [inbound_id]) == {}


@pytest.mark.parametrize("kind", list(MEDIA_LIMITS))
def test_an_inbound_media_larger_than_its_kind_allows_is_failed_without_being_downloaded(db, vendor, meta_sandbox,
                                                                                       run_outbox, monkeypatch,
                                                                                       kind):
    # The rule at a small limit: Meta's own (up to 100 MB) would need files that large at the sandbox.
    limit = 1_000
    monkeypatch.setitem(MEDIA_LIMITS, kind, MediaLimit(kind, MEDIA_LIMITS[kind].mime_types, limit))
    mime = MEDIA_LIMITS[kind].mime_types[0]
    inbound_id = message_received(db, vendor, customer_sends(meta_sandbox, sample(mime, limit + 1), mime),
                                  kind=kind)
    run_outbox()
    media = media_of(db, inbound_id)
    assert media.status == "failed" and f"more than the {limit} bytes" in media.error
    assert media.size_bytes is None and media.file_key_enc is None
