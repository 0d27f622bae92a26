"""Bulk label, unlabel and delete by filter: set-based on PostgreSQL, one audit row per changed contact.

A vendor with a million contacts must be able to label or delete them all in one request,
so on PostgreSQL each action is a single statement that never brings rows into Python::

    WITH changed AS (UPDATE contact … FROM (SELECT id, labels … FOR UPDATE) old … RETURNING …)
    INSERT INTO contact_audit_log SELECT … FROM changed

The change and its audit rows are one statement, so there is no window in which a contact
changes without its row (or the reverse); the locking sub-select gives the audit the
``before`` value as it was when the row was locked. Times come from ``clock_timestamp()``,
not ``now()`` (the transaction's start), so audit rows sort after the changes before them.
Only contacts that actually change are touched and audited (labelling a contact that
already has the labels is not a change).

Tenant scoping: the core scopes ORM SELECT, UPDATE and DELETE statements but cannot reach
into ``INSERT … SELECT``, and the UPDATE/DELETE here live inside such an INSERT. So these
statements name the vendor explicitly and are marked with
:func:`kloyst.db.tenancy.caller_scoped`, on purpose and only here (and :func:`apply`
refuses a session scoped to another vendor).
SQLite, the embedded default, takes a portable path in batches of rows, through the ORM
and the core's scoping.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import (Text, Uuid, case, cast, delete, func, insert, literal, null, select, type_coerce,
                        update)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, aggregate_order_by
from sqlalchemy.orm import Session

from kloyst.api import tenancy
from kloyst_plugins.contacts.models import AuditAction, Contact, ContactAuditLog
from kloyst_plugins.contacts.services import SECRET_MARK, Actor, contact_snapshot

SQLITE_BATCH = 500
_AUDIT_COLUMNS = ["id", "vendor_id", "contact_id", "action", "source", "actor_user_id", "import_job_id", "changes",
                  "created_at"]


@dataclass(frozen=True)
class BulkResult:
    matched: int  # contacts the filter selects
    changed: int  # contacts actually changed (and audited)

    def as_json(self) -> dict:
        return {"matched": self.matched, "changed": self.changed}


def apply(db: Session, *, vendor_id: uuid.UUID, action: str, labels: list[str], where: list,
          actor: Actor) -> BulkResult:
    """Run ``action`` ("label", "unlabel" or "delete") on the vendor's contacts matching ``where``."""
    if tenancy.current_scope(db) != vendor_id:
        raise tenancy.TenancyError("bulk contact changes need a session scoped to the contacts' vendor")
    matched = db.scalar(select(func.count()).select_from(Contact).where(*where))
    if db.get_bind().dialect.name == "postgresql":
        changed = _postgresql(db, vendor_id, action, labels, where, actor)
    else:
        changed = _portable(db, action, labels, where, actor)
    return BulkResult(matched=matched or 0, changed=changed)


def new_labels(current: list, action: str, labels: list[str]) -> list:
    """The labels after ``action``, in Python (the portable path, and the oracle for the SQL one)."""
    if action == "label":
        return list(current) + [label for label in labels if label not in current]
    return [label for label in current if label not in labels]


def _postgresql(db, vendor_id, action, labels, where, actor) -> int:
    table = Contact.__table__
    if action == "delete":
        source = (delete(table).where(table.c.vendor_id == vendor_id, *where)
                  .returning(table.c.id, table.c.country, table.c.labels, table.c.attributes, table.c.opted_out,
                             table.c.name_enc.is_not(None).label("had_name"),
                             table.c.mobile_hash.is_not(None).label("had_mobile"),
                             table.c.bsuid_hash.is_not(None).label("had_bsuid"),
                             table.c.parent_bsuid_hash.is_not(None).label("had_parent_bsuid"),
                             table.c.username_enc.is_not(None).label("had_username"))
                  .cte("gone"))
        changes = _deleted_snapshot_sql(source)
        audit_action = AuditAction.DELETE
    else:
        current = type_coerce(table.c.labels, JSONB)
        wanted = literal(labels, JSONB)
        if action == "label":
            needs_change = ~current.contains(wanted)
            added = func.jsonb_array_elements(wanted).table_valued("value", with_ordinality="ordinality")
            missing = (select(func.coalesce(func.jsonb_agg(aggregate_order_by(added.c.value, added.c.ordinality)),
                                            literal([], JSONB)))
                       .where(~current.contains(func.jsonb_build_array(added.c.value)))
                       .scalar_subquery())
            after = current.concat(missing)
        else:
            text_labels = cast(literal(labels, ARRAY(Text)), ARRAY(Text))
            needs_change = current.has_any(text_labels)
            after = current.op("-", return_type=JSONB)(text_labels)
        old = (select(table.c.id, table.c.labels.label("before"))
               .where(table.c.vendor_id == vendor_id, needs_change, *where)
               .with_for_update().subquery("old"))
        source = (update(table).where(table.c.id == old.c.id).values(labels=after, updated_at=func.clock_timestamp())
                  .returning(table.c.id, old.c.before, table.c.labels.label("after"))
                  .cte("changed"))
        changes = func.jsonb_build_object("labels", func.jsonb_build_array(source.c.before, source.c.after))
        audit_action = AuditAction.UPDATE
    rows = select(func.gen_random_uuid(), literal(vendor_id, Uuid), source.c.id, literal(audit_action.value),
                  literal(actor.source.value), literal(actor.user_id, Uuid), literal(actor.import_job_id, Uuid),
                  changes, func.clock_timestamp())
    statement = insert(ContactAuditLog.__table__).from_select(_AUDIT_COLUMNS, rows)
    # The core's scoping does not reach into INSERT … SELECT: every statement above names
    # ``vendor_id`` itself, and apply() checked the session's scope.
    return db.execute(tenancy.caller_scoped(statement)).rowcount


def _deleted_snapshot_sql(gone):
    """SQL twin of ``{field: [value, None] for contact_snapshot(contact)}`` for the rows a DELETE returned."""
    def pair(value):
        return func.jsonb_build_array(value, null())

    base = func.jsonb_build_object("labels", pair(gone.c.labels), "attributes", pair(gone.c.attributes),
                                   "opted_out", pair(gone.c.opted_out))
    empty = literal({}, JSONB)
    secrets = [case((getattr(gone.c, f"had_{field}"), func.jsonb_build_object(field, pair(SECRET_MARK))),
                    else_=empty) for field in ("mobile", "name", "bsuid", "parent_bsuid", "username")]
    country = case((gone.c.country.is_not(None), func.jsonb_build_object("country", pair(gone.c.country))),
                   else_=empty)
    result = type_coerce(base, JSONB)
    for secret in secrets:
        result = result.concat(secret)
    return result.concat(country)


def _portable(db, action, labels, where, actor) -> int:
    changed = 0
    last_id = None
    while True:
        query = select(Contact).where(*where).order_by(Contact.id).limit(SQLITE_BATCH)
        if last_id is not None:
            query = query.where(Contact.id > last_id)
        batch = list(db.scalars(query))
        if not batch:
            return changed
        last_id = batch[-1].id
        for contact in batch:
            if action == "delete":
                changes = {key: [value, None] for key, value in contact_snapshot(contact).items()}
                db.delete(contact)
                audit_action = AuditAction.DELETE
            else:
                after = new_labels(contact.labels or [], action, labels)
                if after == (contact.labels or []):
                    continue
                changes = {"labels": [list(contact.labels or []), after]}
                contact.labels = after
                audit_action = AuditAction.UPDATE
            db.add(ContactAuditLog(vendor_id=contact.vendor_id, contact_id=contact.id, action=audit_action.value,
                                   source=actor.source.value, actor_user_id=actor.user_id,
                                   import_job_id=actor.import_job_id, changes=changes))
            changed += 1
        db.flush()
        # Later batches start after last_id: rows already seen are not read again.
        for contact in batch:
            if contact in db:
                db.expunge(contact)

