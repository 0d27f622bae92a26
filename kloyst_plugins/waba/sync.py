"""Phone-number sync: what Meta lists under a WABA becomes the numbers Kloyst sends from.

``GET /{waba-id}/phone_numbers`` (every page, through the Meta client) is the truth for a
WABA's numbers. A sync is an upsert by Meta phone-number id:

* new numbers get a row, known ones are refreshed (name, quality, status, throughput tier);
* a number Meta no longer lists becomes ``DELETED`` but keeps its row: messages reference it;
* the Meta id is unique across the platform, so a number another vendor holds (or the
  shared WABA lists) is **never taken over**: it is skipped, logged and named in the WABA's
  ``last_sync_error`` for the vendor to see. A number moving between two of the *same*
  vendor's own WABAs follows the WABA that lists it now;
* the shared WABA's sync fills ``shared_phone_number`` and refreshes the vendor copies of
  its assigned numbers, so a vendor sees the same quality and tier as the platform admin.

Two syncs of one WABA at once (a retry overtaking a slow run, a sync re-asked after
:data:`~.views.REQUEUE_AFTER`) take turns: each locks the WABA's row once Meta has answered
(:func:`lock_for_sync`) and only then reads the numbers it holds, so the second sees what the
first wrote and updates it, instead of inserting the same Meta id and losing to the unique key.

Meta failures are the caller's (:mod:`.tasks`) to classify; :func:`describe_error` is the
one place a failure becomes text, and it never contains the token.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kloyst.api import MetaClient, MetaError, tenancy, utcnow
from kloyst_plugins.waba.models import (THROUGHPUT_HIGH, THROUGHPUT_STANDARD, PhoneNumber, QualityRating,
                                        SharedPhoneNumber, SharedWaba, SyncStatus, Waba)
from kloyst_plugins.waba.services import CONNECTED, DELETED, copy_shared_fields

log = logging.getLogger(__name__)

# Asked for explicitly: Meta's default fields leave out status, throughput and the tier.
FIELDS = "id,display_phone_number,verified_name,quality_rating,status,throughput,messaging_limit_tier"
MAX_ERROR_LENGTH = 500  # the width of last_sync_error
MAX_NAMED_SKIPS = 10  # numbers named in last_sync_error; the log has them all

# Meta's ratings are GREEN/YELLOW/RED, and NA for a number without one yet.
_QUALITY = {q.value: q.value for q in QualityRating} | {"NA": QualityRating.UNKNOWN.value}


@dataclass
class SyncResult:
    """What one sync did, by Meta phone-number id."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # no longer listed by Meta: now DELETED
    skipped: list[str] = field(default_factory=list)  # held by another vendor (or another WABA): untouched

    def as_json(self) -> dict:
        return {"created": self.created, "updated": self.updated, "deleted": self.deleted, "skipped": self.skipped}

    def skip_note(self) -> str | None:
        """The vendor-facing note about skipped numbers (None when there were none)."""
        if not self.skipped:
            return None
        named = ", ".join(self.skipped[:MAX_NAMED_SKIPS])
        more = f" and {len(self.skipped) - MAX_NAMED_SKIPS} more" if len(self.skipped) > MAX_NAMED_SKIPS else ""
        return (f"{len(self.skipped)} number(s) Meta lists in this WABA are held by another account on Kloyst and "
                f"were not synced: {named}{more}")[:MAX_ERROR_LENGTH]


def number_fields(item: dict) -> dict:
    """Meta's phone-number JSON as ``phone_number`` / ``shared_phone_number`` column values.

    Only what the answer carries: a field Meta left out keeps its stored value (a missing
    ``throughput`` means the STANDARD tier, Meta's default for every number).
    """
    values: dict = {}
    if item.get("display_phone_number"):
        values["display_phone_number"] = str(item["display_phone_number"])[:32]
    if "verified_name" in item:
        values["verified_name"] = str(item.get("verified_name") or "")[:200]
    if "quality_rating" in item:
        values["quality_rating"] = _QUALITY.get(str(item["quality_rating"]).upper(), QualityRating.UNKNOWN.value)
    if item.get("status"):
        values["status"] = str(item["status"]).upper()[:32]
    throughput = item.get("throughput")
    level = throughput.get("level") if isinstance(throughput, dict) else None
    values["throughput_mps"] = THROUGHPUT_HIGH if str(level).upper() == "HIGH" else THROUGHPUT_STANDARD
    if item.get("messaging_limit_tier"):
        values["messaging_limit_tier"] = str(item["messaging_limit_tier"])[:32]
    return values


def _listed(items: list[dict]) -> dict[str, dict]:
    listed = {}
    for item in items:
        meta_id = str(item.get("id") or "") if isinstance(item, dict) else ""
        if meta_id.isdigit() and len(meta_id) <= 32:
            listed[meta_id] = item
        else:
            log.warning("phone-number sync: ignoring an item without a valid id")
    return listed


def _apply(row, values: dict, now) -> None:
    for key, value in values.items():
        setattr(row, key, value)
    if "status" not in values and row.status == DELETED:
        row.status = CONNECTED  # listed again, and Meta did not say otherwise
    if hasattr(row, "last_synced_at"):
        row.last_synced_at = now


def _insert(db: Session, row, values: dict, now) -> bool:
    """Insert a new number row; False when another sync took its Meta id between our read and this insert."""
    row.display_phone_number = values.get("display_phone_number", row.meta_phone_number_id)
    try:
        with db.begin_nested():
            _apply(row, values, now)
            db.add(row)
            db.flush()
    except IntegrityError:
        return False
    return True


def lock_for_sync(db: Session, row: Waba | SharedWaba) -> None:
    """Wait for any other sync of ``row`` to commit, and hold it off until this one does.

    A row lock on PostgreSQL, taken after the Meta call so the lock is held for the database work
    only. SQLite needs none: a task's transaction holds the database's one write lock from its first
    statement (:mod:`kloyst.db.sqlite`). The refresh reads what a sync that went first committed.
    """
    model = type(row)
    db.execute(select(model.id).where(model.id == row.id).with_for_update())
    db.refresh(row)


def describe_error(exc: MetaError, token: str) -> str:
    """The failure as the vendor reads it in ``last_sync_error``: Meta's words, the kind, never the token."""
    text = f"{exc.kind.value}: {exc}"
    if token:
        text = text.replace(token, "[token]")
    return text[:MAX_ERROR_LENGTH]


def listed_numbers(meta: MetaClient, meta_waba_id: str, token: str) -> dict[str, dict]:
    """What Meta lists for the WABA now, by phone number id (every page). Raises :class:`MetaError` untouched.

    Called before the sync touches the database it writes to, so the Meta call holds no lock (on the
    embedded default's SQLite, the one write lock of the whole process: :mod:`kloyst.db.sqlite`).
    """
    return _listed(meta.list_phone_numbers(meta_waba_id, fields=FIELDS, token=token))


def apply_waba(db: Session, waba: Waba, listed: dict[str, dict]) -> SyncResult:
    """Make ``waba``'s numbers in ``db`` (scoped to its vendor) what Meta listed (:func:`listed_numbers`)."""
    if tenancy.current_scope(db) != waba.vendor_id:
        raise tenancy.TenancyError("a WABA is synced in a session scoped to its vendor")
    lock_for_sync(db, waba)
    now = utcnow()
    result = SyncResult()
    mine = {n.meta_phone_number_id: n for n in db.scalars(select(PhoneNumber).where(PhoneNumber.waba_id == waba.id))}
    with tenancy.unscoped(db):
        # Ids and owners only: other vendors' rows are never loaded as objects into this session.
        holders = {row.meta_phone_number_id: row for row in db.execute(
            select(PhoneNumber.id, PhoneNumber.meta_phone_number_id, PhoneNumber.vendor_id, PhoneNumber.waba_id)
            .where(PhoneNumber.meta_phone_number_id.in_(listed)))}
        shared_ids = set(db.scalars(select(SharedPhoneNumber.meta_phone_number_id)
                                    .where(SharedPhoneNumber.meta_phone_number_id.in_(listed))))
    for meta_id, item in listed.items():
        values = number_fields(item)
        row = mine.get(meta_id)
        holder = holders.get(meta_id)
        if row is None and holder is not None and holder.vendor_id == waba.vendor_id and holder.waba_id is not None:
            row = db.get(PhoneNumber, holder.id)  # moved here from another of this vendor's WABAs
            row.waba_id = waba.id
        elif row is None and (holder is not None or meta_id in shared_ids):
            result.skipped.append(meta_id)
            continue
        if row is None:
            row = PhoneNumber(vendor_id=waba.vendor_id, waba_id=waba.id, meta_phone_number_id=meta_id)
            if not _insert(db, row, values, now):
                result.skipped.append(meta_id)
                continue
            result.created.append(meta_id)
        else:
            _apply(row, values, now)
            result.updated.append(meta_id)
    for meta_id, row in mine.items():
        if meta_id not in listed and row.status != DELETED:
            row.status, row.last_synced_at = DELETED, now
            result.deleted.append(meta_id)
    return _finish(db, waba, result, now, "waba")


def apply_shared_waba(db: Session, shared: SharedWaba, listed: dict[str, dict]) -> SyncResult:
    """Make the shared WABA's numbers, and the assignees' copies, what Meta listed (platform-wide ``db``)."""
    if tenancy.current_scope(db) is not tenancy.ALL_VENDORS:
        raise tenancy.TenancyError("the shared WABA is synced platform-wide: it updates every assignee's copy")
    lock_for_sync(db, shared)
    now = utcnow()
    result = SyncResult()
    rows = {n.meta_phone_number_id: n for n in db.scalars(
        select(SharedPhoneNumber).where(SharedPhoneNumber.meta_phone_number_id.in_(listed)
                                        | (SharedPhoneNumber.shared_waba_id == shared.id)))}
    own_ids = set(db.scalars(select(PhoneNumber.meta_phone_number_id).where(
        PhoneNumber.meta_phone_number_id.in_(listed), PhoneNumber.waba_id.is_not(None))))
    for meta_id, item in listed.items():
        values = number_fields(item)
        row = rows.get(meta_id)
        if meta_id in own_ids or (row is not None and row.shared_waba_id != shared.id):
            result.skipped.append(meta_id)
            continue
        if row is None:
            row = SharedPhoneNumber(shared_waba_id=shared.id, meta_phone_number_id=meta_id)
            if not _insert(db, row, values, now):
                result.skipped.append(meta_id)
                continue
            rows[meta_id] = row
            result.created.append(meta_id)
        else:
            _apply(row, values, now)
            result.updated.append(meta_id)
    for meta_id, row in rows.items():
        if row.shared_waba_id == shared.id and meta_id not in listed and row.status != DELETED:
            row.status = DELETED
            result.deleted.append(meta_id)
    _refresh_assigned_copies(db, shared.id, now)
    return _finish(db, shared, result, now, "shared waba")


def _finish(db: Session, waba: Waba | SharedWaba, result: SyncResult, now, label: str) -> SyncResult:
    """Stamp the sync on the WABA: when, and which numbers it had to leave to their holders."""
    if result.skipped:
        log.warning("%s %s: Meta lists numbers held elsewhere on the platform; skipped %s", label, waba.id,
                    ", ".join(result.skipped))
    waba.last_synced_at, waba.last_sync_error = now, result.skip_note()
    waba.sync_status = SyncStatus.SYNCED.value
    db.flush()
    return result


def _refresh_assigned_copies(db: Session, shared_waba_id: uuid.UUID, now) -> None:
    assigned = {n.meta_phone_number_id: n for n in db.scalars(select(SharedPhoneNumber).where(
        SharedPhoneNumber.shared_waba_id == shared_waba_id, SharedPhoneNumber.assigned_vendor_id.is_not(None)))}
    if not assigned:
        return
    for copy in db.scalars(select(PhoneNumber).where(PhoneNumber.shared_waba_id == shared_waba_id,
                                                     PhoneNumber.meta_phone_number_id.in_(assigned))):
        source = assigned[copy.meta_phone_number_id]
        if copy.vendor_id == source.assigned_vendor_id:
            copy_shared_fields(source, copy)
            copy.last_synced_at = now
