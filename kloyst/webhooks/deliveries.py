"""``webhook_delivery`` rows: stored once per body, claimed under a lease, finished or retried with backoff.

Plain Core statements on the platform table, the same on PostgreSQL and SQLite (both
support ``ON CONFLICT DO NOTHING`` and ``RETURNING``); only the claim's ``FOR UPDATE SKIP
LOCKED`` is PostgreSQL's, so several drainers never take the same row at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kloyst.db import utcnow
from kloyst.webhooks.models import WebhookDelivery

_TABLE = WebhookDelivery.__table__


@dataclass(frozen=True)
class Delivery:
    id: int
    body: bytes
    received_at: dt.datetime
    attempts: int = 0


def insert_skipping_conflicts(db, table):
    """An ``INSERT`` into ``table`` for ``db``'s dialect that supports ``.on_conflict_do_nothing()``.

    The idempotent write webhook handlers need: a replayed event hits a unique key and is
    skipped, and ``RETURNING`` tells which rows were new.
    """
    dialect = db.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def dedupe_key(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def store(db, items: list[tuple[bytes, dt.datetime]], *, next_attempt_at: dt.datetime) -> list[Delivery]:
    """Insert the bodies not stored before; return the new deliveries, oldest first.

    ``next_attempt_at`` in the future means "claimed by the caller until then" (the drainer
    applies them at once); now means "due" (the embedded default's request, for the drainer).
    """
    rows: dict[bytes, dict] = {}
    for body, received_at in items:
        rows.setdefault(dedupe_key(body), {"dedupe_key": dedupe_key(body), "body": body, "received_at": received_at,
                                           "next_attempt_at": next_attempt_at, "attempts": 0})
    if not rows:
        return []
    statement = (insert_skipping_conflicts(db, _TABLE).on_conflict_do_nothing(index_elements=["dedupe_key"])
                 .returning(_TABLE.c.id, _TABLE.c.dedupe_key))
    # A list of parameters: SQLAlchemy batches it into multi-row INSERTs from one compiled statement.
    new = {key: delivery_id for delivery_id, key in db.execute(statement, list(rows.values()))}
    stored = [Delivery(new[key], row["body"], row["received_at"]) for key, row in rows.items() if key in new]
    return sorted(stored, key=lambda d: d.id)


def claim_due(db, limit: int, lease_seconds: float) -> list[Delivery]:
    """Take up to ``limit`` unprocessed deliveries whose time has come (retries, rows of dead drainers)."""
    now = utcnow()
    due = (select(_TABLE.c.id).where(_TABLE.c.processed_at.is_(None), _TABLE.c.next_attempt_at <= now)
           .order_by(_TABLE.c.next_attempt_at).limit(limit).with_for_update(skip_locked=True))
    statement = (update(_TABLE).where(_TABLE.c.id.in_(due.scalar_subquery()))
                 .values(next_attempt_at=now + dt.timedelta(seconds=lease_seconds))
                 .returning(_TABLE.c.id, _TABLE.c.body, _TABLE.c.received_at, _TABLE.c.attempts))
    return sorted((Delivery(*row) for row in db.execute(statement)), key=lambda d: d.id)


def mark_processed(db, ids: list[int]) -> None:
    if ids:
        db.execute(update(_TABLE).where(_TABLE.c.id.in_(ids)).values(processed_at=utcnow(), error=None))


def mark_failed(db, delivery: Delivery, error: str, *, retry_in: float | None) -> None:
    """Record a failed application: due again in ``retry_in`` seconds, or finished with its error when None."""
    now = utcnow()
    values: dict = {"attempts": delivery.attempts + 1, "error": error[:4000]}
    if retry_in is None:
        values["processed_at"] = now
    else:
        values["next_attempt_at"] = now + dt.timedelta(seconds=retry_in)
    db.execute(update(_TABLE).where(_TABLE.c.id == delivery.id).values(**values))


def purge_processed(db, older_than: dt.datetime, chunk: int = 10_000) -> int:
    """Delete up to ``chunk`` deliveries processed before ``older_than``; how many went."""
    old = select(_TABLE.c.id).where(_TABLE.c.processed_at < older_than).limit(chunk)
    return db.execute(delete(_TABLE).where(_TABLE.c.id.in_(old.scalar_subquery()))).rowcount
