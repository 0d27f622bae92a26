"""What the platform admins' outbox routes answer: the backlog, the queue's depth, dead events, requeues."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field

from kloyst.http.validation import Answer


class VendorBacklogOut(Answer):
    vendor_id: uuid.UUID | None = Field(description="Null for the platform's own events.")
    pending: int
    in_flight: int = Field(description="Leased by a relay: being published, in the queue, or being handled.")
    dead: int
    oldest_pending_age_seconds: float | None


class BacklogTotals(Answer):
    pending: int
    in_flight: int
    dead: int


class Backlog(Answer):
    """Undelivered events per vendor, biggest backlog first."""

    vendors: list[VendorBacklogOut]
    totals: BacklogTotals
    oldest_pending_age_seconds: float | None = Field(description="Of the oldest pending event of any vendor.")


class QueueDepth(Answer):
    backend: str = Field(description="`sqlite` (the embedded default) or `redis`.")
    depth: int = Field(description="Tasks waiting in the queue.")


class DeadEventOut(Answer):
    id: int
    vendor_id: uuid.UUID | None
    topic: str
    task: str | None = Field(description="The task, for a task event.")
    failures: int
    attempts: int
    last_error: str | None
    created_at: dt.datetime


class DeadEventPage(Answer):
    """Dead events, newest first (keyset on the event id)."""

    items: list[DeadEventOut]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class Requeued(Answer):
    requeued: int = Field(description="How many dead events went back to pending.")
