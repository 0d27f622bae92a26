"""The sender: claims due messages, paces each number, calls Meta with ~hundreds in flight, records outcomes.

Concurrency model (issue 5, item 7). Meta answers in 100+ ms, so 1,000 messages/s on one
number needs ~100 requests in flight, and Kloyst's CPU per message must stay small on two
cores. One sender per worker process runs three kinds of threads:

* **one dispatcher** — per number with due messages, takes tokens from the number's shared
  bucket (:mod:`.governor`), claims that many rows in one statement (``FOR UPDATE SKIP
  LOCKED``: QUEUED → SENDING with a lease, ``attempts + 1``) and hands them to the callers. It
  never waits on Meta and never sleeps holding work: no token, no claim.
* **N callers** (``messages.sender_concurrency``, default 256) — blocking urllib3 calls through
  one pooled keep-alive client (:mod:`kloyst.meta.client`: ~¼ of ``requests``' CPU per call).
  Threads, not asyncio or greenlets: the work between calls is a few microseconds of Python,
  the wait is the network (the GIL is released), and a blocked thread costs memory, not CPU.
  In flight = rate × latency: 256 threads carry 2,560/s at 100 ms.
* **one writer** — applies outcomes in batches: one ``UPDATE … FROM unnest(…)`` for up to
  1,000 SENT messages, so the database sees a few statements per second per number instead
  of one transaction per message.

Guarantees. A message is claimed by one sender at a time, in the name of its process
(``claimed_by``, :mod:`kloyst.heartbeat`); an outcome is applied only if the row is still the
attempt that was sent (``status = 'SENDING' AND attempts = n``). Transient errors go back to
QUEUED with exponential backoff and jitter (``retry_count``, ``next_attempt_at``) until
``messages.max_retries``, then FAILED; rate-limit answers (130429, 131056, …) go back without
counting a retry and, for 130429, slow the number down; permanent and auth errors fail at once
with a ``dead_letter`` row. The message id travels in ``biz_opaque_callback_data``, so a status
webhook that arrives before the answer is recorded makes the message adopt its wamid rather
than be sent again. A worker killed mid-send leaves SENDING rows that the other senders take
back within seconds of its last heartbeat (:mod:`.recovery`): adopted if Meta already reported
them, else queued again marked ``maybe_sent_before``. Sending such a message again is the only
way a message goes twice (a call whose answer and status both never reached Kloyst), and the
second wamid is counted (``duplicate_send``) when the first call's status comes in. A process
stopped with SIGTERM gives back what it claimed but did not call, finishes the calls in hand
and records their answers: it leaves nothing to take back.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field


from kloyst.api import (
    Heartbeat,
    HeartbeatSettings,
    MetaClient,
    MetaError,
    metrics as kmetrics,
    session_scope,
    utcnow,
    write_in_batches,
    write_until_done,
)
from kloyst_plugins.messages import dispatch, recovery, statuses
from kloyst_plugins.messages import statements as sql
from kloyst_plugins.messages.content import open_content_json
from kloyst_plugins.messages.governor import make_governor
from kloyst_plugins.messages.outcomes import Job, Outcome, OutcomeWriter, as_uuid

log = logging.getLogger(__name__)

WRITE_BATCH = 1000
PREFETCH_SECONDS = 0.2  # how much of a number's pace one claim fetches
OPTED_OUT = "contact opted out"
# Numbers Kloyst must not send from: gone from Meta, or taken back from the vendor (shared WABA).
UNUSABLE_STATUSES = frozenset({"DELETED", "UNASSIGNED", "BANNED"})


@dataclass(frozen=True)
class SenderSettings:
    concurrency: int = 256
    lease_seconds: float = 60.0
    max_retries: int = 8
    max_attempts: int = 50  # every call made, rate-limited ones included: a hard stop
    retry_base_seconds: float = 2.0
    retry_cap_seconds: float = 600.0
    poll_seconds: float = 0.5  # idle poll when no doorbell rings
    safety: float = 0.96  # starting pace as a share of each number's tier
    recovery_seconds: float = 2.0  # how often messages of dead senders are looked for
    link_statuses_seconds: float = 30.0  # how often statuses kept without a message are matched again

    @classmethod
    def from_settings(cls, settings) -> SenderSettings:
        return cls(concurrency=settings["messages.sender_concurrency"],
                   lease_seconds=settings["messages.lease_seconds"],
                   max_retries=settings["messages.max_retries"],
                   retry_base_seconds=settings["messages.retry_base_seconds"],
                   safety=settings["messages.rate_safety"])


@dataclass
class Number:
    """What the sender keeps about one phone number between polls."""

    id: uuid.UUID
    vendor_id: uuid.UUID
    meta_id: str
    tier: int
    token: str
    loaded_at: float
    rate: float = 0.0
    pace_read_at: float = 0.0
    due: int = 0  # due messages seen at the last poll (an estimate)
    refusal: str | None = None  # why this number cannot send now: its messages fail instead of waiting forever
    buffer: collections.deque = field(default_factory=collections.deque)  # claimed, waiting for tokens


class Sender:
    def __init__(self, registry, settings: SenderSettings | None = None, *, meta: MetaClient | None = None,
                 doorbell: dispatch.Doorbell = dispatch.DOORBELL, heartbeat: Heartbeat | None = None) -> None:
        self.registry = registry
        self.settings = settings or SenderSettings.from_settings(registry.settings)
        # Claims name this process; without a heartbeat (a test's sender) they fall back to the lease alone.
        self.heartbeat = heartbeat
        self.heartbeat_settings = heartbeat.settings if heartbeat else HeartbeatSettings.from_settings(
            registry.settings)
        self.engine = registry["kloyst.engine"]
        self.postgres = self.engine.dialect.name == "postgresql"
        self.cipher = registry["kloyst.cipher"]
        self.governor = make_governor(registry["kloyst.redis"], self.settings.safety)
        # One keep-alive connection per caller thread, so the pool never blocks a caller.
        self.meta = meta or MetaClient(registry.settings["kloyst.meta.graph_url"],
                                       registry.settings["kloyst.meta.graph_version"],
                                       timeout=float(registry.settings["kloyst.meta.timeout_seconds"]),
                                       max_connections=self.settings.concurrency)
        self.doorbell = doorbell
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.outcomes: queue.SimpleQueue = queue.SimpleQueue()
        self.numbers: dict[uuid.UUID, Number] = {}
        self.stopping = threading.Event()
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._writer_done = threading.Event()
        self._next_recovery = self._next_link = 0.0
        self.stats = {"sent": 0, "retried": 0, "failed": 0, "throttled": 0, "duplicates": 0, "reclaimed": 0,
                      "adopted": 0}
        self.writer = OutcomeWriter(self.engine, self.settings, self.governor, self.numbers, self.stats,
                                    registry["kloyst.plugin_manager"], kmetrics.of(registry))

    # ---- life cycle -------------------------------------------------------------------------------------

    def start(self) -> Sender:
        self._threads = [threading.Thread(target=self._call_loop, name=f"sender-call-{i}", daemon=True)
                         for i in range(self.settings.concurrency)]
        self._threads.append(threading.Thread(target=self._dispatch_loop, name="sender-dispatch", daemon=True))
        self._writer = threading.Thread(target=self._write_loop, name="sender-write", daemon=True)
        for thread in [*self._threads, self._writer]:
            thread.start()
        log.info("sender started: %d callers", self.settings.concurrency)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, finish the calls in hand, write their outcomes, give back what was not sent."""
        self.stopping.set()
        self.doorbell.ring()
        for _ in range(self.settings.concurrency):
            self.jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self._release_buffers()
        except Exception:  # the leases return them anyway, marked maybe-sent
            log.exception("sender could not release its unsent claims")
        self.outcomes.put(None)
        self._writer.join(max(0.0, deadline - time.monotonic()))
        self.meta.close()

    def is_alive(self) -> bool:
        """Every thread still runs (the metrics listener's /healthz asks): a dead dispatcher sends nothing."""
        return not self.stopping.is_set() and all(thread.is_alive() for thread in [*self._threads, self._writer])

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # ---- dispatch ---------------------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        next_poll = 0.0
        while not self.stopping.is_set():
            try:
                now = time.monotonic()
                # The next time is set first: a failing pass (logged below) must not hold back the sending.
                if now >= self._next_recovery:
                    self._next_recovery = now + self.settings.recovery_seconds
                    if self._recover():  # before polling: what came back is claimed in this very round
                        next_poll = 0.0
                if now >= next_poll:
                    self._poll_due_numbers()
                    next_poll = now + 0.25
                if now >= self._next_link:
                    self._next_link = now + self.settings.link_statuses_seconds
                    self._link_statuses()
                dispatched, next_token = self._dispatch_round()
            except Exception:
                log.exception("sender dispatch failed; retrying")
                self.stopping.wait(1.0)
                continue
            if next_token is not None:
                # Come back when the next token is due (tokens accrue continuously; the bucket is small, so
                # staying away longer would waste them), but no sooner than 1 ms and no later than 10 ms.
                time.sleep(min(0.01, max(0.001, next_token)) if not dispatched else min(0.005, max(0.001, next_token)))
            elif self.doorbell.wait(self.settings.poll_seconds):
                next_poll = 0.0

    def _dispatch_round(self) -> tuple[int, float | None]:
        """Send what each number's bucket allows; return how many went and when to come back (None: idle).

        Claims are prefetched (``PREFETCH_SECONDS`` of the number's pace per statement) into the number's
        buffer, and tokens release them: one claim per ~200 ms per number instead of one per tick.
        """
        dispatched, next_token = 0, None
        for number in list(self.numbers.values()):
            if (not number.due and not number.buffer) or self.stopping.is_set():
                continue
            free = self.settings.concurrency - self._in_flight
            if free <= 0:
                return dispatched, 0.001  # every caller is busy: look again as soon as one returns
            self._refresh_pace(number)
            granted, wait = self.governor.take(str(number.id), number.rate,
                                               min(free, len(number.buffer) + number.due, WRITE_BATCH))
            next_token = wait if next_token is None else min(next_token, wait)
            if not granted:
                continue
            if len(number.buffer) < granted and number.due and self._may_claim():
                want = min(WRITE_BATCH, max(granted - len(number.buffer), int(number.rate * PREFETCH_SECONDS)))
                claimed = self._claim(number, want)
                number.buffer.extend(claimed)
                number.due = 0 if len(claimed) < want else max(1, number.due - len(claimed))
            jobs = [number.buffer.popleft() for _ in range(min(granted, len(number.buffer)))]
            if len(jobs) < granted:
                self.governor.give_back(str(number.id), granted - len(jobs))
            with self._in_flight_lock:
                self._in_flight += len(jobs)
            for job in jobs:
                self.jobs.put(job)
            dispatched += len(jobs)
        return dispatched, next_token

    def _release_buffers(self) -> None:
        """On stop: claimed but never called messages go back to QUEUED as if never claimed."""
        jobs = [job for number in self.numbers.values() for job in number.buffer]
        for number in self.numbers.values():
            number.buffer.clear()
        if not jobs:
            return
        with self.engine.begin() as conn:
            for job in jobs:
                conn.execute(sql.RELEASE, {"id": job.id, "attempt": job.attempt, "now": utcnow()})
        log.info("sender: %d claimed messages released unsent", len(jobs))

    def _refresh_pace(self, number: Number) -> None:
        now = time.monotonic()
        if now - number.pace_read_at >= 1.0 or not number.rate:
            pace = self.governor.pace(str(number.id))
            number.rate = max(1.0, number.tier * pace.factor)
            number.pace_read_at = now

    def _poll_due_numbers(self) -> None:
        """Which numbers have due messages.

        On PostgreSQL a loose index scan (one probe of the QUEUED partial index per number, however
        many messages wait), so polling stays cheap with a million queued; how many are due is then
        learnt from the claims themselves. SQLite (one process, small queues) counts.
        """
        with self.engine.connect() as conn:
            if self.postgres:
                rows = [(pn, vendor, WRITE_BATCH) for pn, vendor in conn.execute(sql.DUE_NUMBERS_PG, {"now": utcnow()})]
            else:
                rows = conn.execute(sql.DUE_COUNTS_SQLITE, {"now": utcnow()}).all()
        due = {as_uuid(pn): (as_uuid(vendor), count) for pn, vendor, count in rows}
        for number_id, number in self.numbers.items():
            if number_id not in due:
                number.due = 0
        for number_id, (vendor_id, count) in due.items():
            number = self.numbers.get(number_id)
            if number is None or time.monotonic() - number.loaded_at > 300:
                number = self._load_number(number_id, vendor_id)
                if number is None:
                    continue
            number.due = count

    def _load_number(self, number_id: uuid.UUID, vendor_id: uuid.UUID) -> Number | None:
        from kloyst_plugins.waba.api import phone_number_access
        from kloyst_plugins.waba.api import PhoneNumber

        try:
            with session_scope(self.registry["kloyst.session_factory"], vendor_id=vendor_id) as db:
                row = db.get(PhoneNumber, number_id)
                if row.status in UNUSABLE_STATUSES:
                    number = Number(row.id, vendor_id, row.meta_phone_number_id, row.throughput_mps, "",
                                    time.monotonic(), refusal=f"phone number is {row.status}")
                else:
                    access = phone_number_access(db, self.cipher, row)
                    number = Number(row.id, vendor_id, row.meta_phone_number_id, row.throughput_mps, access.token,
                                    time.monotonic())
        except Exception:
            log.exception("sender cannot load phone number %s; its messages wait", number_id)
            return None
        previous = self.numbers.get(number_id)
        if previous is not None:
            number.rate, number.pace_read_at, number.buffer = previous.rate, previous.pace_read_at, previous.buffer
        self.numbers[number_id] = number
        return number

    def _may_claim(self) -> bool:
        """False while this process cannot prove it is alive: others may be taking its claims back (fencing)."""
        return self.heartbeat is None or self.heartbeat.healthy

    def _claim(self, number: Number, limit: int) -> list[Job]:
        now = utcnow()
        params = {"pn": number.id, "now": now, "lease": now + dt.timedelta(seconds=self.settings.lease_seconds),
                  "owner": self.heartbeat.id if self.heartbeat else None, "n": limit}
        with self.engine.begin() as conn:
            rows = conn.execute(sql.CLAIM_PG if self.postgres else sql.CLAIM_SQLITE, params).all()
        jobs, refused = [], []
        for message_id, vendor_id, attempts, content_enc, maybe_sent, opted_out in rows:
            job = Job(as_uuid(message_id), as_uuid(vendor_id), number, attempts, bytes(content_enc),
                      bool(maybe_sent))
            if opted_out or number.refusal:
                refused.append((job, OPTED_OUT if opted_out else number.refusal))
            else:
                jobs.append(job)
        if any(job.maybe_sent_before for job in jobs):
            # It may have gone already: a status Meta sent since it was queued again, even one not applied yet,
            # adopts it instead of a second call (recovery.py).
            adopted = recovery.adopt_reported(
                self.engine, self.registry["kloyst.plugin_manager"],
                {job.id: recovery.Candidate(job.vendor_id, number.meta_id) for job in jobs if job.maybe_sent_before},
                kmetrics.of(self.registry))
            self.stats["adopted"] += len(adopted)
            jobs = [job for job in jobs if job.id not in adopted]
        # Never call Meta for these: the contact opted out after queueing, or the number cannot send.
        for job, reason in refused:
            self.outcomes.put(Outcome(job, utcnow(), refused=reason))
            with self._in_flight_lock:
                self._in_flight += 1
        return jobs

    # ---- calling Meta -----------------------------------------------------------------------------------

    def _call_loop(self) -> None:
        # Connect before the first send: a hundred callers connecting during the first second would reach
        # Meta in a bunch, and a bunch is what a per-second throughput limit refuses.
        self.meta.warm_up()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            self.outcomes.put(self._call(job))

    def _call(self, job: Job) -> Outcome:
        try:
            payload = open_content_json(self.cipher, job.vendor_id, job.content_enc)
        except Exception as exc:  # a key removed before rotation, a corrupt row: fail it, keep sending
            return Outcome(job, utcnow(), refused=f"message content cannot be read: {type(exc).__name__}")
        try:
            wamid, _ = self.meta.send_message(job.number.meta_id, payload, token=job.number.token)
        except MetaError as exc:
            return Outcome(job, utcnow(), error=exc)
        return Outcome(job, utcnow(), wamid=wamid)

    # ---- recording outcomes -----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        write_in_batches(self.outcomes, self._write_with_retry, batch_size=WRITE_BATCH)

    def _write_with_retry(self, batch: list[Outcome]) -> None:
        """Record the batch, retrying while the database is away.

        Giving up would be worse than waiting: an answer Meta gave but Kloyst never recorded comes back
        through the lease as a second send. So this keeps trying (backing off to 30 s) until it works;
        only a stopping process gives up after a few tries, and then the leases take over.
        """
        if not write_until_done(self.write, batch, stopping=self.stopping, what="sender"):
            log.error("sender stopping with %d outcomes unrecorded: their leases will return them, and "
                      "any that Meta accepted will be counted as sent twice", len(batch))
        with self._in_flight_lock:
            self._in_flight -= len(batch)

    def write(self, batch: list[Outcome]) -> None:
        """Apply a batch of outcomes in one transaction (see :mod:`.outcomes`)."""
        self.writer.write(batch)

    # ---- messages of senders that stopped ------------------------------------------------------------

    def _recover(self) -> int:
        """Take back the messages of dead (or stuck) senders (:mod:`.recovery`); how many came back."""
        recovered = recovery.take_back_abandoned(self.engine, self.registry["kloyst.plugin_manager"],
                                                 self.heartbeat_settings, kmetrics.of(self.registry))
        self.stats["reclaimed"] += recovered.requeued
        self.stats["adopted"] += recovered.adopted
        return recovered.requeued + recovered.adopted

    def _link_statuses(self) -> None:
        statuses.link_unlinked(self.registry, utcnow() - dt.timedelta(hours=1))
