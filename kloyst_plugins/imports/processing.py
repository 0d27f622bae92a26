"""Chunk processing: one chunk's rows in, contacts created or merged, counts and rejections recorded.

``imports.process_chunk`` runs in the outbox delivery transaction, so everything it writes —
contacts, audit rows, rejections, the chunk's status and the job's counters — commits
together with the event's "delivered" mark or not at all. A chunk that crashes half-way
leaves nothing behind and is retried; a redelivered chunk finds its row ``done`` and does
nothing. Counts never double.

Per row: the phone is normalized (:mod:`.phonecache`, phonenumbers behind it), hashed and
checked; a bad row becomes a ContactImportRejection (row number, column, masked value,
reason). A phone cell holding several numbers (Google Contacts' ``a ::: b``) gives the
contact its first valid one, and the others go to the ``other_phones`` attribute
(:func:`kloyst_plugins.contacts.phones.first_valid`). Rows are then grouped by
``mobile_hash`` and merged with the job's strategy
*in file order*: the first row of a number is the incoming contact, each later row of the
same number is merged into the result by the strategy, as if it had come in a later import.

Duplicates inside the file are counted as ``duplicate`` (skipped as duplicate); a row whose
number the vendor already has counts as ``updated`` when the strategy changed the contact,
otherwise ``duplicate``. Across chunks running in parallel there is no file order: the
database decides. Every chunk inserts its new numbers with ``ON CONFLICT (vendor_id,
mobile_hash) DO NOTHING``; a chunk that loses that race to another chunk of the same file
(or to any other writer) gets the winner's contact and merges into it like any existing
contact. So per number there is exactly one ``created``, and every other row of that number
in the file is ``updated`` or ``duplicate``.

Locking: existing contacts are first read without locks (most of them are left as they are:
a re-import changes nothing, and locking a row writes to it); new numbers are inserted in
``mobile_hash`` order; the contacts a merge would change are then locked ``FOR UPDATE`` in
``mobile_hash`` order, read again, and merged from that locked state, so a concurrent change
is never overwritten. Two chunks sharing numbers wait for each other in one global order
instead of deadlocking; the job's counters are updated last, with one atomic
``UPDATE … SET n = n + :k``. Should PostgreSQL still report a
deadlock (a cancel racing a chunk can cause one), the task is rescheduled and its
transaction retried from scratch.

PostgreSQL writes in bulk: COPY into a temporary staging table, then one
``INSERT … SELECT … ORDER BY mobile_hash ON CONFLICT DO NOTHING RETURNING`` that also writes
the "create" audit rows, and ``UPDATE … FROM`` staging; merge audit rows and rejections go
in with COPY too. New contacts and their audit rows get time-ordered (UUIDv7) ids. SQLite (the
embedded default, one writer at a time) takes the plain path: executemany of rows converted
once (:class:`SqliteWriter`). There the chunk is read and its numbers checked before the task
takes the database's write lock (:func:`process_chunk`), so the lock is held only for writing.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field

import transaction
from sqlalchemy import Uuid, bindparam, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from kloyst.api import (
    ContactFields,
    insert_skipping_conflicts,
    MergeStrategy,
    metrics as kmetrics,
    Reschedule,
    session_scope,
    single_line,
    task,
    TaskContext,
    tenancy,
    TenantHooks,
    union_labels,
    UTCDateTime,
    utcnow,
)
from kloyst_plugins.contacts.api import Contact, ContactAuditLog
from kloyst_plugins.contacts.api import InvalidPhone, first_valid, mask
from kloyst_plugins.contacts.api import bsuid_country, clean_labels, InvalidBsuid, normalize_bsuid
from kloyst_plugins.imports import reader, services
from kloyst_plugins.imports.mapping import PROCESS_CHUNK, ColumnPlan, split_labels
from kloyst_plugins.imports.models import (
    ChunkStatus,
    ContactImportChunk,
    ContactImportJob,
    ContactImportRejection,
    ImportStatus,
)
from kloyst_plugins.imports.phonecache import PhoneCache, region_is_supported

log = logging.getLogger(__name__)

MAX_NAME = 255
MAX_ATTRIBUTE = 1000
OTHER_PHONES = "other_phones"  # the attribute that keeps a cell's numbers after its first valid one

# One cache per worker process: the verdicts depend on phonenumbers' metadata only.
_phones = PhoneCache()


@dataclass
class Group:
    """Every row of one number in this chunk, in file order — or, with ``e164`` None, of one BSUID alone.

    ``bsuid`` is the WhatsApp business-scoped user id the rows give (None when the file has no BSUID
    column or the rows leave it empty); ``row_numbers`` are kept only for files with a BSUID column,
    so a BSUID another contact holds can be reported on its rows.
    """

    e164: str | None
    calling_code: int | None
    rows: list[ContactFields] = field(default_factory=list)
    bsuid: str | None = None
    bsuid_hash: bytes | None = None
    row_numbers: list[int] = field(default_factory=list)


@dataclass
class Existing:
    id: uuid.UUID
    fields: ContactFields


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    duplicate: int = 0
    rejected: int = 0


@dataclass
class Prepared:
    """A chunk read and checked before its write transaction: grouped rows and rejections, or why it failed."""

    strategy: MergeStrategy | None = None
    rows_read: int = 0
    groups: dict[bytes, Group] = field(default_factory=dict)
    rejections: list[dict] = field(default_factory=list)
    error: str | None = None


@task(PROCESS_CHUNK)
def process_chunk(ctx, *, vendor_id: uuid.UUID, job_id: uuid.UUID, chunk_index: int) -> str:
    """Import chunk ``chunk_index`` of job ``job_id``; returns what happened (for logs and tests).

    The chunk's rows are read, normalized and grouped first (:func:`_prepare`, through a
    read-only session), and ``ctx.db`` is touched only then. On the embedded default that is
    the moment the task takes SQLite's one write lock (:mod:`kloyst.db.sqlite`), so reading the
    file and checking the chunk's numbers never holds up the API's writes; only the writing does. The
    write transaction locks the chunk row and checks again that the chunk is pending and its
    job not cancelled: what was read cannot have changed meanwhile (a queued job's mapping and
    chunks are fixed), only whether the work is still wanted.
    """
    started = utcnow()
    prepared = _prepare(ctx, vendor_id, job_id, chunk_index)
    db = ctx.db
    chunk = db.scalars(select(ContactImportChunk)
                       .where(ContactImportChunk.job_id == job_id, ContactImportChunk.index == chunk_index)
                       .with_for_update()).one_or_none()
    if chunk is None or chunk.status != ChunkStatus.PENDING.value:
        return "skipped"
    job = db.scalars(select(ContactImportJob).where(ContactImportJob.id == job_id)).one()
    if job.status == ImportStatus.CANCELLED.value or ImportStatus(job.status).is_final:
        chunk.status = ChunkStatus.CANCELLED.value
        return "cancelled"
    if prepared is None:  # not pending when read, pending now: a chunk never goes back, so read it again
        raise Reschedule(0.1, f"chunk {chunk_index} of import {job_id} changed while it was read")
    outcome = Outcome(rejected=len(prepared.rejections))
    if prepared.error is not None:
        chunk.status = ChunkStatus.FAILED.value
        chunk.error = prepared.error[:2000]
        _finish(ctx, job, chunk, Outcome(), rows_read=0, started=started, error=prepared.error)
        return "failed"
    try:
        writer = PostgresWriter if db.get_bind().dialect.name == "postgresql" else SqliteWriter
        writer(ctx, job, prepared.strategy).write(prepared.groups, prepared.rejections, outcome)
    except Exception as exc:
        if _is_deadlock(exc):
            raise Reschedule(0.2, f"deadlock importing chunk {chunk_index}; retrying") from None
        raise
    chunk.status = ChunkStatus.DONE.value
    _finish(ctx, job, chunk, outcome, rows_read=prepared.rows_read, started=started)
    return "done"


def _prepare(ctx, vendor_id: uuid.UUID, job_id: uuid.UUID, chunk_index: int) -> Prepared | None:
    """The chunk's rows validated and grouped, read without a write lock; None when the chunk is not wanted.

    Raises :class:`Reschedule` while another worker converts the XLSX file this chunk reads.
    """
    with session_scope(ctx.registry["kloyst.session_factory"], vendor_id=vendor_id, read_only=True) as look:
        chunk = look.scalars(select(ContactImportChunk).where(ContactImportChunk.job_id == job_id,
                                                              ContactImportChunk.index == chunk_index)).one_or_none()
        job = look.scalars(select(ContactImportJob).where(ContactImportJob.id == job_id)).one_or_none()
        if chunk is None or job is None or chunk.status != ChunkStatus.PENDING.value or \
                ImportStatus(job.status).is_final:
            return None
        strategy = strategy_for(ctx.tenant_hooks_on(look), job.merge_strategy)
    # The scope is closed (no snapshot held open while the file is read); job and chunk stay loaded.
    if strategy is None:
        return Prepared(error=f"merge strategy {job.merge_strategy!r} is no longer available to this vendor (was "
                              "its plugin disabled?)")
    try:
        rows = reader.read_chunk(ctx.settings, job, chunk)
    except reader.Busy as exc:
        raise Reschedule(1.0, str(exc)) from None
    except reader.UnreadableFile as exc:
        return Prepared(error=str(exc))
    groups, rejections = prepare_rows(ctx, job, rows, strategy)
    return Prepared(strategy, len(rows), groups, rejections)


def strategy_for(hooks: TenantHooks, name: str) -> MergeStrategy | None:
    """The vendor's merge strategy ``name`` (one of its enabled plugins'), with that plugin's settings bound.

    Once per chunk: a strategy whose ``merge`` takes ``settings`` gets them here (read through the
    hooks' session), so each row costs one call either way.
    """
    for plugin, strategy in hooks.collect("kloyst_merge_strategies"):
        if strategy.name == name:
            return strategy.with_settings(hooks.settings_of(plugin)) if strategy.takes_settings else strategy
    return None


def _is_deadlock(exc: Exception) -> bool:
    # psycopg2 raises directly from the COPY cursor; SQLAlchemy wraps it as DBAPIError elsewhere.
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(original, "pgcode", None) in ("40P01", "40001")


def _labels(add_labels: tuple[str, ...], cell_text: str) -> tuple[str, ...] | str:
    """A labels cell with the job's own labels, held to the API's rules (at most 50, one line each), or what is
    wrong with it: one cell of a file must not give a contact thousands of labels."""
    try:
        return tuple(clean_labels(list(union_labels(add_labels, split_labels(cell_text)))))
    except ValueError as exc:
        return str(exc)


def prepare_rows(ctx, job: ContactImportJob, rows, strategy: MergeStrategy):
    """Validate and normalize rows: ``({mobile_hash: Group}, [rejection dict])``."""
    plan = ColumnPlan.for_job(job)
    hash_for = ctx.registry["kloyst.mobile_hasher"].for_vendor(job.vendor_id)
    default_region = job.default_country
    add_labels = tuple(job.add_labels or ())
    headers = plan.headers
    normalize = _phones.normalize
    groups: dict[bytes, Group] = {}
    rejections: list[dict] = []
    phone_at, name_at, country_at, labels_at, bsuid_at = plan.phone, plan.name, plan.country, plan.labels, plan.bsuid
    # Files with a BSUID column: which group carries each BSUID, so one BSUID is one contact.
    bsuid_owner: dict[bytes, bytes] = {}
    attribute_plan = plan.attributes
    # A file repeats the same few labels cells and countries: split and check each once.
    labels_of: dict[str, tuple[str, ...]] = {}
    supported: dict[str, bool] = {}

    def cell(cells, index):
        return cells[index].strip() if index is not None and index < len(cells) else ""

    for number, cells in rows:
        raw = (cells[phone_at].strip() if phone_at < len(cells) else "") if phone_at is not None else ""
        bsuid = None
        if bsuid_at is not None and (bsuid_raw := cell(cells, bsuid_at)):
            try:
                bsuid = normalize_bsuid(bsuid_raw)
            except InvalidBsuid as exc:
                rejections.append(_rejection(number, headers[bsuid_at], bsuid_raw, str(exc)))
                continue
        region = default_region
        if country_at is not None:
            given = cell(cells, country_at).upper()
            if given:
                ok = supported.get(given)
                if ok is None:
                    ok = supported[given] = region_is_supported(given)
                if not ok:
                    rejections.append(_rejection(number, headers[country_at], given,
                                                 "not an ISO 3166 country code phone numbers are known for"))
                    continue
                region = given
        phone, other_phones = None, ()
        if raw or bsuid is None:  # a row with a BSUID may leave the number empty
            try:
                phone, other_phones = first_valid(raw, region, normalize)
            except InvalidPhone as exc:
                column = headers[phone_at] if phone_at is not None else headers[bsuid_at or 0]
                rejections.append(_rejection(number, column, raw, str(exc) if phone_at is not None
                                             else "neither a number nor a BSUID"))
                continue
        name = cell(cells, name_at) or None
        if name is not None and len(name) > MAX_NAME:
            rejections.append(_rejection(number, headers[name_at], name, f"longer than {MAX_NAME} characters"))
            continue
        if name is not None:
            try:
                single_line(name)
            except ValueError as exc:
                rejections.append(_rejection(number, headers[name_at], name, str(exc)))
                continue
        if labels_at is not None:
            text_ = cell(cells, labels_at)
            labels = labels_of.get(text_)
            if labels is None:
                labels = labels_of[text_] = _labels(add_labels, text_)
            if isinstance(labels, str):  # the cell's problem, the same for every row that repeats it
                rejections.append(_rejection(number, headers[labels_at], text_, labels))
                continue
        else:
            labels = add_labels
        attributes = {}
        for key, index in attribute_plan:
            value = cell(cells, index)
            if value:  # an empty cell says nothing; it never erases an attribute
                attributes[key] = value[:MAX_ATTRIBUTE]
        if other_phones:
            kept = ", ".join(other_phones)
            mapped = attributes.get(OTHER_PHONES)
            attributes[OTHER_PHONES] = (f"{mapped}, {kept}" if mapped else kept)[:MAX_ATTRIBUTE]
        if bsuid is None:
            assert phone is not None
            incoming = ContactFields(name=name, country=phone.region, labels=labels, attributes=attributes)
            mobile_hash = hash_for(phone.e164)
            group = groups.get(mobile_hash)
            if group is None:
                group = groups[mobile_hash] = Group(phone.e164, phone.calling_code)
            group.rows.append(incoming)
            if bsuid_at is not None:
                group.row_numbers.append(number)
            continue
        problem = _add_with_bsuid(groups, bsuid_owner, hash_for, phone, bsuid, number, ContactFields(
            name=name, country=phone.region if phone is not None else bsuid_country(bsuid), labels=labels,
            attributes=attributes))
        if problem is not None:
            rejections.append(_rejection(number, headers[bsuid_at or 0], bsuid, problem))
    return groups, rejections


def _add_with_bsuid(groups: dict[bytes, Group], owner: dict[bytes, bytes], hash_for, phone, bsuid: str, number: int,
                    incoming: ContactFields) -> str | None:
    """Put a row that has a BSUID in its group: its number's (which then carries the BSUID), else the BSUID's own.

    One BSUID is one person: a BSUID-only row joins the group of the number an earlier row gave it,
    and a number arriving for a BSUID seen alone takes that group's rows (they came first). A row whose
    BSUID an earlier row gave another number, or whose number an earlier row gave another BSUID, is
    refused with the reason (returned).
    """
    bsuid_hash = hash_for(bsuid)
    key = owner.get(bsuid_hash)
    if phone is None:
        if key is None:
            key = owner[bsuid_hash] = bsuid_hash
            groups[key] = Group(None, None, bsuid=bsuid, bsuid_hash=bsuid_hash)
    else:
        mobile_hash = hash_for(phone.e164)
        if key is not None and key != mobile_hash and groups[key].e164 is not None:
            return "an earlier row gives this BSUID to another number"
        group = groups.get(mobile_hash)
        if group is None:
            group = groups[mobile_hash] = Group(phone.e164, phone.calling_code)
        if group.bsuid is not None and group.bsuid_hash != bsuid_hash:
            return "an earlier row gives this number another BSUID"
        if key is not None and key != mobile_hash:  # the BSUID's own group, from earlier BSUID-only rows
            alone = groups.pop(key)
            group.rows.extend(alone.rows)
            group.row_numbers.extend(alone.row_numbers)
        group.bsuid, group.bsuid_hash = bsuid, bsuid_hash
        key = owner[bsuid_hash] = mobile_hash
    groups[key].rows.append(incoming)
    groups[key].row_numbers.append(number)
    return None


def _create_changes(row: dict) -> dict:
    changes = _changes(None, row["fields"], name_known=True)
    return {"bsuid": [None, "set"], **changes} if row.get("bsuid_hash") is not None else changes


def _rejection(number: int, column: str | None, value: str, reason: str) -> dict:
    return {"row_number": number, "column": column, "value_masked": mask(value)[:255], "reason": reason[:500]}


def merged(strategy: MergeStrategy, start: ContactFields, rows: list[ContactFields]) -> ContactFields:
    """``start`` with each row merged into it in turn (a strategy's None means "leave it")."""
    state = start
    for incoming in rows:
        state = strategy.merge(state, incoming) or state
    return state


def _changes(before: ContactFields | None, after: ContactFields, *, name_known: bool) -> dict:
    """Audit ``{field: [before, after]}``; names are personal data, so only the fact of a change is logged."""
    changes: dict = {}
    if before is None:
        if after.name:
            changes["name"] = [None, "set"]
        if after.country:
            changes["country"] = [None, after.country]
        if after.labels:
            changes["labels"] = [[], list(after.labels)]
        if after.attributes:
            changes["attributes"] = [{}, after.attributes]
        return changes
    if name_known and after.name != before.name:
        changes["name"] = ["changed", "changed"]
    if after.country != before.country:
        changes["country"] = [before.country, after.country]
    if after.labels != before.labels:
        changes["labels"] = [list(before.labels), list(after.labels)]
    if after.attributes != before.attributes:
        changes["attributes"] = [before.attributes, after.attributes]
    return changes


# None: decide per chunk (below); True/False: always/never (tests run both paths).
INSERT_FIRST: bool | None = None


def _insert_first(job: ContactImportJob) -> bool:
    """Whether this chunk should insert first and read only the numbers that conflicted.

    Both orders give the same result: a number the insert finds taken is read and merged like
    any existing contact. Reading first costs one index probe per number the insert then
    repeats, which is wasted on a chunk of new numbers; inserting first costs encrypting and
    staging rows that turn out to exist, which is wasted on a re-import. The job's counts so
    far (the chunks already committed) say which kind of file this is.
    """
    if INSERT_FIRST is not None:
        return INSERT_FIRST
    found = (job.duplicate_count or 0) + (job.updated_count or 0)
    return (job.created_count or 0) > 2 * found


class Writer:
    """Writes one chunk's groups; subclasses differ only in how the statements reach the database."""

    def __init__(self, ctx, job: ContactImportJob, strategy: MergeStrategy) -> None:
        self.ctx = ctx
        self.db = ctx.db
        self.job = job
        self.vendor_id = job.vendor_id
        self.strategy = strategy
        self.cipher = ctx.registry["kloyst.cipher"]
        self.now = utcnow()
        self.audit: list[tuple] = []
        self.insert_first = _insert_first(job)

    def write(self, groups: dict[bytes, Group], rejections: list[dict], outcome: Outcome) -> None:
        strategy = self.strategy
        alone = {h: g for h, g in groups.items() if g.e164 is None}
        if alone:  # rows with a BSUID and no number
            groups = {h: g for h, g in groups.items() if g.e164 is not None}
            self.write_bsuid_only(alone, outcome)
        carried = [h for h, g in groups.items() if g.bsuid_hash is not None]
        if carried:
            for h in self.bsuids_held_elsewhere(groups, carried):
                group = groups.pop(h)
                outcome.rejected += len(group.rows)
                rejections.extend(_rejection(number, self.bsuid_column, group.bsuid or "",
                                             "another contact already has this BSUID")
                                  for number in group.row_numbers)
        hashes = sorted(groups)
        # Read without locks: most existing contacts of an import are left as they are (a
        # re-import changes nothing), and a contact that is not written needs no lock. Only the
        # contacts a merge changes are locked and read again below, and merged from that.
        if self.insert_first:
            existing, new = {}, hashes
        else:
            existing = self.fetch_existing(hashes)
            new = [h for h in hashes if h not in existing]
        lost = self.insert_new(new, groups) if new else []
        created = set(new) - set(lost)
        for h in created:
            outcome.created += 1
            outcome.duplicate += len(groups[h].rows) - 1
        if lost:
            existing.update(self.fetch_existing(sorted(lost)))
        gains: set[bytes] = set()
        if carried:
            # Contacts of these numbers that have no BSUID yet take the one the file gives them; a contact
            # with another BSUID keeps it, and the row saying otherwise is refused.
            gains, other = self.bsuids_of([h for h in existing if groups[h].bsuid_hash is not None], groups)
            for h in other:
                del existing[h]
                group = groups.pop(h)
                outcome.rejected += len(group.rows)
                rejections.extend(_rejection(number, self.bsuid_column, group.bsuid or "",
                                             "this number's contact already has another BSUID")
                                  for number in group.row_numbers)
        results = {}
        for h in sorted(existing):
            after = merged(strategy, existing[h].fields, groups[h].rows)
            if after != existing[h].fields:
                results[h] = after
        if results:
            # FOR UPDATE in hash order (two chunks merging the same contact take turns), then
            # merge again from the row as it is now, so a concurrent change is never overwritten.
            locked = self.fetch_existing(sorted(results), lock=True)
            for h in results:
                if h not in locked:  # deleted since it was read: nothing left to merge into
                    del existing[h]
                    outcome.duplicate += len(groups[h].rows)
                    continue
                existing[h] = locked[h]
                results[h] = merged(strategy, locked[h].fields, groups[h].rows)
        updates = []
        for h in sorted(existing):
            contact = existing[h]
            group = groups[h]
            after = results.get(h, contact.fields)
            if after == contact.fields and h not in gains:
                outcome.duplicate += len(group.rows)
                continue
            outcome.updated += 1
            outcome.duplicate += len(group.rows) - 1
            changes = {}
            if after != contact.fields:
                updates.append((contact, after))
                changes = _changes(contact.fields, after, name_known=strategy.reads_name)
            if h in gains:
                changes["bsuid"] = [None, "set"]
            self.audit.append((contact.id, "merge", changes))
        if updates:
            self.apply_updates(updates)
        if gains:
            self.set_bsuids([(existing[h].id, groups[h]) for h in sorted(gains)])
        self.insert_audit()  # the merges' audit rows (PostgreSQL writes the creates' with the inserts)
        if rejections:
            self.insert_rejections(rejections)

    # -- WhatsApp BSUIDs (files with a bsuid column; none of this runs for a file without one) ------

    @property
    def bsuid_column(self) -> str | None:
        return (self.job.mapping or {}).get("bsuid")

    def bsuids_held_elsewhere(self, groups: dict[bytes, Group], carried: list[bytes]) -> list[bytes]:
        """The groups whose BSUID a contact of another number (or of none) already has: one query per chunk."""
        wanted = {groups[h].bsuid_hash: h for h in carried}
        held = []
        keys = sorted(k for k in wanted if k is not None)
        for start in range(0, len(keys), 500):
            for bsuid_hash, mobile_hash in self.db.execute(select(Contact.bsuid_hash, Contact.mobile_hash).where(
                    Contact.bsuid_hash.in_(keys[start:start + 500]))):
                h = wanted[bytes(bsuid_hash)]
                if mobile_hash is None or bytes(mobile_hash) != h:
                    held.append(h)
        return held

    def bsuids_of(self, hashes: list[bytes], groups: dict[bytes, Group]) -> tuple[set[bytes], set[bytes]]:
        """Of these numbers' contacts: those without a BSUID yet, and those with another than the file's.

        A file never overwrites a contact's BSUID (Meta gives a user a new one only with a new number).
        """
        gains: set[bytes] = set()
        other: set[bytes] = set()
        for start in range(0, len(hashes), 500):
            for mobile_hash, bsuid_hash in self.db.execute(select(Contact.mobile_hash, Contact.bsuid_hash).where(
                    Contact.mobile_hash.in_(hashes[start:start + 500]))):
                h = bytes(mobile_hash)
                if bsuid_hash is None:
                    gains.add(h)
                elif bytes(bsuid_hash) != groups[h].bsuid_hash:
                    other.add(h)
        return gains, other

    def set_bsuids(self, contacts: list[tuple[uuid.UUID, Group]]) -> None:
        table = Contact.__table__
        statement = (update(table).where(table.c.id == bindparam("contact"), table.c.vendor_id == self.vendor_id,
                                         table.c.bsuid_hash.is_(None))
                     .values(bsuid_hash=bindparam("hash"), bsuid_enc=bindparam("sealed"), updated_at=self.now))
        encrypt = self.cipher.encrypt
        with tenancy.unscoped(self.db):
            self.db.execute(statement, [{"contact": contact_id, "hash": group.bsuid_hash,
                                         "sealed": encrypt(group.bsuid or "", vendor_id=self.vendor_id, field="bsuid")}
                                        for contact_id, group in contacts])

    def fetch_by_bsuid(self, hashes: list[bytes], lock: bool = False) -> dict[bytes, Existing]:
        found = {}
        lock = lock and self.db.get_bind().dialect.name == "postgresql"
        for start in range(0, len(hashes), 500):
            query = (select(Contact.id, Contact.bsuid_hash, Contact.name_enc, Contact.country, Contact.labels,
                            Contact.attributes).where(Contact.bsuid_hash.in_(hashes[start:start + 500]))
                     .order_by(Contact.bsuid_hash))
            for row in self.db.execute(query.with_for_update() if lock else query):
                found[bytes(row.bsuid_hash)] = Existing(row.id, self._fields_of(row))
        return found

    def write_bsuid_only(self, groups: dict[bytes, Group], outcome: Outcome) -> None:
        """Contacts known by a BSUID alone: created, or merged by the job's strategy like any existing contact.

        Portable statements on both databases (rows without a number are few); a new BSUID is
        inserted ``ON CONFLICT DO NOTHING`` on its partial unique index, and one another writer
        inserted meanwhile is merged into instead.
        """
        strategy = self.strategy
        hashes = sorted(groups)
        existing = self.fetch_by_bsuid(hashes)
        new = [h for h in hashes if h not in existing]
        if new:
            encrypt, vendor_id = self.cipher.encrypt, self.vendor_id
            rows = []
            for h in new:
                group = groups[h]
                fields_ = merged(strategy, group.rows[0], group.rows[1:])
                rows.append({"id": uuid.uuid4(), "vendor_id": vendor_id, "mobile_hash": None, "mobile_enc": None,
                             "bsuid_hash": h, "bsuid_enc": encrypt(group.bsuid or "", vendor_id=vendor_id,
                                                                   field="bsuid"),
                             "name_enc": encrypt(fields_.name, vendor_id=vendor_id, field="name")
                             if fields_.name else None, "enc_kid": self.cipher.active_kid,
                             "country": fields_.country, "calling_code": None, "labels": list(fields_.labels),
                             "attributes": fields_.attributes, "source": "import", "opted_out": False,
                             "created_at": self.now, "updated_at": self.now, "fields": fields_})
            table = Contact.__table__
            statement = insert_skipping_conflicts(self.db, table).on_conflict_do_nothing(
                index_elements=["vendor_id", "bsuid_hash"], index_where=text("bsuid_hash IS NOT NULL"))
            with tenancy.unscoped(self.db):
                for row in rows:  # one statement each: a conflict must skip one row, not fail a batch
                    done = self.db.execute(statement.values({k: v for k, v in row.items() if k != "fields"}))
                    if done.rowcount:
                        outcome.created += 1
                        outcome.duplicate += len(groups[row["bsuid_hash"]].rows) - 1
                        self.audit.append((row["id"], "create", {
                            "bsuid": [None, "set"], **_changes(None, row["fields"], name_known=True)}))
                    else:
                        existing[row["bsuid_hash"]] = Existing(row["id"], row["fields"])  # read again below
            lost = [h for h in new if h in existing]
            if lost:
                existing.update(self.fetch_by_bsuid(lost))
        changed = sorted(h for h in existing if merged(strategy, existing[h].fields, groups[h].rows)
                         != existing[h].fields)
        locked = self.fetch_by_bsuid(changed, lock=True) if changed else {}
        updates = []
        for h in sorted(existing):
            rows_ = groups[h].rows
            if h not in locked:
                outcome.duplicate += len(rows_)
                continue
            after = merged(strategy, locked[h].fields, rows_)
            if after == locked[h].fields:
                outcome.duplicate += len(rows_)
                continue
            outcome.updated += 1
            outcome.duplicate += len(rows_) - 1
            updates.append((locked[h], after))
            self.audit.append((locked[h].id, "merge", _changes(locked[h].fields, after,
                                                               name_known=strategy.reads_name)))
        if updates:
            self.apply_updates(updates)

    # -- shared helpers -----------------------------------------------------------------------

    def _fields_of(self, row) -> ContactFields:
        name = None
        if self.strategy.reads_name and row.name_enc is not None:
            name = self.cipher.decrypt(row.name_enc, vendor_id=self.vendor_id, field="name")
        return ContactFields(name=name, country=row.country, labels=tuple(row.labels or ()),
                             attributes=dict(row.attributes or {}))

    def _new_rows(self, hashes: list[bytes], groups: dict[bytes, Group]) -> list[dict]:
        encrypt = self.cipher.encrypt
        vendor_id = self.vendor_id
        rows = []
        for h in hashes:
            group = groups[h]
            fields_ = merged(self.strategy, group.rows[0], group.rows[1:])
            rows.append({
                "id": uuid.uuid4(), "mobile_hash": h,
                "mobile_enc": encrypt(group.e164 or "", vendor_id=vendor_id, field="mobile"),
                "bsuid_hash": group.bsuid_hash,
                "bsuid_enc": encrypt(group.bsuid, vendor_id=vendor_id, field="bsuid") if group.bsuid else None,
                "name_enc": encrypt(fields_.name, vendor_id=vendor_id, field="name") if fields_.name else None,
                "enc_kid": self.cipher.active_kid, "country": fields_.country, "calling_code": group.calling_code,
                "labels": list(fields_.labels), "attributes": fields_.attributes, "fields": fields_,
            })
        return rows

    def _update_row(self, contact: Existing, after: ContactFields) -> dict:
        set_name = self.strategy.reads_name  # a strategy that never saw the name cannot change it
        name_enc = None
        if set_name and after.name:
            name_enc = self.cipher.encrypt(after.name, vendor_id=self.vendor_id, field="name")
        return {"id": contact.id, "set_name": set_name, "name_enc": name_enc, "country": after.country,
                "labels": list(after.labels), "attributes": after.attributes}


class PortableWriter(Writer):
    """Plain Core statements, on any database (:class:`SqliteWriter` is this, made faster for SQLite).

    Inserts and updates are Core statements on the tables, run ``unscoped`` on purpose: each
    names its vendor itself (the rows' ``vendor_id``, ``WHERE vendor_id = …``).
    """

    def fetch_existing(self, hashes: list[bytes], lock: bool = False) -> dict[bytes, Existing]:
        # SQLite has one writer at a time: there is nothing to lock against.
        found = {}
        for start in range(0, len(hashes), 500):
            for row in self.db.execute(select(Contact.id, Contact.mobile_hash, Contact.name_enc, Contact.country,
                                              Contact.labels, Contact.attributes)
                                       .where(Contact.mobile_hash.in_(hashes[start:start + 500]))):
                found[bytes(row.mobile_hash)] = Existing(row.id, self._fields_of(row))
        return found

    def insert_new(self, hashes, groups) -> list[bytes]:
        rows = self._new_rows(hashes, groups)
        with tenancy.unscoped(self.db):
            self.db.execute(insert(Contact.__table__), [
                {k: v for k, v in r.items() if k != "fields"} | {"vendor_id": self.vendor_id, "source": "import",
                                                                 "opted_out": False, "created_at": self.now,
                                                                 "updated_at": self.now} for r in rows])
        for r in rows:
            self.audit.append((r["id"], "create", _create_changes(r)))
        return []

    def apply_updates(self, updates) -> None:
        table = Contact.__table__
        for contact, after in updates:
            row = self._update_row(contact, after)
            values = {"country": row["country"], "labels": row["labels"], "attributes": row["attributes"],
                      "updated_at": self.now}
            if row["set_name"]:
                values["name_enc"] = row["name_enc"]
            with tenancy.unscoped(self.db):
                self.db.execute(update(table).where(table.c.id == contact.id, table.c.vendor_id == self.vendor_id)
                                .values(**values))

    def insert_audit(self) -> None:
        if not self.audit:
            return
        with tenancy.unscoped(self.db):
            self.db.execute(insert(ContactAuditLog.__table__), [
                {"id": uuid.uuid4(), "contact_id": contact_id, "action": action, "source": "import",
                 "actor_user_id": self.job.created_by, "import_job_id": self.job.id, "changes": changes,
                 "created_at": self.now, "vendor_id": self.vendor_id} for contact_id, action, changes in self.audit])

    def insert_rejections(self, rejections) -> None:
        with tenancy.unscoped(self.db):
            self.db.execute(insert(ContactImportRejection.__table__), [
                r | {"job_id": self.job.id, "vendor_id": self.vendor_id, "created_at": self.now} for r in rejections])


class SqliteWriter(PortableWriter):
    """The portable path with its two big inserts (new contacts, audit rows) handed to the driver as they are.

    Measured on a 5,000-row chunk of new numbers: the write transaction took ~0.5 s, most of it
    SQLAlchemy converting ~60,000 parameter values one by one (each row's labels, attributes
    and audit changes serialized to JSON, its UUIDs and times formatted). On SQLite that
    transaction holds the database's one write lock, so every API request that writes waited
    for it. Here each column's conversion is looked up once, a value seen before in the chunk
    (the same labels, the chunk's one timestamp) is converted once, and the rows go to
    ``executemany`` ready-made: the same stored values, a fraction of the time.
    """

    def insert_new(self, hashes, groups) -> list[bytes]:
        rows = self._new_rows(hashes, groups)
        self._insert_many(Contact.__table__, [{k: v for k, v in r.items() if k != "fields"} for r in rows],
                          {"vendor_id": self.vendor_id, "source": "import", "opted_out": False,
                           "created_at": self.now, "updated_at": self.now})
        for r in rows:
            self.audit.append((r["id"], "create", _create_changes(r)))
        return []

    def insert_audit(self) -> None:
        if not self.audit:
            return
        self._insert_many(ContactAuditLog.__table__,
                          [{"id": uuid.uuid4(), "contact_id": contact_id, "action": action, "changes": changes}
                           for contact_id, action, changes in self.audit],
                          {"source": "import", "actor_user_id": self.job.created_by, "import_job_id": self.job.id,
                           "created_at": self.now, "vendor_id": self.vendor_id})

    def _insert_many(self, table, rows: list[dict], constant: dict) -> None:
        """``INSERT`` ``rows`` (dicts with the same keys), each with the ``constant`` values, in one ``executemany``."""
        if not rows:
            return
        connection = self.db.connection()
        dialect = connection.dialect

        def processor(name):
            return table.c[name].type.dialect_impl(dialect).bind_processor(dialect)

        names = list(rows[0])
        columns = [_converted(processor(name), [row[name] for row in rows]) for name in names]
        fixed = tuple(process(value) if (process := processor(name)) and value is not None else value
                      for name, value in constant.items())
        sql = (f"INSERT INTO {table.name} ({', '.join([*names, *constant])}) "
               f"VALUES ({', '.join('?' for _ in range(len(names) + len(constant)))})")
        connection.exec_driver_sql(sql, [values + fixed for values in zip(*columns)])


def _converted(process, values: list) -> list:
    """One column's values as the driver takes them, each distinct value converted once.

    Bytes go as they are (SQLite stores them as the BLOB the conversion would make); ids,
    unique per row, are converted without being remembered; a value seen before in the
    column (the same labels, the same attributes) is looked up instead of serialized again.
    """
    if process is None:
        return values
    seen: dict = {}
    out = []
    for value in values:
        if value is None or isinstance(value, bytes):
            out.append(value)
            continue
        if isinstance(value, uuid.UUID):
            out.append(process(value))
            continue
        key = ("list", tuple(value)) if isinstance(value, list) else \
            ("dict", tuple(value.items())) if isinstance(value, dict) else value
        try:
            converted = seen.get(key)
        except TypeError:  # unhashable inside (a nested list in audit changes): convert every time
            out.append(process(value))
            continue
        if converted is None:
            converted = seen[key] = process(value)
        out.append(converted)
    return out


class PostgresWriter(Writer):
    """COPY into staging tables and set-based statements, always in ``mobile_hash`` order.

    Per chunk: one ``SELECT`` of the numbers the vendor already has (``FOR UPDATE`` only for
    those a merge changes, read again); one COPY of the new contacts into a staging table
    and **one** statement that inserts them (``ON CONFLICT DO NOTHING``) and writes their
    "create" audit rows from what it inserted (time-ordered ids from
    :func:`_time_ordered_ids`; the audit's ``changes`` built from the inserted row, the same
    fields :func:`_changes` records); one COPY + ``UPDATE … FROM`` for merged contacts
    and one COPY each for their audit rows and the rejections. The COPY text is built with
    string concatenation and JSON values cached per distinct value (a file repeats a few
    label sets and attribute values).
    """

    def _cursor(self):
        return self.db.connection().connection.cursor()

    def fetch_existing(self, hashes: list[bytes], lock: bool = False) -> dict[bytes, Existing]:
        if not hashes:
            return {}
        reads_name = self.strategy.reads_name
        decrypt = self.cipher.decrypt
        vendor_id = self.vendor_id
        labels_of, attributes_of = {}, {}
        found = {}
        with self._cursor() as cursor:
            # ARRAY(SELECT unnest(…)), not ANY(<5,000-element literal>): given the literal, the
            # planner estimates every element and, once the table has statistics, prefers to scan
            # all of the vendor's contacts by vendor_id and filter (measured on 1M contacts:
            # ~300 ms a chunk instead of ~50 ms through the unique index).
            cursor.execute("SELECT id, mobile_hash, name_enc, country, labels::text, attributes::text FROM contact "
                           "WHERE vendor_id = %s AND mobile_hash = ANY(ARRAY(SELECT unnest(%s::bytea[]))) "
                           "ORDER BY mobile_hash" + (" FOR UPDATE" if lock else ""), (str(vendor_id), hashes))
            for id_, mobile_hash, name_enc, country, labels_text, attributes_text in cursor.fetchall():
                labels = labels_of.get(labels_text)
                if labels is None:
                    labels = labels_of[labels_text] = tuple(json.loads(labels_text) or ()) \
                        if labels_text is not None else ()
                attributes = attributes_of.get(attributes_text)
                if attributes is None:
                    attributes = attributes_of[attributes_text] = json.loads(attributes_text) or {} \
                        if attributes_text is not None else {}
                name = decrypt(name_enc, vendor_id=vendor_id, field="name") \
                    if reads_name and name_enc is not None else None
                found[bytes(mobile_hash)] = Existing(id_, ContactFields(
                    name=name, country=country, labels=labels, attributes=dict(attributes)))
        return found

    def insert_new(self, hashes, groups) -> list[bytes]:
        encrypt = self.cipher.encrypt
        vendor_id = self.vendor_id
        strategy = self.strategy
        json_text = _JsonText()
        lines = []
        ids = iter(_time_ordered_ids(2 * len(hashes)))
        for h in hashes:
            group = groups[h]
            rows = group.rows
            fields_ = merged(strategy, rows[0], rows[1:]) if len(rows) > 1 else rows[0]
            name = fields_.name
            lines.append(next(ids) + "\t" + next(ids) + "\t\\\\x" + h.hex()
                         + "\t\\\\x" + encrypt(group.e164 or "", vendor_id=vendor_id, field="mobile").hex()
                         + ("\t\\\\x" + group.bsuid_hash.hex() + "\t\\\\x"
                            + encrypt(group.bsuid or "", vendor_id=vendor_id, field="bsuid").hex()
                            if group.bsuid_hash is not None else "\t\\N\t\\N")
                         + ("\t\\\\x" + encrypt(name, vendor_id=vendor_id, field="name").hex() if name else "\t\\N")
                         + "\t" + (_copy_text(fields_.country) if fields_.country else "\\N")
                         + "\t" + str(group.calling_code)
                         + "\t" + json_text.labels(fields_.labels) + "\t" + json_text.attributes(fields_.attributes)
                         + "\n")
        with self._cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE import_stage_new (id uuid, audit_id uuid, mobile_hash bytea, "
                           "mobile_enc bytea, bsuid_hash bytea, bsuid_enc bytea, name_enc bytea, "
                           "country text, calling_code int, labels jsonb, attributes jsonb) ON COMMIT DROP")
            cursor.copy_expert("COPY import_stage_new FROM STDIN", io.StringIO("".join(lines)))
            cursor.execute(_INSERT_NEW, {"vendor": str(vendor_id), "now": self.now, "kid": self.cipher.active_kid,
                                         "actor": str(self.job.created_by) if self.job.created_by else None,
                                         "job": str(self.job.id)})
            inserted = {bytes(r[0]) for r in cursor.fetchall()}
            cursor.execute("DROP TABLE import_stage_new")
        return [h for h in hashes if h not in inserted]

    def apply_updates(self, updates) -> None:
        json_text = _JsonText()
        lines = []
        for contact, after in updates:
            row = self._update_row(contact, after)
            lines.append(f"{contact.id}\t{'t' if row['set_name'] else 'f'}\t"
                         + ("\\\\x" + row["name_enc"].hex() if row["name_enc"] is not None else "\\N")
                         + "\t" + (_copy_text(row["country"]) if row["country"] else "\\N")
                         + "\t" + json_text.labels(after.labels) + "\t" + json_text.attributes(row["attributes"])
                         + "\n")
        with self._cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE import_stage_update (id uuid, set_name boolean, name_enc bytea, "
                           "country text, labels jsonb, attributes jsonb) ON COMMIT DROP")
            cursor.copy_expert("COPY import_stage_update FROM STDIN", io.StringIO("".join(lines)))
            # The rows are already locked (fetch_existing), so the order of this UPDATE cannot deadlock.
            cursor.execute(
                "UPDATE contact c SET name_enc = CASE WHEN s.set_name THEN s.name_enc ELSE c.name_enc END, "
                "country = s.country, labels = s.labels, attributes = s.attributes, updated_at = %(now)s "
                "FROM import_stage_update s WHERE c.id = s.id AND c.vendor_id = %(vendor)s",
                {"vendor": str(self.vendor_id), "now": self.now})
            cursor.execute("DROP TABLE import_stage_update")

    def insert_audit(self) -> None:
        if not self.audit:
            return
        job = self.job
        middle = f"\timport\t{_copy_value(job.created_by)}\t{job.id}\t"
        end = f"\t{self.now.isoformat()}\t{self.vendor_id}\n"
        lines = [f"{uuid.uuid4()}\t{contact_id}\t{action}{middle}{_copy_value(changes)}{end}"
                 for contact_id, action, changes in self.audit]
        with self._cursor() as cursor:
            cursor.copy_expert('COPY contact_audit_log ("id", "contact_id", "action", "source", "actor_user_id", '
                               '"import_job_id", "changes", "created_at", "vendor_id") FROM STDIN',
                               io.StringIO("".join(lines)))

    def insert_rejections(self, rejections) -> None:
        with self._cursor() as cursor:
            self._copy(cursor, "contact_import_rejection", ("job_id", "row_number", "column", "value_masked",
                                                            "reason", "created_at", "vendor_id"),
                       ((self.job.id, r["row_number"], r["column"], r["value_masked"], r["reason"], self.now,
                         self.vendor_id) for r in rejections))

    def _copy(self, cursor, table: str, columns: tuple[str, ...], rows) -> None:
        buffer = io.StringIO("".join("\t".join(map(_copy_value, row)) + "\n" for row in rows))
        quoted = ", ".join(f'"{column}"' for column in columns)
        cursor.copy_expert(f"COPY {table} ({quoted}) FROM STDIN", buffer)


# New contacts and their "create" audit rows in one statement. The audit's ``changes`` are what
# _changes(None, fields) records: name only as the fact it was set, country, labels, attributes.
_INSERT_NEW = """
WITH inserted AS (
    INSERT INTO contact (id, mobile_hash, mobile_enc, bsuid_hash, bsuid_enc, name_enc, enc_kid, country, calling_code,
                         labels, attributes, vendor_id, source, opted_out, created_at, updated_at)
    SELECT id, mobile_hash, mobile_enc, bsuid_hash, bsuid_enc, name_enc, %(kid)s, country, calling_code, labels,
           attributes, %(vendor)s, 'import', false, %(now)s, %(now)s
      FROM import_stage_new ORDER BY mobile_hash
    ON CONFLICT (vendor_id, mobile_hash) DO NOTHING
    RETURNING id, mobile_hash, bsuid_hash, name_enc, country, labels, attributes
), audit AS (
    INSERT INTO contact_audit_log (id, contact_id, action, source, actor_user_id, import_job_id, changes, created_at,
                                   vendor_id)
    SELECT s.audit_id, i.id, 'create', 'import', %(actor)s, %(job)s,
           '{}'::jsonb
           || CASE WHEN i.bsuid_hash IS NOT NULL THEN '{"bsuid": [null, "set"]}'::jsonb ELSE '{}'::jsonb END
           || CASE WHEN i.name_enc IS NOT NULL THEN '{"name": [null, "set"]}'::jsonb ELSE '{}'::jsonb END
           || CASE WHEN i.country IS NOT NULL
                   THEN jsonb_build_object('country', jsonb_build_array(NULL::text, i.country)) ELSE '{}'::jsonb END
           || CASE WHEN i.labels <> '[]'::jsonb
                   THEN jsonb_build_object('labels', jsonb_build_array('[]'::jsonb, i.labels)) ELSE '{}'::jsonb END
           || CASE WHEN i.attributes <> '{}'::jsonb
                   THEN jsonb_build_object('attributes', jsonb_build_array('{}'::jsonb, i.attributes))
                   ELSE '{}'::jsonb END,
           %(now)s, %(vendor)s
      FROM inserted i JOIN import_stage_new s ON s.mobile_hash = i.mobile_hash
)
SELECT mobile_hash FROM inserted
"""


def _time_ordered_ids(count: int) -> list[str]:
    """``count`` UUIDv7 strings (RFC 9562: 48-bit Unix milliseconds, version 7, 74 random bits).

    Imported contacts and their audit rows get time-ordered ids, so their primary keys (and
    the audit log's (vendor_id, contact_id, …) index) grow at the right edge instead of
    touching a random leaf page per row, which is what a million random uuid4 keys cost once
    the indexes outgrow shared buffers. They are still unique, unguessable UUIDs.
    """
    prefix = f"{time.time_ns() // 1_000_000:012x}"
    head = f"{prefix[:8]}-{prefix[8:]}-7"
    randomness = os.urandom(10 * count).hex()
    variant = "89ab"
    return [f"{head}{r[:3]}-{variant[int(r[3], 16) & 3]}{r[4:7]}-{r[7:19]}"
            for r in (randomness[i:i + 20] for i in range(0, 20 * count, 20))]


class _JsonText:
    """JSON values as COPY text, each distinct value serialized once per chunk."""

    def __init__(self) -> None:
        self._labels: dict[tuple, str] = {}
        self._attributes: dict[tuple, str] = {}

    def labels(self, labels) -> str:
        key = tuple(labels)
        text_ = self._labels.get(key)
        if text_ is None:
            text_ = self._labels[key] = _copy_json(list(labels))
        return text_

    def attributes(self, attributes: dict) -> str:
        try:
            key = tuple(attributes.items())
            text_ = self._attributes.get(key)
        except TypeError:  # unhashable values (a plugin strategy's): no caching
            return _copy_json(attributes)
        if text_ is None:
            text_ = self._attributes[key] = _copy_json(attributes)
        return text_


def _copy_json(value) -> str:
    text_ = json.dumps(value, ensure_ascii=False)
    # json.dumps writes no raw tab or newline (it escapes them); only its backslashes need doubling.
    return text_.replace("\\", "\\\\") if "\\" in text_ else text_


def _copy_text(value: str) -> str:
    return value.translate(_COPY_ESCAPES)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value) -> str:
    """One field in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False).translate(_COPY_ESCAPES)
    if isinstance(value, bool):
        return "t" if value else "f"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value).translate(_COPY_ESCAPES)


# The parameters are typed: a textual statement hands its values to the driver as they are, and
# SQLite's driver has no UUID (the Uuid columns hold 32 hex digits there) and its own datetime format.
_ADD_COUNTS = text("""
UPDATE contact_import_job
   SET chunks_done = chunks_done + 1, rows_processed = rows_processed + :rows,
       created_count = created_count + :created, updated_count = updated_count + :updated,
       duplicate_count = duplicate_count + :duplicate, rejected_count = rejected_count + :rejected,
       status = CASE WHEN status = 'QUEUED' THEN 'PROCESSING' ELSE status END,
       started_at = COALESCE(started_at, :started), error = COALESCE(error, :error), updated_at = :now
 WHERE id = :job AND vendor_id = :vendor
RETURNING chunks_done, chunk_count
""").bindparams(bindparam("job", type_=Uuid()), bindparam("vendor", type_=Uuid()),
                bindparam("started", type_=UTCDateTime()), bindparam("now", type_=UTCDateTime()))


def _finish(ctx, job: ContactImportJob, chunk: ContactImportChunk, outcome: Outcome, *, rows_read: int,
            started, error: str | None = None) -> None:
    """Record the chunk's counts and add them to the job's; the last chunk decides the job's outcome."""
    db = ctx.db
    chunk.created_count = outcome.created
    chunk.updated_count = outcome.updated
    chunk.duplicate_count = outcome.duplicate
    chunk.rejected_count = outcome.rejected
    chunk.attempts += 1
    chunk.finished_at = utcnow()
    db.flush()
    done, total = db.execute(_ADD_COUNTS, {
        "rows": rows_read, "created": outcome.created, "updated": outcome.updated, "duplicate": outcome.duplicate,
        "rejected": outcome.rejected, "started": started, "error": error, "now": utcnow(), "job": job.id,
        "vendor": job.vendor_id}).one()
    db.refresh(job)
    _count_after_commit(ctx, outcome, failed=error is not None)
    if done < (total or 0) or ImportStatus(job.status).is_final:
        return
    failed_chunks = db.scalar(select(ContactImportChunk.id).where(
        ContactImportChunk.job_id == job.id, ContactImportChunk.status == ChunkStatus.FAILED.value).limit(1))
    imported = job.created_count + job.updated_count + job.duplicate_count
    if imported == 0 and (job.rejected_count or failed_chunks):
        final = ImportStatus.FAILED
        job.error = job.error or "no row could be imported; see the rejected rows"
    elif job.rejected_count or failed_chunks:
        final = ImportStatus.PARTIAL_SUCCESS
    else:
        final = ImportStatus.COMPLETED
    services.transition(job, final)
    if job.file_type == "xlsx":
        reader.remove_rows_file(reader.stored_path(ctx.settings, job))


def _count_after_commit(ctx, outcome: Outcome, *, failed: bool) -> None:
    """``kloyst_import_rows_total`` and ``kloyst_import_chunks_total``, once the chunk's transaction commits."""
    metrics = kmetrics.of(ctx.registry)

    def count() -> None:
        for name in ("created", "updated", "duplicate", "rejected"):
            if rows := getattr(outcome, name):
                metrics.import_rows.labels(name).inc(rows)
        metrics.import_chunks.labels("failed" if failed else "done").inc()

    kmetrics.after_commit(ctx.tm, count)


def run_chunk_now(registry, vendor_id: uuid.UUID, job_id: uuid.UUID, chunk_index: int, *,
                  max_attempts: int = 20) -> str:
    """Run one chunk in this process, in its own transaction, retrying reschedules (CLI and tests).

    Production runs chunks through the outbox and the workers; this is the same task function
    with the same transaction rules, for an operator who wants the import done in the foreground.
    """
    for attempt in range(max_attempts):
        manager = transaction.TransactionManager(explicit=True)
        try:
            with session_scope(registry["kloyst.session_factory"], vendor_id=vendor_id, manager=manager) as db:
                return process_chunk(TaskContext(registry, db, manager, vendor_id), vendor_id=vendor_id,
                                     job_id=job_id, chunk_index=chunk_index)
        except Reschedule as exc:
            time.sleep(min(exc.delay_seconds, 1.0) * (attempt + 1))
    raise RuntimeError(f"chunk {chunk_index} of import {job_id} was rescheduled {max_attempts} times")


TASKS = [process_chunk]
