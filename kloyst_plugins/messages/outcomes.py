"""What a Meta answer does to a message: SENT, retried with backoff, failed into the dead letters, or counted twice.

The sender's writer thread hands batches of outcomes to :meth:`OutcomeWriter.write`, which
applies them in one transaction: one ``UPDATE … FROM unnest(…)`` for every SENT message of the
batch, a statement per failure (rare). Meta's code decides (:mod:`kloyst.meta.errors`):
transient → QUEUED again after exponential backoff with jitter, until ``max_retries``;
rate limited → QUEUED again after the code's delay, no retry counted, and 130429 slows the
number; permanent or auth → FAILED with a ``dead_letter`` row at once. Priced messages (a
campaign's) that end SENT or FAILED are reported to ``kloyst_messages_settled`` in the same
transaction (:mod:`.settlement`), so their money moves exactly when their state does.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import random
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kloyst.api import ErrorKind, MetaError, metrics as kmetrics
from kloyst_plugins.messages import settlement, statuses
from kloyst_plugins.messages import statements as sql

if TYPE_CHECKING:
    from kloyst_plugins.messages.sender import Number

log = logging.getLogger(__name__)


@dataclass
class Job:
    id: uuid.UUID
    vendor_id: uuid.UUID
    number: Number
    attempt: int
    content_enc: bytes
    maybe_sent_before: bool


@dataclass
class Outcome:
    job: Job
    at: dt.datetime
    wamid: str | None = None
    error: MetaError | None = None
    refused: str | None = None  # refused before calling Meta (opted out, unreadable content)


def backoff_seconds(retry: int, base: float, cap: float) -> float:
    """Exponential with jitter: uniform in [d/2, d], d = min(cap, base · 2^(retry-1))."""
    ceiling = min(cap, base * (2 ** max(0, retry - 1)))
    return ceiling / 2 + random.random() * ceiling / 2


class OutcomeWriter:
    def __init__(self, engine, settings, governor, numbers: dict, stats: dict, plugin_manager,
                 metrics: kmetrics.Metrics | None = None) -> None:
        self.engine = engine
        self.plugin_manager = plugin_manager
        self.postgres = engine.dialect.name == "postgresql"
        self.settings = settings
        self.governor = governor
        self.numbers = numbers  # the sender's, to apply a slowed pace at once
        self.stats = stats
        self.metrics = metrics or kmetrics.of({})
        # (vendor id, status) → messages this batch moved there; counted once its transaction commits, with the
        # wamids it adopted and the second sends it found.
        self._reached: collections.Counter = collections.Counter()
        self._adopted = self._duplicates = 0

    def write(self, batch: list[Outcome]) -> None:
        """Apply a batch of outcomes in one transaction."""
        sent = [o for o in batch if o.wamid]
        others = [o for o in batch if not o.wamid]
        slowed: set[uuid.UUID] = set()
        settled: list[settlement.SettledMessage] = []
        self._reached = collections.Counter()
        self._adopted = self._duplicates = 0
        with self.engine.begin() as conn:
            if sent:
                self._record_sent(conn, sent, settled)
            for outcome in others:
                self._record_failure(conn, outcome, slowed, settled)
            settlement.report(self.plugin_manager, conn, settled)
        self.metrics.messages_reached(self._reached, kmetrics.SENDER)
        self.metrics.wamids_adopted(kmetrics.SENDER, self._adopted)
        self.metrics.duplicate_sends(kmetrics.SENDER, self._duplicates)
        for number_id in slowed:
            pace = self.governor.slow_down(str(number_id))
            number = self.numbers.get(number_id)
            if number is not None:
                number.rate = max(1.0, number.tier * pace.factor)
            log.warning("130429 on phone number %s: pace now %.0f%% of its tier (ceiling %.0f%%)", number_id,
                        pace.factor * 100, pace.ceiling * 100)

    def _record_sent(self, conn, sent: list[Outcome], settled: list) -> None:
        if self.postgres:
            rows = conn.execute(sql.SENT_PG, {
                "ids": [str(o.job.id) for o in sent], "wamids": [o.wamid for o in sent],
                "attempts": [o.job.attempt for o in sent], "at": [o.at.isoformat() for o in sent]}).all()
        else:
            rows = []
            for o in sent:
                rows.extend(conn.execute(sql.SENT_SQLITE, {"id": o.job.id, "wamid": o.wamid, "attempt": o.job.attempt,
                                                        "at": o.at}).all())
        updated = {as_uuid(r[0]) for r in rows}
        settled.extend(settlement.settled_from_rows(rows, settlement.SENT))
        self.stats["sent"] += len(updated)
        for outcome in sent:
            if outcome.job.id in updated:
                self._reached[(outcome.job.vendor_id, "sent")] += 1
            else:
                self._record_late_answer(conn, outcome, settled)

    def _record_late_answer(self, conn, outcome: Outcome, settled: list) -> None:
        """Meta accepted a call whose message moved on meanwhile (its owner was taken for dead, or a status webhook
        adopted a wamid): if the message carries none yet, this answer is its send (adopted: it is not sent
        again); if it carries another, this one is a second send, counted."""
        job = outcome.job
        row = conn.execute(sql.MESSAGE_WAMID, {"id": job.id}).first()
        if row is None or row[0] == outcome.wamid:
            return
        if row[0] is None:
            adopted = statuses.adopt(conn, job.vendor_id, job.id, outcome.wamid, outcome.at)
            if adopted:
                settled.extend(settlement.settled_from_rows(adopted, settlement.SENT))
                self._reached[(job.vendor_id, "sent")] += 1
                self._adopted += 1
            else:
                log.warning("message %s ended %s, but Meta accepted a call of it (wamid %s)", job.id, row[1],
                            outcome.wamid)
            return
        if statuses.count_duplicate(conn, job.vendor_id, job.id, outcome.wamid, "sender"):
            self.stats["duplicates"] += 1
            self._duplicates += 1

    def _record_failure(self, conn, outcome: Outcome, slowed: set[uuid.UUID], settled: list) -> None:
        job, error = outcome.job, outcome.error
        if outcome.refused is not None:
            self._fail(conn, outcome, None, None, "refused", outcome.refused, settled)
            return
        assert error is not None
        kind = error.kind
        if error.code == 130429:
            slowed.add(job.number.id)
            self.stats["throttled"] += 1
        if job.attempt >= self.settings.max_attempts:
            self._fail(conn, outcome, error.code, error.subcode, kind.value,
                       f"gave up after {job.attempt} calls: {error.reason}", settled)
            return
        if kind is ErrorKind.RATE_LIMITED:
            delay = max(error.classification.min_delay_seconds, 1.0) * (0.75 + random.random() / 2)
            self._requeue(conn, outcome, delay, count_retry=False)
        elif kind is ErrorKind.TRANSIENT:
            retry = self._retries_so_far(conn, job) + 1
            if retry > self.settings.max_retries:
                self._fail(conn, outcome, error.code, error.subcode, kind.value,
                           f"still failing after {retry - 1} retries: {error.reason}", settled)
                return
            delay = max(error.classification.min_delay_seconds,
                        backoff_seconds(retry, self.settings.retry_base_seconds, self.settings.retry_cap_seconds))
            self._requeue(conn, outcome, delay, count_retry=True)
        else:  # permanent or auth: resending the same request cannot succeed
            self._fail(conn, outcome, error.code, error.subcode, kind.value, error.reason, settled)

    def _retries_so_far(self, conn, job: Job) -> int:
        row = conn.execute(sql.RETRY_COUNT, {"id": job.id}).first()
        return int(row[0]) if row else 0

    def _requeue(self, conn, outcome: Outcome, delay: float, *, count_retry: bool) -> None:
        error = outcome.error
        conn.execute(sql.REQUEUE, {
            "id": outcome.job.id, "attempt": outcome.job.attempt, "retry": 1 if count_retry else 0,
            "next": outcome.at + dt.timedelta(seconds=delay), "code": error.code, "subcode": error.subcode,
            "message": _clip(str(error)), "maybe": bool(error.maybe_accepted), "now": outcome.at})
        self.stats["retried"] += 1
        self._reached[(outcome.job.vendor_id, "retry")] += 1

    def _fail(self, conn, outcome: Outcome, code, subcode, kind: str, reason: str, settled: list) -> None:
        job, error = outcome.job, outcome.error
        failed = conn.execute(sql.FAIL, {"id": job.id, "attempt": job.attempt, "code": code, "subcode": subcode,
                                      "message": _clip(str(error) if error else reason), "now": outcome.at}).all()
        if not failed:
            return
        settled.extend(settlement.settled_from_rows(failed, settlement.FAILED))
        details = {"attempts": job.attempt}
        if error is not None:
            details.update(http_status=error.http_status, type=error.type, details=error.details,
                           fbtrace_id=error.fbtrace_id, message=error.message)
        conn.execute(sql.DEAD_LETTER, {"id": uuid.uuid4(), "vendor": job.vendor_id, "message": job.id, "code": code,
                                    "subcode": subcode, "kind": kind, "reason": _clip(reason),
                                    "details": json.dumps({k: v for k, v in details.items() if v is not None}),
                                    "now": outcome.at})
        self.stats["failed"] += 1
        self._reached[(job.vendor_id, "failed")] += 1


def as_uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _clip(value: str, size: int = 500) -> str:
    return value if len(value) <= size else value[: size - 1] + "…"
